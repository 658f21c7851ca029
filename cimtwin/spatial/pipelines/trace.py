"""Network traces: what is reached from a pipe or point, up or down the flow (gravity
networks) or by connectivity (pressure networks), within a distance, stopping at valves
or chosen node types.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from cimtwin.errors import InputError, NotFoundError
from cimtwin.spatial.pipelines.graph import NetworkGraph, network_graph
from cimtwin.spatial.pipelines.lookup import (
    node_features,
    node_info,
    resolve_segment,
    segment_features,
)
from cimtwin.spatial.pipelines.shared import (
    MAX_IDS,
)

# --- traces ----------------------------------------------------------------------------------


@dataclass
class Trace:
    segments: dict[int, float]  # segment index -> network distance where it is entered (m)
    nodes: dict[int, float]
    partial: set[int]  # segments cut by the distance limit
    stops: list[dict[str, Any]]  # where the trace stopped: valves and stop-type nodes
    direction: str  # the direction applied (pressure networks: connected)


def trace(
    g: NetworkGraph,
    *,
    start_segment: int | None = None,
    start_node: int | None = None,
    direction: str = "downstream",
    max_distance: float | None = None,
    stop_at_valves: bool = False,
    stop_node_types: Sequence[str] = (),
) -> Trace:
    """Shortest network distance from the start to every reachable segment and node.

    Gravity networks follow ``flow_direction`` (downstream: from the upstream to the
    downstream end of each pipe; upstream: against it); pressure networks have no direction
    and are traced as ``connected``. Distances count a start pipe in full: the nodes the trace
    leaves it by are at its length. A valve stops the trace when ``stop_at_valves``: the pipe
    it sits on is reached, the node beyond it is not (a survey valve point is reached, not
    passed). Nodes whose feature or appurtenance contains one of ``stop_node_types`` are
    reached, not passed.
    """
    if direction not in ("upstream", "downstream", "connected"):
        raise ValueError(f"direction {direction!r}")
    applied = direction if g.directed else "connected"
    seg_dist: dict[int, float] = {}
    node_dist: dict[int, float] = {}
    partial: set[int] = set()
    stops: list[dict[str, Any]] = []
    stopped_nodes: set[int] = set()
    heap: list[tuple[float, int]] = []
    limit = math.inf if max_distance is None else float(max_distance)

    def may_enter(s: int, k: int) -> bool:
        """May the trace go from node k into segment s?"""
        if applied == "connected" or g.seg_flow[s] == 0:
            return True
        if applied == "downstream":
            return g.upstream_node(s) == k
        return g.downstream_node(s) == k

    def valve_between(s: int, k: int) -> list[int]:
        return g.valve_at.get((s, k), []) if stop_at_valves else []

    def arrive(s: int, k: int, dist: float) -> None:
        valves = valve_between(s, k)
        if valves:
            for vi in valves:
                v = g.valves[vi]
                stops.append(
                    {
                        "reason": "valve",
                        "valve": v.ref,
                        "valve_no": v.valve_no,
                        "segment": s,
                        "node": k,
                    }
                )
            if any(g.valves[vi].ref.startswith("node:") for vi in valves) and dist <= limit:
                node_dist[k] = min(node_dist.get(k, math.inf), dist)
            return
        if dist > limit:
            partial.add(s)
            return
        if dist < node_dist.get(k, math.inf):
            node_dist[k] = dist
            heapq.heappush(heap, (dist, k))

    def enter(s: int, k: int, dist: float) -> None:
        if dist >= limit and limit != math.inf:
            return
        if dist >= seg_dist.get(s, math.inf):
            return
        seg_dist[s] = dist
        arrive(s, g.other_end(s, k), dist + float(g.seg_len[s]))

    if start_segment is not None:
        s = start_segment
        seg_dist[s] = 0.0
        if applied == "connected" or g.seg_flow[s] == 0:
            ends = [int(g.seg_from[s]), int(g.seg_to[s])]
        elif applied == "downstream":
            ends = [g.downstream_node(s)]
        else:
            ends = [g.upstream_node(s)]
        for k in ends:
            arrive(s, k, float(g.seg_len[s]))
    elif start_node is not None:
        node_dist[start_node] = 0.0
        heapq.heappush(heap, (0.0, start_node))
    else:
        raise ValueError("a trace needs a start segment or node")

    while heap:
        dist, k = heapq.heappop(heap)
        if dist > node_dist.get(k, math.inf):
            continue
        if stop_node_types and k != start_node:
            kind = g.node_kind(k)
            if any(t in kind for t in stop_node_types):
                if k not in stopped_nodes:
                    stopped_nodes.add(k)
                    stops.append({"reason": "node type", "node": k, "kind": kind})
                continue
        for s in g.incident(k).tolist():
            if not may_enter(s, k):
                continue
            if valve_between(s, k):
                for vi in valve_between(s, k):
                    v = g.valves[vi]
                    stops.append(
                        {
                            "reason": "valve",
                            "valve": v.ref,
                            "valve_no": v.valve_no,
                            "segment": s,
                            "node": k,
                        }
                    )
                continue
            enter(s, k, dist)
    # the same valve may be met from several sides
    seen: set[tuple] = set()
    unique_stops = []
    for st in stops:
        key = tuple(sorted(st.items()))
        if key not in seen:
            seen.add(key)
            unique_stops.append(st)
    return Trace(seg_dist, node_dist, partial, unique_stops, applied)


async def trace_analysis(
    conn: AsyncConnection,
    *,
    network: str,
    segment_id: int | None = None,
    node_id: int | None = None,
    point: tuple[float, float] | None = None,
    tolerance_m: float = 10.0,
    direction: str = "downstream",
    max_distance_m: float | None = None,
    stop_at_valves: bool = False,
    stop_at_node_types: Sequence[str] = (),
    max_features: int = 5000,
) -> dict[str, Any]:
    """Segments and nodes reached from a start, up or down the flow or by connectivity."""
    start: dict[str, Any]
    if node_id is not None:
        info = await node_info(conn, node_id)
        if info is None:
            raise NotFoundError(f"node {node_id} does not exist")
        g = await network_graph(conn, network)
        k = g.node_index(node_id)
        if k is None:
            raise InputError(
                f"node {node_id} is not on network {network} (it is a {info[1]} point)"
            )
        t = trace(
            g,
            start_node=k,
            direction=direction,
            max_distance=max_distance_m,
            stop_at_valves=stop_at_valves,
            stop_node_types=stop_at_node_types,
        )
        start = {"node_id": node_id}
    else:
        seg_id, _, snap = await resolve_segment(
            conn, segment_id=segment_id, point=point, tolerance_m=tolerance_m, network=network
        )
        g = await network_graph(conn, network)
        s = g.seg_index(seg_id)
        if s is None:
            raise NotFoundError(f"segment {seg_id} does not exist")
        t = trace(
            g,
            start_segment=s,
            direction=direction,
            max_distance=max_distance_m,
            stop_at_valves=stop_at_valves,
            stop_node_types=stop_at_node_types,
        )
        start = {"segment_id": seg_id, "snapped": snap}
    limit = math.inf if max_distance_m is None else max_distance_m
    segs = sorted(t.segments.items(), key=lambda kv: (kv[1], kv[0]))
    nodes = sorted(t.nodes.items(), key=lambda kv: (kv[1], kv[0]))
    length = sum(min(float(g.seg_len[s]), max(0.0, limit - d)) for s, d in segs)
    seg_props = {
        int(g.seg_id[s]): {"distance_m": round(d, 3), "partial": s in t.partial}
        for s, d in segs[:max_features]
    }
    node_props = {int(g.node_id[k]): {"distance_m": round(d, 3)} for k, d in nodes[:max_features]}
    features = await segment_features(conn, list(seg_props), seg_props)
    features += await node_features(conn, list(node_props), node_props)
    features.sort(key=lambda f: (f["properties"]["distance_m"], f["id"]))
    stops = []
    for st in t.stops:
        out = dict(st)
        if "segment" in out:
            out["segment_id"] = int(g.seg_id[out.pop("segment")])
        out["node_id"] = int(g.node_id[out.pop("node")])
        stops.append(out)
    notes = []
    if t.direction != direction:
        notes.append(
            f"{network} is a pressure network: it has no flow direction, so the trace "
            "follows connectivity"
        )
    return {
        "type": "FeatureCollection",
        "network": network,
        "start": start,
        "direction": direction,
        "direction_applied": t.direction,
        "notes": notes,
        "totals": {
            "segments": len(segs),
            "nodes": len(nodes),
            "length_m": round(length, 3),
            "partial_segments": len(t.partial & set(t.segments)),
        },
        "segment_ids": [int(g.seg_id[s]) for s, _ in segs][:MAX_IDS],
        "node_ids": [int(g.node_id[k]) for k, _ in nodes][:MAX_IDS],
        "stops": stops,
        "truncated": len(segs) > max_features or len(nodes) > max_features,
        "features": features,
    }

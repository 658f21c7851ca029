"""Topology QA per network: sub-networks, isolated points, dangling ends, and in gravity
networks flow loops and reversed slopes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from psycopg import AsyncConnection

from cimtwin.errors import NotFoundError
from cimtwin.spatial.pipelines.graph import NetworkGraph, connected_components, network_graph
from cimtwin.spatial.pipelines.shared import (
    SEG,
    fetch_all,
    fetch_all_nojit,
    half_h,
    rounded,
)

#: an invert rising less than this in the flow direction is survey noise (the importer's rule)
UPHILL_TOLERANCE_M = 0.005


#: node features / appurtenances that make a dead end legitimate (outfall, reserved stub, riser,
#: hydrant, source, tank ...)
PURPOSEFUL_ENDS = (
    "出水口",
    "排放口",
    "预留口",
    "出地",
    "上杆",
    "消防栓",
    "水源",
    "水池",
    "水塔",
    "进水口",
    "接户",
    "入户",
    "用户",
    "堵头",
    "盲板",
)
#: in gravity networks an upstream end at a chamber (head manhole) is where collection starts
CHAMBER_MARK = "井"


# --- topology QA ---------------------------------------------------------------------------------


def node_components(g: NetworkGraph) -> np.ndarray:
    """Connectivity label of every node (pipes join their end nodes; no valve cuts)."""
    return connected_components(len(g.node_id), g.seg_from, g.seg_to)


def dangling_ends(g: NetworkGraph) -> list[tuple[int, str]]:
    """Degree-1 nodes that are not ends with a purpose: (node index, why it is flagged).

    Purposeful: outfalls, reserved stubs, risers, hydrants, sources and tanks
    (:data:`PURPOSEFUL_ENDS`); in gravity networks also a head chamber (a manhole where all
    pipes flow away: collection starts there).
    """
    indptr, incident = g.incidence
    degree = np.diff(indptr)
    out = []
    for k in np.flatnonzero(degree == 1).tolist():
        kind = g.node_kind(k)
        if any(p in kind for p in PURPOSEFUL_ENDS):
            continue
        s = int(incident[indptr[k]])
        if g.directed and g.seg_flow[s] != 0:
            if g.upstream_node(s) == k:
                if CHAMBER_MARK in kind:
                    continue
                out.append((k, "upstream end without a chamber (head manhole)"))
            else:
                out.append((k, "pipe flows into a dead end (no outfall)"))
            continue
        out.append((k, "dead end"))
    return out


def directed_cycles(g: NetworkGraph) -> list[list[int]]:
    """Strongly connected groups (>1 node) of the flow graph of a gravity network: the nodes
    of each loop in which water would circulate (iterative Tarjan)."""
    n = len(g.node_id)
    succ: list[list[int]] = [[] for _ in range(n)]
    for s in np.flatnonzero(g.seg_flow != 0).tolist():
        succ[g.upstream_node(s)].append(g.downstream_node(s))
    index = [-1] * n
    low = [0] * n
    on_stack = [False] * n
    stack: list[int] = []
    out: list[list[int]] = []
    counter = 0
    for root in range(n):
        if index[root] != -1 or not succ[root]:
            continue
        work = [(root, 0)]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        while work:
            k, i = work[-1]
            if i < len(succ[k]):
                work[-1] = (k, i + 1)
                w = succ[k][i]
                if index[w] == -1:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack[w] = True
                    work.append((w, 0))
                elif on_stack[w]:
                    low[k] = min(low[k], index[w])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[k])
            if low[k] == index[k]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack[w] = False
                    group.append(w)
                    if w == k:
                        break
                if len(group) > 1:
                    out.append(sorted(group))
    return out


# --- reversed slopes ---------------------------------------------------------------------------

REVERSED_SLOPES_SQL = f"""
WITH g AS (
    SELECT s.id, s.from_node_id, s.to_node_id, s.flow_direction, s.length_m,
           s.from_elevation_m - CASE s.depth_ref WHEN 'top' THEN 2 * {half_h("s")}
                WHEN 'centre' THEN {half_h("s")} ELSE 0 END AS inv_from,
           s.to_elevation_m - CASE s.depth_ref WHEN 'top' THEN 2 * {half_h("s")}
                WHEN 'centre' THEN {half_h("s")} ELSE 0 END AS inv_to
    FROM {SEG} s WHERE s.network = %(network)s AND s.flow_direction <> 0
)
SELECT id, CASE WHEN flow_direction > 0 THEN from_node_id ELSE to_node_id END,
       CASE WHEN flow_direction > 0 THEN to_node_id ELSE from_node_id END,
       CASE WHEN flow_direction > 0 THEN inv_from ELSE inv_to END AS up,
       CASE WHEN flow_direction > 0 THEN inv_to ELSE inv_from END AS down, length_m
FROM g
WHERE (CASE WHEN flow_direction > 0 THEN inv_to - inv_from ELSE inv_from - inv_to END)
      > %(tol)s
ORDER BY id
"""


async def reversed_slopes(conn: AsyncConnection, network: str) -> list[dict[str, Any]]:
    """Gravity pipes whose invert rises in the flow direction (beyond survey tolerance)."""
    rows = await fetch_all_nojit(
        conn, REVERSED_SLOPES_SQL, {"network": network, "tol": UPHILL_TOLERANCE_M}
    )
    return [
        {
            "segment_id": r[0],
            "upstream_node_id": r[1],
            "downstream_node_id": r[2],
            "upstream_invert_m": round(r[3], 3),
            "downstream_invert_m": round(r[4], 3),
            "rise_m": round(r[4] - r[3], 3),
            "slope_permille": round(1000 * (r[4] - r[3]) / r[5], 2) if r[5] else None,
        }
        for r in rows
    ]


async def qa_analysis(
    conn: AsyncConnection,
    network: str | None = None,
    max_items: int = 1000,
) -> dict[str, Any]:
    """Topology checks per network: sub-networks, dangling ends, flow loops, reversed slopes."""
    if network:
        nets = [network]
    else:
        nets = [
            r[0]
            for r in await fetch_all(conn, f"SELECT DISTINCT network FROM {SEG} ORDER BY network")
        ]
    reports = []
    for net in nets:
        g = await network_graph(conn, net)
        if len(g.seg_id) == 0 and len(g.node_id) == 0:
            raise NotFoundError(f"network {net} has no pipes or points")
        reports.append(await _qa_network(conn, g, max_items))
    return {"networks": reports}


async def _qa_network(conn: AsyncConnection, g: NetworkGraph, max_items: int) -> dict[str, Any]:
    labels = node_components(g)
    indptr, _ = g.incidence
    degree = np.diff(indptr)
    comp_of_seg = labels[g.seg_from]
    uniq, seg_counts = np.unique(comp_of_seg, return_counts=True)
    lengths = np.bincount(
        np.searchsorted(uniq, comp_of_seg), weights=g.seg_len, minlength=len(uniq)
    )
    node_counts = np.bincount(np.searchsorted(uniq, labels[degree > 0]), minlength=len(uniq))
    order = np.argsort(-seg_counts, kind="stable")
    components = []
    for i in order[:max_items].tolist():
        members = np.flatnonzero(comp_of_seg == uniq[i])
        components.append(
            {
                "segments": int(seg_counts[i]),
                "nodes": int(node_counts[i]),
                "length_m": rounded(lengths[i]),
                "sample_segment_ids": g.seg_id[members[:5]].tolist(),
            }
        )
    dangling = [
        {
            "node_id": int(g.node_id[k]),
            "point_no": g.node_point_no[k],
            "feature": g.node_feature[k] or None,
            "appurtenance": g.node_appurtenance[k] or None,
            "reason": why,
            "segment_id": int(g.seg_id[g.incident(k)[0]]),
        }
        for k, why in dangling_ends(g)
    ]
    out: dict[str, Any] = {
        "network": g.network,
        "gravity": g.directed,
        "segments": len(g.seg_id),
        "subnetworks": {
            "count": len(uniq),
            "sizes": [int(c) for c in seg_counts[order]][:max_items],
            "largest": components,
        },
        "isolated_points": {
            "count": int((degree == 0).sum()),
            "node_ids": g.node_id[degree == 0][:max_items].tolist(),
        },
        "dangling_ends": {
            "count": len(dangling),
            "rule": "degree-1 points that are not "
            f"outfalls or other purposeful ends ({', '.join(PURPOSEFUL_ENDS)}); "
            "in gravity networks a head chamber (all pipes flow away) is "
            "purposeful too",
            "items": dangling[:max_items],
        },
    }
    if g.directed:
        loops = []
        for group in directed_cycles(g):
            in_loop = set(group)
            segs = [
                int(g.seg_id[s])
                for s in np.flatnonzero(g.seg_flow != 0).tolist()
                if g.upstream_node(s) in in_loop and g.downstream_node(s) in in_loop
            ]
            loops.append({"node_ids": g.node_id[group].tolist(), "segment_ids": segs})
        slopes = await reversed_slopes(conn, g.network)
        out["flow_loops"] = {"count": len(loops), "items": loops[:max_items]}
        out["reversed_slopes"] = {
            "count": len(slopes),
            "tolerance_m": UPHILL_TOLERANCE_M,
            "items": slopes[:max_items],
        }
    return out

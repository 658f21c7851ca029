"""Analyses on the pipeline network: valve isolation, traces, profiles, topology QA, GB 50289
clearances, excavation checks and cross-sections.

The tables are those of :mod:`cimtwin.spatial.pipeline_network`; their SQL lives here.

Graph model. A network (CJJ 61 major code: JS, PS, RQ ...) is a graph of survey points (nodes)
and pipes (segments); every dataset of that code is in the same graph (datasets share no nodes,
so they never connect). Graph work runs in Python on numpy arrays, built once per network and
kept per process (:func:`network_graph`); one cheap query per request tells whether the tables
changed since (:data:`FINGERPRINT_SQL`).

Valves (isolation). A valve sits on a pipe next to one of its end nodes (WNTR's valve layer: a
(link, node) pair). Closing it cuts the incidence between that pipe and that node. Two sources:

- ``pipeline_valve`` rows (``valve:<id>``), e.g. a WNTR valve layer imported with
  ``cimtwin import valves``;
- survey valve points (``pipeline_node.appurtenance`` containing 阀, ``node:<id>``): one valve
  per (segment, node) incidence, so closing the point cuts every pipe that meets it off it.

The network is then a bipartite graph of nodes and segments with an edge per uncut incidence;
a *valve segment* is a connected component of it, and the valves to close for a burst pipe are
the valves between its component and the rest. A failed valve does not cut: the components on
both of its sides merge, which brings in the next ring of valves. Valves recorded as closed
already cut the network and are listed as such. Same answer as WNTR's
``wntr.metrics.topographic.valve_segments``.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import math
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
from psycopg import AsyncConnection

from cimtwin.reference import read_rows
from cimtwin.spatial.base import SRID
from cimtwin.spatial.building import Building
from cimtwin.spatial.pipeline_network import PipelineNode, PipelineSegment, PipelineValve
from cimtwin.spatial.provenance import ImportBatch


def _table(model) -> str:
    t = model.__table__
    return f'"{t.schema}"."{t.name}"'


SEG = _table(PipelineSegment)
NODE = _table(PipelineNode)
VALVE = _table(PipelineValve)
BUILDINGS = _table(Building)
BATCH = _table(ImportBatch)

#: networks whose pipes carry water by gravity along ``flow_direction`` (the importer's rule)
GRAVITY_NETWORKS = frozenset({"PS"})
#: an invert rising less than this in the flow direction is survey noise (the importer's rule)
UPHILL_TOLERANCE_M = 0.005
VALVE_MARK = "阀"
#: node features / appurtenances that make a dead end legitimate (outfall, reserved stub, riser,
#: hydrant, source, tank ...)
PURPOSEFUL_ENDS = ("出水口", "排放口", "预留口", "出地", "上杆", "消防栓", "水源", "水池",
                   "水塔", "进水口", "接户", "入户", "用户", "堵头", "盲板")
#: in gravity networks an upstream end at a chamber (head manhole) is where collection starts
CHAMBER_MARK = "井"
#: a pressure-network profile goes straight through a junction only within this deflection
STRAIGHT_MAX_DEG = 45.0

#: customers: a building is served by the nearest service pipe of the network within this
#: distance of its footprint (m)
SERVICE_RADIUS_M = 100.0
#: subtypes that carry no service connections (raw water, transmission mains)
NON_SERVICE_SUBTYPES = ("JY", "SS")

GRAPH_MAX_AGE_S = 900.0
MAX_CACHED_GRAPHS = 16


# --- the graph ----------------------------------------------------------------------------------


def connected_components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Component label (the smallest vertex index in it) of each of ``n`` vertices, for the
    undirected edges ``u[i]``-``v[i]``: parallel hooking of roots plus pointer jumping."""
    parent = np.arange(n, dtype=np.int64)
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    while len(u):
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not differ.any():
            break
        u, v, pu, pv = u[differ], v[differ], pu[differ], pv[differ]
        # each root hooks under the smallest root it shares an edge with: indices only fall,
        # so no cycle can form
        np.minimum.at(parent, np.maximum(pu, pv), np.minimum(pu, pv))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent


@dataclass
class Valve:
    """One valve incidence: closing it separates ``seg`` from ``node`` (indices)."""

    seg: int
    node: int
    ref: str  # valve:<pipeline_valve.id> or node:<pipeline_node.id>
    valve_no: str
    state: str


@dataclass(eq=False)
class NetworkGraph:
    """Nodes and segments of one network as index arrays (ids sorted ascending)."""

    network: str
    seg_id: np.ndarray
    seg_from: np.ndarray  # node index
    seg_to: np.ndarray
    seg_len: np.ndarray
    seg_flow: np.ndarray  # 1 from->to, -1 to->from, 0 undirected
    seg_size: np.ndarray  # mm, 0 when unknown
    node_id: np.ndarray
    node_xy: np.ndarray  # (n, 2) storage CRS
    node_feature: list[str]
    node_appurtenance: list[str]
    node_point_no: list[str]
    valves: list[Valve]
    built_at: float = field(default_factory=time.monotonic)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_rows(
        cls, network: str, segments: Sequence[tuple], nodes: Sequence[tuple],
        layer_valves: Sequence[tuple] = (),
    ) -> NetworkGraph:
        """``segments``: (id, from_node_id, to_node_id, length_m, flow_direction, size_mm);
        ``nodes``: (id, feature, appurtenance, valve_state, point_no, x, y);
        ``layer_valves``: (pipeline_valve.id, segment_id, node_id, state, valve_no)."""
        seg = sorted(segments, key=lambda r: r[0])
        seg_id = np.fromiter((r[0] for r in seg), dtype=np.int64, count=len(seg))
        ends = np.array([(r[1], r[2]) for r in seg], dtype=np.int64).reshape(-1, 2)
        node_rows = {r[0]: r for r in nodes}
        node_id = np.unique(np.concatenate([ends.ravel(), np.fromiter(
            node_rows, dtype=np.int64, count=len(node_rows))]))
        n = len(node_id)
        feature = [""] * n
        appurtenance = [""] * n
        state = [""] * n
        point_no = [""] * n
        xy = np.full((n, 2), np.nan)
        for i, nid in enumerate(node_id.tolist()):
            r = node_rows.get(nid)
            if r is not None:
                feature[i], appurtenance[i] = r[1] or "", r[2] or ""
                state[i], point_no[i] = r[3] or "", r[4] or ""
                xy[i] = (r[5] if r[5] is not None else np.nan,
                         r[6] if r[6] is not None else np.nan)
        g = cls(
            network=network, seg_id=seg_id,
            seg_from=np.searchsorted(node_id, ends[:, 0]),
            seg_to=np.searchsorted(node_id, ends[:, 1]),
            seg_len=np.array([float(r[3] or 0.0) for r in seg]),
            seg_flow=np.array([int(r[4] or 0) for r in seg], dtype=np.int8),
            seg_size=np.array([float(r[5] or 0.0) for r in seg]),
            node_id=node_id, node_xy=xy, node_feature=feature,
            node_appurtenance=appurtenance, node_point_no=point_no, valves=[],
        )
        valves: list[Valve] = []
        for vid, sid, nid, vstate, vno in sorted(layer_valves, key=lambda r: r[0]):
            s, k = g.seg_index(sid), g.node_index(nid)
            # a valve whose node is not an end of its pipe cuts nothing (the importer refuses
            # such rows; rows written by hand are skipped)
            if s is None or k is None or k not in (g.seg_from[s], g.seg_to[s]):
                continue
            valves.append(Valve(s, k, f"valve:{vid}", vno or str(vid), vstate or "open"))
        indptr, incident = g.incidence
        for k in range(n):
            if VALVE_MARK in appurtenance[k]:
                for s in incident[indptr[k]:indptr[k + 1]].tolist():
                    valves.append(Valve(s, k, f"node:{int(node_id[k])}", point_no[k],
                                        state[k] or "open"))
        g.valves = valves
        return g

    @property
    def directed(self) -> bool:
        return self.network in GRAVITY_NETWORKS

    def seg_index(self, seg_id: int) -> int | None:
        i = int(np.searchsorted(self.seg_id, seg_id))
        return i if i < len(self.seg_id) and self.seg_id[i] == seg_id else None

    def node_index(self, node_id: int) -> int | None:
        i = int(np.searchsorted(self.node_id, node_id))
        return i if i < len(self.node_id) and self.node_id[i] == node_id else None

    def node_kind(self, k: int) -> str:
        return " ".join(x for x in (self.node_feature[k], self.node_appurtenance[k]) if x)

    @cached_property
    def incidence(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR of node -> incident segment indices."""
        n, m = len(self.node_id), len(self.seg_id)
        nodes = np.concatenate([self.seg_from, self.seg_to])
        segs = np.concatenate([np.arange(m), np.arange(m)])
        order = np.argsort(nodes, kind="stable")
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(nodes, minlength=n), out=indptr[1:])
        return indptr, segs[order]

    def incident(self, k: int) -> np.ndarray:
        indptr, segs = self.incidence
        return segs[indptr[k]:indptr[k + 1]]

    def other_end(self, s: int, k: int) -> int:
        return int(self.seg_to[s]) if self.seg_from[s] == k else int(self.seg_from[s])

    def upstream_node(self, s: int) -> int:
        return int(self.seg_to[s]) if self.seg_flow[s] < 0 else int(self.seg_from[s])

    def downstream_node(self, s: int) -> int:
        return int(self.seg_from[s]) if self.seg_flow[s] < 0 else int(self.seg_to[s])

    @cached_property
    def valve_refs(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, v in enumerate(self.valves):
            out.setdefault(v.ref, []).append(i)
        return out

    @cached_property
    def valve_at(self) -> dict[tuple[int, int], list[int]]:
        out: dict[tuple[int, int], list[int]] = {}
        for i, v in enumerate(self.valves):
            out.setdefault((v.seg, v.node), []).append(i)
        return out

    # -- valve segments ---------------------------------------------------------------------------
    @cached_property
    def valve_segments(self) -> _ValveSegments:
        n, m = len(self.node_id), len(self.seg_id)
        cut_from = np.zeros(m, dtype=bool)
        cut_to = np.zeros(m, dtype=bool)
        for v in self.valves:
            if self.seg_from[v.seg] == v.node:
                cut_from[v.seg] = True
            if self.seg_to[v.seg] == v.node:
                cut_to[v.seg] = True
        seg_vertex = n + np.arange(m)
        u = np.concatenate([seg_vertex[~cut_from], seg_vertex[~cut_to]])
        w = np.concatenate([self.seg_from[~cut_from], self.seg_to[~cut_to]])
        labels = connected_components(n + m, u, w)
        order = np.argsort(labels, kind="stable")
        vs = np.array([n + v.seg for v in self.valves], dtype=np.int64)
        vn = np.array([v.node for v in self.valves], dtype=np.int64)
        touch_label = np.concatenate([labels[vs], labels[vn]]) if len(vs) else np.empty(0, int)
        touch_valve = np.concatenate([np.arange(len(vs)), np.arange(len(vs))])
        t_order = np.argsort(touch_label, kind="stable")
        return _ValveSegments(labels, order, labels[order], touch_label[t_order],
                              touch_valve[t_order], labels[vs] if len(vs) else vs,
                              labels[vn] if len(vn) else vn)

    def segment_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Valve-segment label of every node and of every segment."""
        labels = self.valve_segments.labels
        n = len(self.node_id)
        return labels[:n], labels[n:]


@dataclass
class _ValveSegments:
    labels: np.ndarray  # per vertex: nodes 0..n-1, then segments n..n+m-1
    order: np.ndarray  # vertices sorted by label
    sorted_labels: np.ndarray
    touch_label: np.ndarray  # (label, valve) pairs: valve touches the component, sorted
    touch_valve: np.ndarray
    valve_seg_label: np.ndarray  # label on each valve's pipe side
    valve_node_label: np.ndarray  # label on each valve's node side

    def members(self, label: int) -> np.ndarray:
        lo = np.searchsorted(self.sorted_labels, label, "left")
        hi = np.searchsorted(self.sorted_labels, label, "right")
        return self.order[lo:hi]

    def touching(self, label: int) -> np.ndarray:
        lo = np.searchsorted(self.touch_label, label, "left")
        hi = np.searchsorted(self.touch_label, label, "right")
        return self.touch_valve[lo:hi]


# --- isolation -----------------------------------------------------------------------------------


@dataclass
class ValveToClose:
    ref: str
    valve_no: str
    state: str
    node: int  # node index
    segments: list[int]  # segment indices whose incidence it cuts on the isolation's boundary
    ring: int  # 0: around the burst's valve segment; 1, 2 ...: after failed valves


@dataclass
class Isolation:
    segments: np.ndarray  # segment indices
    nodes: np.ndarray  # node indices
    valves: list[ValveToClose]
    failed_used: list[str]  # failed valves that made the isolation grow
    failed_unused: list[str]  # failed valves not on the isolation's boundary
    rings: int  # how many rings beyond the first were needed


class UnknownValve(LookupError):
    pass


def isolate(g: NetworkGraph, seg: int, failed: Iterable[str] = ()) -> Isolation:
    """The valve segment of segment index ``seg`` and the valves that isolate it, growing past
    every failed valve (refs ``valve:<id>`` / ``node:<id>``) to the next ring."""
    vs = g.valve_segments
    n = len(g.node_id)
    failed_refs = list(dict.fromkeys(failed))
    unknown = [r for r in failed_refs if r not in g.valve_refs]
    if unknown:
        raise UnknownValve(", ".join(unknown))
    failed_idx = {i for r in failed_refs for i in g.valve_refs[r]}
    start = int(vs.labels[n + seg])
    depth = {start: 0}
    queue = deque([start])
    used: set[str] = set()
    while queue:
        label = queue.popleft()
        for vi in vs.touching(label).tolist():
            ref = g.valves[vi].ref
            if vi not in failed_idx or ref in used:
                continue
            # a failed valve opens all its incidences at once (a survey valve point has one
            # per pipe): everything behind it is the next ring
            used.add(ref)
            for vj in g.valve_refs[ref]:
                for other in (int(vs.valve_seg_label[vj]), int(vs.valve_node_label[vj])):
                    if other not in depth:
                        depth[other] = depth[label] + 1
                        queue.append(other)
    members = np.concatenate([vs.members(lab) for lab in depth])
    closing: dict[str, ValveToClose] = {}
    for label, d in depth.items():
        for vi in vs.touching(label).tolist():
            if vi in failed_idx:
                continue
            a = int(vs.valve_seg_label[vi]) in depth
            b = int(vs.valve_node_label[vi]) in depth
            if a == b:
                continue
            v = g.valves[vi]
            entry = closing.get(v.ref)
            if entry is None:
                closing[v.ref] = ValveToClose(v.ref, v.valve_no, v.state, v.node, [v.seg], d)
            elif v.seg not in entry.segments:
                entry.segments.append(v.seg)
                entry.ring = min(entry.ring, d)
    return Isolation(
        segments=np.sort(members[members >= n] - n), nodes=np.sort(members[members < n]),
        valves=sorted(closing.values(), key=lambda c: (c.ring, c.ref)),
        failed_used=[r for r in failed_refs if r in used],
        failed_unused=[r for r in failed_refs if r not in used],
        rings=max(depth.values()))


# --- traces ----------------------------------------------------------------------------------


@dataclass
class Trace:
    segments: dict[int, float]  # segment index -> network distance where it is entered (m)
    nodes: dict[int, float]
    partial: set[int]  # segments cut by the distance limit
    stops: list[dict[str, Any]]  # where the trace stopped: valves and stop-type nodes
    direction: str  # the direction applied (pressure networks: connected)


def trace(
    g: NetworkGraph, *, start_segment: int | None = None, start_node: int | None = None,
    direction: str = "downstream", max_distance: float | None = None,
    stop_at_valves: bool = False, stop_node_types: Sequence[str] = (),
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
                stops.append({"reason": "valve", "valve": v.ref, "valve_no": v.valve_no,
                              "segment": s, "node": k})
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
                    stops.append({"reason": "valve", "valve": v.ref, "valve_no": v.valve_no,
                                  "segment": s, "node": k})
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


# --- profiles ------------------------------------------------------------------------------------


def _deflection_deg(g: NetworkGraph, a: int, b: int, c: int) -> float:
    """Turning angle at node b on the way a -> b -> c (0 = straight on)."""
    d1 = g.node_xy[b] - g.node_xy[a]
    d2 = g.node_xy[c] - g.node_xy[b]
    n1, n2 = float(np.hypot(*d1)), float(np.hypot(*d2))
    if not (n1 > 0 and n2 > 0) or not (math.isfinite(n1) and math.isfinite(n2)):
        return 0.0
    cos = float(np.dot(d1, d2)) / (n1 * n2)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def profile_chain(
    g: NetworkGraph, seg: int, *, reverse: bool = False, max_segments: int = 100,
) -> tuple[list[tuple[int, bool]], str]:
    """The chain of segments of a longitudinal profile starting at ``seg``: (segment index,
    walked from->to) pairs.

    Gravity networks follow the flow (against it with ``reverse``), taking the largest pipe at
    a junction, then the straightest. Pressure networks walk from the start pipe's from-node to
    its to-node (the other way with ``reverse``), through every plain point, and through a
    junction along the straightest pipe when it turns by at most ``STRAIGHT_MAX_DEG``.
    """
    chain: list[tuple[int, bool]] = []
    visited: set[int] = set()
    s = seg
    directed_start = g.directed and g.seg_flow[s] != 0
    forward = (g.seg_flow[s] > 0) != reverse if directed_start else not reverse
    while True:
        chain.append((s, forward))
        visited.add(s)
        if len(chain) >= max_segments:
            return chain, "max_segments reached"
        a, b = (int(g.seg_from[s]), int(g.seg_to[s])) if forward else (
            int(g.seg_to[s]), int(g.seg_from[s]))
        options = []
        for t in g.incident(b).tolist():
            if t in visited:
                continue
            nxt = g.other_end(t, b)
            if g.directed and g.seg_flow[t] != 0:
                goes_on = (g.upstream_node(t) == b) != reverse
                if not goes_on:
                    continue
            angle = _deflection_deg(g, a, b, nxt)
            options.append((t, nxt, angle))
        if not options:
            if any(p in g.node_kind(b) for p in ("出水口", "排放口")):
                return chain, "outfall"
            if len(g.incident(b)) <= 1:
                return chain, "end of the network"
            return chain, ("no pipe continues the flow" if g.directed
                           else "only pipes already in the profile go on")
        if g.directed:
            t, nxt, angle = min(options, key=lambda o: (-g.seg_size[o[0]], o[2]))
        else:
            t, nxt, angle = min(options, key=lambda o: o[2])
            if len(g.incident(b)) > 2 and angle > STRAIGHT_MAX_DEG:
                return chain, ("junction without a straight continuation "
                               f"(> {STRAIGHT_MAX_DEG:g} deg)")
        forward = int(g.seg_from[t]) == b
        s = t


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


# --- loading and caching graphs ------------------------------------------------------------------

FINGERPRINT_SQL = f"""
SELECT (SELECT oid FROM pg_database WHERE datname = current_database()),
       (SELECT max(id) FROM {SEG}), (SELECT max(id) FROM {NODE}), (SELECT max(id) FROM {VALVE}),
       (SELECT max(id) FROM {BATCH}), (SELECT count(*) FROM {BATCH}),
       (SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_all_tables
         WHERE relid IN ('{SEG}'::regclass, '{NODE}'::regclass, '{VALVE}'::regclass))
"""
"""Changes to the network tables, cheaply (primary-key maxima, the import log, and the
tables' cumulative write counters, which PostgreSQL publishes within about a second)."""

GRAPH_SEGMENTS_SQL = f"""
SELECT id, from_node_id, to_node_id, length_m, flow_direction,
       GREATEST(coalesce(diameter_mm, 0), coalesce(height_mm, 0), coalesce(width_mm, 0))
FROM {SEG} WHERE network = %s
"""
GRAPH_NODES_SQL = f"""
SELECT id, feature, appurtenance, valve_state, point_no, ST_X(geom), ST_Y(geom)
FROM {NODE} WHERE network = %s
"""
GRAPH_NODES_BY_ID_SQL = f"""
SELECT id, feature, appurtenance, valve_state, point_no, ST_X(geom), ST_Y(geom)
FROM {NODE} WHERE id = ANY(%s)
"""
GRAPH_VALVES_SQL = f"""
SELECT v.id, v.segment_id, v.node_id, v.state, v.valve_no
FROM {VALVE} v JOIN {SEG} s ON s.id = v.segment_id WHERE s.network = %s
"""

_cache: OrderedDict[tuple, tuple[tuple, NetworkGraph]] = OrderedDict()
_cache_lock = threading.Lock()


def clear_graph_cache() -> None:
    with _cache_lock:
        _cache.clear()


async def _fetchall(conn: AsyncConnection, query: str, params: Any = None) -> list[tuple]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def _fetchall_nojit(conn: AsyncConnection, query: str, params: Any = None) -> list[tuple]:
    """For the spatial analyses: set-returning PostGIS functions make the planner's costs
    huge, which buys a JIT compilation costing far more than the query (0.6 s for 1 ms)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL jit = off")
        cur = await conn.execute(query, params)
        return await cur.fetchall()


_build_locks: dict[tuple, asyncio.Lock] = {}


def _cached(key: tuple, fingerprint: tuple) -> NetworkGraph | None:
    with _cache_lock:
        hit = _cache.get(key)
        if hit and hit[0] == fingerprint and \
                time.monotonic() - hit[1].built_at < GRAPH_MAX_AGE_S:
            _cache.move_to_end(key)
            return hit[1]
    return None


def _build_graph(network: str, segments, nodes, valves) -> NetworkGraph:
    graph = NetworkGraph.from_rows(network, segments, nodes, valves)
    _ = graph.valve_segments  # built now, not inside the first request that needs it
    return graph


async def network_graph(conn: AsyncConnection, network: str) -> NetworkGraph:
    """The graph of ``network``, from the per-process cache when the tables are unchanged.

    One build per network at a time (requests that miss together wait for the same build),
    and the build runs in a worker thread so the event loop keeps serving other requests.
    """
    info = conn.info
    key = (info.host, info.port, info.dbname, network)
    fingerprint = tuple((await _fetchall(conn, FINGERPRINT_SQL))[0])
    graph = _cached(key, fingerprint)
    if graph is not None:
        return graph
    lock = _build_locks.setdefault((id(asyncio.get_running_loop()), key), asyncio.Lock())
    async with lock:
        graph = _cached(key, fingerprint)
        if graph is not None:
            return graph
        return await _load_graph(conn, key, fingerprint, network)


async def _load_graph(conn: AsyncConnection, key: tuple, fingerprint: tuple,
                      network: str) -> NetworkGraph:
    segments = await _fetchall(conn, GRAPH_SEGMENTS_SQL, (network,))
    nodes = await _fetchall(conn, GRAPH_NODES_SQL, (network,))
    known = {r[0] for r in nodes}
    missing = sorted({x for r in segments for x in (r[1], r[2])} - known)
    if missing:  # pipes ending on a point filed under another network
        nodes += await _fetchall(conn, GRAPH_NODES_BY_ID_SQL, (missing,))
    valves = await _fetchall(conn, GRAPH_VALVES_SQL, (network,))
    graph = await asyncio.to_thread(_build_graph, network, segments, nodes, valves)
    with _cache_lock:
        _cache[key] = (fingerprint, graph)
        _cache.move_to_end(key)
        while len(_cache) > MAX_CACHED_GRAPHS:
            _cache.popitem(last=False)
    return graph


# --- SQL helpers ---------------------------------------------------------------------------------

#: horizontal and vertical half sizes of a pipe (m): round pipes by diameter, sections by width
#: and height; outer walls are taken at the nominal size (wall thickness is not surveyed)
HALF_W = "coalesce({t}.diameter_mm, {t}.width_mm, 0) / 2000.0"
HALF_H = "coalesce({t}.diameter_mm, {t}.height_mm, 0) / 2000.0"
#: pipes separated for clearance purposes: different networks, and within drainage storm vs
#: sewage, and within water supply reclaimed water vs the rest
SYSTEM = ("CASE WHEN {t}.network = 'PS' THEN 'PS/' || coalesce({t}.subtype, '') "
          "WHEN {t}.network = 'JS' AND {t}.subtype = 'ZS' THEN 'JS/ZS' ELSE {t}.network END")
LONLAT = "ST_AsGeoJSON(ST_Transform({g}, 4326), 7)"


def half_w(t: str) -> str:
    return HALF_W.format(t=t)


def half_h(t: str) -> str:
    return HALF_H.format(t=t)


def system(t: str) -> str:
    return SYSTEM.format(t=t)


def lonlat(g: str) -> str:
    return LONLAT.format(g=g)


def _geom(name: str) -> str:
    return f"ST_GeomFromWKB(%({name})s, {SRID})"


def size_text(diameter: float | None, width: float | None, height: float | None) -> str | None:
    if diameter:
        return f"DN{diameter:g}"
    if width and height:
        return f"{width:g}X{height:g}"
    return None


SEGMENT_FEATURES_SQL = f"""
SELECT s.id, s.dataset, s.network, s.subtype, s.link_type, s.source_id, s.diameter_mm,
       s.width_mm, s.height_mm, s.material, s.owner, s.flow_direction, s.length_m,
       s.from_node_id, s.to_node_id, {lonlat('s.geom')}
FROM {SEG} s WHERE s.id = ANY(%s) ORDER BY s.id
"""
NODE_FEATURES_SQL = f"""
SELECT n.id, n.dataset, n.network, n.subtype, n.point_no, n.feature, n.appurtenance,
       n.valve_state, n.ground_elevation_m, {lonlat('n.geom')}
FROM {NODE} n WHERE n.id = ANY(%s) ORDER BY n.id
"""


async def segment_features(
    conn: AsyncConnection, ids: Sequence[int], extra: dict[int, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """GeoJSON features (CRS84) of segments, properties plus ``extra[id]``."""
    if not ids:
        return []
    rows = await _fetchall(conn, SEGMENT_FEATURES_SQL, (list(ids),))
    out = []
    for r in rows:
        props = {"kind": "segment", "dataset": r[1], "network": r[2], "subtype": r[3],
                 "link_type": r[4], "source_id": r[5], "diameter_mm": r[6], "width_mm": r[7],
                 "height_mm": r[8], "material": r[9], "owner": r[10], "flow_direction": r[11],
                 "length_m": round(r[12], 3), "from_node_id": r[13], "to_node_id": r[14]}
        props.update((extra or {}).get(r[0], {}))
        out.append({"type": "Feature", "id": f"segment:{r[0]}", "geometry": json.loads(r[15]),
                    "properties": {"segment_id": r[0], **props}})
    return out


async def node_features(
    conn: AsyncConnection, ids: Sequence[int], extra: dict[int, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    if not ids:
        return []
    rows = await _fetchall(conn, NODE_FEATURES_SQL, (list(ids),))
    out = []
    for r in rows:
        props = {"kind": "node", "dataset": r[1], "network": r[2], "subtype": r[3],
                 "point_no": r[4], "feature": r[5], "appurtenance": r[6], "valve_state": r[7],
                 "ground_elevation_m": r[8]}
        props.update((extra or {}).get(r[0], {}))
        out.append({"type": "Feature", "id": f"node:{r[0]}", "geometry": json.loads(r[9]),
                    "properties": {"node_id": r[0], **props}})
    return out


SEGMENT_INFO_SQL = f"""
SELECT id, network, dataset FROM {SEG} WHERE id = %s
"""


async def segment_info(conn: AsyncConnection, seg_id: int) -> tuple[int, str, str] | None:
    rows = await _fetchall(conn, SEGMENT_INFO_SQL, (seg_id,))
    return tuple(rows[0]) if rows else None


NODE_INFO_SQL = f"SELECT id, network, dataset FROM {NODE} WHERE id = %s"


async def node_info(conn: AsyncConnection, node_id: int) -> tuple[int, str, str] | None:
    rows = await _fetchall(conn, NODE_INFO_SQL, (node_id,))
    return tuple(rows[0]) if rows else None


async def nearest_segment(
    conn: AsyncConnection, x: float, y: float, network: str | None = None,
    dataset: str | None = None,
) -> tuple[int, str, str, float] | None:
    """The pipe nearest to (x, y) in the storage CRS: (id, network, dataset, distance m)."""
    where, params = [], {"x": x, "y": y}
    if network:
        where.append("s.network = %(network)s")
        params["network"] = network
    if dataset:
        where.append("s.dataset = %(dataset)s")
        params["dataset"] = dataset
    cond = f"WHERE {' AND '.join(where)}" if where else ""
    point = f"ST_SetSRID(ST_MakePoint(%(x)s, %(y)s), {SRID})"
    rows = await _fetchall(conn, f"""
        SELECT s.id, s.network, s.dataset, ST_Distance(s.geom, {point})
        FROM {SEG} s {cond} ORDER BY s.geom <-> {point} LIMIT 1""", params)
    return tuple(rows[0]) if rows else None


async def nearest_node(
    conn: AsyncConnection, x: float, y: float, network: str | None = None,
) -> tuple[int, str, str, float] | None:
    params: dict[str, Any] = {"x": x, "y": y}
    cond = ""
    if network:
        cond = "WHERE n.network = %(network)s"
        params["network"] = network
    point = f"ST_SetSRID(ST_MakePoint(%(x)s, %(y)s), {SRID})"
    rows = await _fetchall(conn, f"""
        SELECT n.id, n.network, n.dataset, ST_Distance(n.geom, {point})
        FROM {NODE} n {cond} ORDER BY n.geom <-> {point} LIMIT 1""", params)
    return tuple(rows[0]) if rows else None


# --- customers ---------------------------------------------------------------------------------

SERVED_BUILDINGS_SQL = f"""
WITH iso AS (SELECT id, geom FROM {SEG} WHERE id = ANY(%(ids)s)),
cand AS (
    SELECT DISTINCT b.id FROM iso JOIN {BUILDINGS} b ON ST_DWithin(b.footprint, iso.geom, %(r)s)
)
SELECT b.id, b.building_code, b.name, b.address, b.use, b.residents, near.id, near.d,
       {lonlat('ST_PointOnSurface(b.footprint)')}
FROM cand JOIN {BUILDINGS} b ON b.id = cand.id
CROSS JOIN LATERAL (
    SELECT s.id, ST_Distance(s.geom, b.footprint) AS d FROM {SEG} s
    WHERE ST_DWithin(s.geom, b.footprint, %(r)s)  -- bounded: the GiST index drives the search
      AND s.network = %(network)s AND s.link_type = 'pipe'
      AND coalesce(s.subtype, '') <> ALL(%(excluded)s)
    ORDER BY ST_Distance(s.geom, b.footprint), s.id LIMIT 1
) near
WHERE near.id = ANY(%(ids)s) AND near.d <= %(r)s
ORDER BY b.id
"""


async def served_buildings(
    conn: AsyncConnection, network: str, seg_ids: Sequence[int],
    radius_m: float = SERVICE_RADIUS_M,
) -> list[dict[str, Any]]:
    """Buildings whose nearest service pipe of ``network`` (within ``radius_m`` of the
    footprint; not raw-water or transmission mains) is one of ``seg_ids``."""
    if not seg_ids:
        return []
    rows = await _fetchall_nojit(conn, SERVED_BUILDINGS_SQL, {
        "ids": list(seg_ids), "r": radius_m, "network": network,
        "excluded": list(NON_SERVICE_SUBTYPES)})
    return [{"building_id": r[0], "building_code": r[1], "name": r[2], "address": r[3],
             "use": r[4], "residents": r[5], "served_by_segment": r[6],
             "distance_m": round(r[7], 2), "point": json.loads(r[8])} for r in rows]


# --- reversed slopes ---------------------------------------------------------------------------

REVERSED_SLOPES_SQL = f"""
WITH g AS (
    SELECT s.id, s.from_node_id, s.to_node_id, s.flow_direction, s.length_m,
           s.from_elevation_m - CASE s.depth_ref WHEN 'top' THEN 2 * {half_h('s')}
                WHEN 'centre' THEN {half_h('s')} ELSE 0 END AS inv_from,
           s.to_elevation_m - CASE s.depth_ref WHEN 'top' THEN 2 * {half_h('s')}
                WHEN 'centre' THEN {half_h('s')} ELSE 0 END AS inv_to
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
    rows = await _fetchall_nojit(conn, REVERSED_SLOPES_SQL,
                           {"network": network, "tol": UPHILL_TOLERANCE_M})
    return [{"segment_id": r[0], "upstream_node_id": r[1], "downstream_node_id": r[2],
             "upstream_invert_m": round(r[3], 3), "downstream_invert_m": round(r[4], 3),
             "rise_m": round(r[4] - r[3], 3),
             "slope_permille": round(1000 * (r[4] - r[3]) / r[5], 2) if r[5] else None}
            for r in rows]


# --- GB 50289-2016 clearances --------------------------------------------------------------------

CLEARANCE_CSV = "gb50289_2016_clearances.csv"
GAS_CLASSES = ("低压", "中压B", "中压A", "次高压B", "次高压A", "高压")
GAS_LABELS = frozenset({*GAS_CLASSES, "中压", "次高压"})
BURIAL_LABELS = {"直埋": "direct", "保护管": "duct", "管道": "duct", "通道": "duct"}
DIRECT_BURIAL = "ZM"
DIAMETER_LABEL = re.compile(r"^d\s*(<=|<|>=|>)\s*(\d+(?:\.\d+)?)\s*mm$", re.IGNORECASE)
WATER_ITEMS = ("给水管线", "再生水管线")
GAS_ITEMS = ("燃气", "燃气(低/中压)", "热力/燃气")
CABLE_ITEMS = ("电力", "通信")
BUILDING_ITEM = "建(构)筑物"
#: the name a pipe goes by in GB 50289's tables (for 'no rule' reports)
ITEM_NAMES = {"JS": "给水管线", "PS": "污水/雨水管线", "RQ": "燃气", "RL": "热力",
              "DL": "电力", "TX": "通信", "GY": "工业管线", "QT": "其他管线"}


@dataclass(frozen=True)
class ClearanceRule:
    row: int  # line of the CSV (header is line 1)
    table: str
    kind: str  # horizontal / vertical
    item_a: str
    item_b: str
    variant: str  # the one variant this rule is for ('' = any)
    value_m: float
    status: str
    source: str
    row_variant: str  # the CSV cell, as written
    row_value: str

    @property
    def unverified(self) -> bool:
        return self.status.upper().startswith("UNVERIFIED")

    @property
    def verified(self) -> bool:
        return self.status.upper().startswith("VERIFIED")

    def as_json(self) -> dict[str, Any]:
        return {"standard": "GB 50289-2016", "table": self.table, "csv_row": self.row,
                "item_a": self.item_a, "item_b": self.item_b, "variant": self.row_variant,
                "value": self.row_value, "applied_variant": self.variant,
                "status": self.status, "source": self.source,
                "verified": self.verified, "unverified": self.unverified}


def _variant_labels(text: str) -> list[str]:
    """'次高压B/A' -> ['次高压B', '次高压A']; '直埋/保护管' -> ['直埋', '保护管']."""
    parts = [p.strip() for p in text.split("/") if p.strip()]
    out: list[str] = []
    for p in parts:
        if len(p) == 1 and p.isalpha() and out:
            p = out[-1][:-1] + p
        out.append(p)
    return out


@lru_cache
def clearance_rules() -> tuple[ClearanceRule, ...]:
    """The shipped table expanded to one rule per variant (rows whose values are not numbers
    -- crossing angles -- or whose variants and values do not pair up are left out)."""
    out = []
    for line, r in enumerate(read_rows(CLEARANCE_CSV), start=2):
        if r["kind"] not in ("horizontal", "vertical"):
            continue
        try:
            values = [float(v) for v in r["value_m"].split("/")]
        except ValueError:
            continue
        labels = _variant_labels(r["variant"]) or [""]
        if len(values) == 1:
            values = values * len(labels)
        if len(values) != len(labels):
            continue
        for label, value in zip(labels, values, strict=True):
            out.append(ClearanceRule(line, r["table"], r["kind"], r["item_a"], r["item_b"],
                                     label, value, r["status"], r["source"], r["variant"],
                                     r["value_m"]))
    return tuple(out)


@dataclass(frozen=True)
class PipeSpec:
    """What the clearance rules need to know about a pipe (or a building)."""

    network: str  # CJJ 61 major code, or BUILDING for a building
    subtype: str | None = None
    diameter_mm: float | None = None
    width_mm: float | None = None
    height_mm: float | None = None
    pressure_class: str | None = None
    burial: str | None = None

    @property
    def size_mm(self) -> float | None:
        return self.diameter_mm or max(self.width_mm or 0, self.height_mm or 0) or None

    @property
    def item_name(self) -> str:
        if self.network == BUILDING:
            return BUILDING_ITEM
        if self.network == "JS" and self.subtype == "ZS":
            return "再生水管线"
        if self.network == "RL" and self.burial in (DIRECT_BURIAL, None):
            return "直埋热力"
        return ITEM_NAMES.get(self.network, self.network)


#: PipeSpec.network of a building
BUILDING = "BUILDING"


def gas_class(text: str | None) -> str | None:
    """GB 50028 pressure class from a survey's 压力 cell: a class name or a pressure in MPa."""
    if not text:
        return None
    t = re.sub(r"\s", "", text).upper().replace("Ａ", "A").replace("Ｂ", "B")
    for name in ("次高压A", "次高压B", "次高压", "中压A", "中压B", "中压", "低压", "高压"):
        if name in t:
            return name
    m = re.match(r"^(\d+(?:\.\d+)?)(MPA|KPA)?$", t)
    if not m:
        return None
    p = float(m.group(1)) / (1000.0 if m.group(2) == "KPA" else 1.0)
    for limit, name in ((0.01, "低压"), (0.2, "中压B"), (0.4, "中压A"), (0.8, "次高压B"),
                        (1.6, "次高压A")):
        if p < limit or (limit > 0.01 and p <= limit):
            return name
    return "高压"


def item_matches(item: str, p: PipeSpec) -> bool:
    net, sub = p.network, p.subtype
    if item == BUILDING_ITEM:
        return net == BUILDING
    if item == "给水管线":
        return net == "JS" and sub != "ZS"
    if item == "再生水管线":
        return net == "JS" and sub == "ZS"
    if item == "污水/雨水管线":
        return net == "PS"
    if item == "燃气":
        return net == "RQ"
    if item == "燃气(低/中压)":
        return net == "RQ" and gas_class(p.pressure_class) in (None, "低压", "中压", "中压A",
                                                                "中压B")
    if item == "热力":
        return net == "RL"
    if item == "直埋热力":
        return net == "RL" and p.burial in (DIRECT_BURIAL, None)
    if item == "热力/燃气":
        return net in ("RL", "RQ")
    if item == "电力":
        return net == "DL"
    if item == "通信":
        return net == "TX"
    if item == "管沟":
        return p.burial == "GG" and net not in ("PS", "DL", "TX", BUILDING)
    return False  # trees, kerbs, railways ...: not in the twin's pipe tables


def _variant_owner(rule: ClearanceRule, category: str) -> str | None:
    """Which side of the rule ('a' or 'b') its variant describes."""
    owners = {"diameter": WATER_ITEMS, "gas": GAS_ITEMS, "burial": CABLE_ITEMS}[category]
    if rule.item_a in owners:
        return "a"
    if rule.item_b in owners:
        return "b"
    return None


def variant_matches(label: str, p: PipeSpec, category: str) -> tuple[bool, str | None]:
    """Does the pipe fall under the variant? (match, assumption made when data is missing)."""
    if category == "diameter":
        m = DIAMETER_LABEL.match(label)
        op, limit = m.group(1), float(m.group(2))
        size = p.size_mm
        if size is None:
            return True, "pipe size unknown: every diameter class considered"
        ok = {"<=": size <= limit, "<": size < limit, ">=": size >= limit,
              ">": size > limit}[op]
        return ok, None
    if category == "gas":
        cls = gas_class(p.pressure_class)
        if p.network != "RQ":
            return True, None
        if cls is None:
            return True, "gas pressure class unknown: every class considered"
        if cls == label:
            return True, None
        if cls in ("中压", "次高压") and label.startswith(cls) and len(label) == len(cls) + 1:
            return True, f"pressure class {cls} without A/B: both considered"
        if label in ("中压", "次高压") and cls.startswith(label):
            return True, None
        return False, None
    if category == "burial":
        if p.burial is None:
            return True, "burial method unknown: direct burial and ducts considered"
        kind = "direct" if p.burial == DIRECT_BURIAL else "duct"
        return BURIAL_LABELS[label] == kind, None
    return False, None


def _label_category(label: str) -> str | None:
    if not label:
        return ""
    if DIAMETER_LABEL.match(label):
        return "diameter"
    if label in GAS_LABELS:
        return "gas"
    if label in BURIAL_LABELS:
        return "burial"
    return None


@dataclass
class RuleMatch:
    required_m: float
    rule: ClearanceRule
    considered: list[ClearanceRule]
    assumptions: list[str]


def clearance_rule(kind: str, p: PipeSpec, q: PipeSpec) -> RuleMatch | None:
    """The clearance GB 50289 asks between p and q (the largest of the rows that apply, with
    the assumptions made where the data leave the variant open), or None when it has none."""
    found: list[tuple[ClearanceRule, str | None]] = []
    for rule in clearance_rules():
        if rule.kind != kind:
            continue
        category = _label_category(rule.variant)
        if category is None:
            continue
        for a, b in ((p, q), (q, p)):
            if not (item_matches(rule.item_a, a) and item_matches(rule.item_b, b)):
                continue
            assumption = None
            if category:
                owner = _variant_owner(rule, category)
                if owner is None:
                    continue
                ok, assumption = variant_matches(rule.variant, a if owner == "a" else b,
                                                 category)
                if not ok:
                    continue
                if rule.item_a == rule.item_b and category == "burial":
                    ok2, assumption2 = variant_matches(rule.variant, b if owner == "a" else a,
                                                       category)
                    assumption = assumption or assumption2
            found.append((rule, assumption))
            break
    if not found:
        return None
    best = max(found, key=lambda f: (f[0].value_m, f[0].verified))
    assumptions = sorted({a for _, a in found if a})
    return RuleMatch(best[0].value_m, best[0], [r for r, _ in found], assumptions)


def spec_from(row: Sequence[Any]) -> PipeSpec:
    """(network, subtype, diameter, width, height, pressure_class, burial) -> PipeSpec."""
    return PipeSpec(*row[:7])


# clearance SQL: candidate pairs found on the GiST index, exact distances computed after
_PIPE_COLS = ("{t}.network, {t}.subtype, {t}.diameter_mm, {t}.width_mm, {t}.height_mm, "
              "{t}.pressure_class, {t}.burial, {t}.owner, {t}.dataset")


def _scope(t: str, area: bool, networks: bool) -> str:
    cond = [f"{t}.link_type = 'pipe'"]
    if area:
        cond.append(f"ST_Intersects({t}.geom, {_geom('area')})")
    if networks:
        cond.append(f"{t}.network = ANY(%(networks)s)")
    return " AND ".join(cond)


def clearance_pairs_sql(area: bool, networks: bool) -> str:
    return f"""
SELECT a.id, {_PIPE_COLS.format(t='a')}, b.id, {_PIPE_COLS.format(t='b')},
       ST_Distance(a.geom, b.geom) AS d, {half_w('a')}, {half_h('a')}, {half_w('b')},
       {half_h('b')}, ST_Intersects(a.geom, b.geom) AS crosses,
       CASE WHEN ST_Intersects(a.geom, b.geom) THEN (
           SELECT array_agg(ARRAY[
               ST_Z(ST_LineInterpolatePoint(a.geom,
                                            ST_LineLocatePoint(ST_Force2D(a.geom), p.geom))),
               ST_Z(ST_LineInterpolatePoint(b.geom,
                                            ST_LineLocatePoint(ST_Force2D(b.geom), p.geom))),
               ST_X(p.geom), ST_Y(p.geom)])
           FROM ST_DumpPoints(ST_Intersection(ST_Force2D(a.geom), ST_Force2D(b.geom))) p)
       END AS zs,
       ST_AsBinary(ST_ClosestPoint(ST_Force2D(a.geom), ST_Force2D(b.geom))),
       CASE WHEN ST_Distance(a.geom, b.geom) < {half_w('a')} + {half_w('b')} THEN ARRAY[
           ST_Z(ST_LineInterpolatePoint(a.geom, ST_LineLocatePoint(ST_Force2D(a.geom),
                ST_ClosestPoint(ST_Force2D(a.geom), ST_Force2D(b.geom))))),
           ST_Z(ST_LineInterpolatePoint(b.geom, ST_LineLocatePoint(ST_Force2D(b.geom),
                ST_ClosestPoint(ST_Force2D(b.geom), ST_Force2D(a.geom)))))]
       END AS z_close
FROM {SEG} a JOIN {SEG} b ON ST_DWithin(a.geom, b.geom, %(search)s) AND b.id <> a.id
WHERE {_scope('a', area, networks)} AND b.link_type = 'pipe'
  AND {system('a')} <> {system('b')}
  AND NOT ({_scope('b', area, networks)} AND b.id < a.id)
LIMIT %(limit)s
"""


def clearance_buildings_sql(area: bool, networks: bool) -> str:
    return f"""
SELECT a.id, {_PIPE_COLS.format(t='a')}, b.id, b.building_code, b.name,
       ST_Distance(a.geom, b.footprint) AS d, {half_w('a')},
       ST_AsBinary(ST_ClosestPoint(ST_Force2D(a.geom), b.footprint))
FROM {SEG} a JOIN {BUILDINGS} b ON ST_DWithin(a.geom, b.footprint, %(search)s)
WHERE {_scope('a', area, networks)}
LIMIT %(limit)s
"""


def clearance_max_half_sql(area: bool, networks: bool) -> str:
    return f"""
SELECT coalesce(max(GREATEST({half_w('a')}, {half_h('a')})), 0) FROM {SEG} a
WHERE {_scope('a', area, networks)}
"""


#: the items of the table that stand for something in the twin's pipe and building tables
TWIN_ITEMS = frozenset({BUILDING_ITEM, *WATER_ITEMS, *GAS_ITEMS, *CABLE_ITEMS, "污水/雨水管线",
                        "热力", "直埋热力", "管沟"})


def max_rule_value(kind: str, building: bool) -> float:
    """The largest clearance a pipe pair (or a pipe and a building) can be asked for."""
    vals = [r.value_m for r in clearance_rules() if r.kind == kind
            and r.item_a in TWIN_ITEMS and r.item_b in TWIN_ITEMS
            and (r.item_a == BUILDING_ITEM or r.item_b == BUILDING_ITEM) == building]
    return max(vals, default=0.0)


# --- excavation, cross-section, profile SQL ---------------------------------------------------

#: centre elevation along a pipe at fraction f (2D) and ground linear between its end points
EXCAVATION_PIPES_SQL = f"""
WITH ex AS (SELECT {_geom('area')} AS g),
hit AS (
    SELECT s.*, na.ground_elevation_m AS ga, nb.ground_elevation_m AS gb
    FROM {SEG} s JOIN {NODE} na ON na.id = s.from_node_id JOIN {NODE} nb ON nb.id = s.to_node_id,
         ex
    WHERE ST_Intersects(s.geom, ex.g)
),
pts AS (
    SELECT h.id, ST_LineLocatePoint(ST_Force2D(h.geom), d.geom) AS f
    FROM hit h, ex, ST_DumpPoints(ST_Intersection(ST_Force2D(h.geom), ex.g)) d
),
depths AS (
    SELECT h.id,
           (h.ga + p.f * (h.gb - h.ga))
             - (ST_Z(ST_LineInterpolatePoint(h.geom, p.f)) + {half_h('h')}) AS top_depth,
           ST_Z(ST_LineInterpolatePoint(h.geom, p.f)) + {half_h('h')} AS top_z,
           h.ga + p.f * (h.gb - h.ga) AS ground
    FROM hit h JOIN pts p ON p.id = h.id
),
agg AS (
    SELECT id, min(top_depth) AS top_depth, max(top_z) AS top_z, min(ground) AS g0,
           max(ground) AS g1
    FROM depths GROUP BY id
)
SELECT h.id, h.dataset, h.network, h.subtype, h.owner, h.diameter_mm, h.width_mm, h.height_mm,
       h.material, h.pressure_class, h.voltage_kv, h.burial, h.depth_ref,
       a.top_depth, a.top_z, a.g0, a.g1,
       ST_Length(ST_Intersection(ST_Force2D(h.geom), ex.g)),
       {lonlat('ST_Intersection(h.geom, ex.g)')}
FROM hit h JOIN agg a ON a.id = h.id, ex
WHERE a.top_depth < %(depth)s
"""

EXCAVATION_NODES_SQL = f"""
WITH ex AS (SELECT {_geom('area')} AS g),
inside AS (SELECT n.* FROM {NODE} n, ex WHERE ST_Intersects(n.geom, ex.g)),
ends AS (
    SELECT i.id,
           min(i.ground_elevation_m - (CASE WHEN s.from_node_id = i.id
                  THEN ST_Z(ST_StartPoint(s.geom)) ELSE ST_Z(ST_EndPoint(s.geom)) END
                + {half_h('s')})) AS top_depth
    FROM inside i JOIN {SEG} s ON s.from_node_id = i.id OR s.to_node_id = i.id
    GROUP BY i.id
)
SELECT i.id, i.dataset, i.network, i.subtype, i.point_no, i.feature, i.appurtenance,
       i.ground_elevation_m, i.well_depth_m, e.top_depth,
       (SELECT s.owner FROM {SEG} s WHERE s.from_node_id = i.id OR s.to_node_id = i.id
        ORDER BY s.id LIMIT 1),
       {lonlat('i.geom')}
FROM inside i LEFT JOIN ends e ON e.id = i.id
WHERE i.well_depth_m IS NOT NULL OR coalesce(i.appurtenance, '') <> ''
   OR e.top_depth < %(depth)s
"""

CROSS_SECTION_SQL = f"""
WITH l AS (SELECT {_geom('line')} AS g),
hit AS (
    SELECT s.*, na.ground_elevation_m AS ga, nb.ground_elevation_m AS gb
    FROM {SEG} s JOIN {NODE} na ON na.id = s.from_node_id JOIN {NODE} nb ON nb.id = s.to_node_id,
         l
    WHERE ST_Intersects(s.geom, l.g)
),
x AS (
    SELECT h.id, CASE WHEN GeometryType(d.geom) = 'POINT' THEN d.geom
                      ELSE ST_StartPoint(d.geom) END AS p
    FROM hit h, l, ST_Dump(ST_Intersection(ST_Force2D(h.geom), l.g)) d
)
SELECT h.id, h.dataset, h.network, h.subtype, h.owner, h.material, h.diameter_mm, h.width_mm,
       h.height_mm, h.pressure_class, h.flow_direction, h.depth_ref,
       ST_LineLocatePoint(l.g, x.p) * ST_Length(l.g) AS offset_m,
       ST_Z(ST_LineInterpolatePoint(h.geom, ST_LineLocatePoint(ST_Force2D(h.geom), x.p))),
       h.ga + ST_LineLocatePoint(ST_Force2D(h.geom), x.p) * (h.gb - h.ga),
       {half_h('h')}, {lonlat('x.p')}
FROM hit h JOIN x ON x.id = h.id, l
ORDER BY offset_m, h.id
LIMIT %(limit)s
"""

GROUND_SAMPLES_SQL = f"""
WITH l AS (SELECT {_geom('line')} AS g),
s AS (SELECT i, ST_LineInterpolatePoint(l.g, i::float8 / %(last)s) AS p
      FROM l, generate_series(0, %(last)s) i)
SELECT s.i, k.ground, k.d
FROM s CROSS JOIN LATERAL (
    SELECT n.ground_elevation_m AS ground, ST_Distance(n.geom, s.p) AS d FROM {NODE} n
    WHERE n.ground_elevation_m IS NOT NULL
    ORDER BY n.geom <-> s.p LIMIT %(k)s) k
ORDER BY s.i, k.d
"""

IDW_NEIGHBOURS = 8
IDW_POWER = 2.0
IDW_MAX_DISTANCE_M = 200.0


def idw(pairs: Sequence[tuple[float, float]]) -> float | None:
    """Inverse-distance weighted ground from (elevation, distance) pairs within range."""
    near = [(z, d) for z, d in pairs if z is not None and d <= IDW_MAX_DISTANCE_M]
    if not near:
        return None
    for z, d in near:
        if d < 0.01:
            return float(z)
    w = [1.0 / d**IDW_POWER for _, d in near]
    return float(sum(wi * z for wi, (z, _) in zip(w, near, strict=True)) / sum(w))


PROFILE_SEGMENTS_SQL = f"""
SELECT s.id, s.network, s.subtype, s.diameter_mm, s.width_mm, s.height_mm, s.material,
       s.depth_ref, s.flow_direction, ST_Length(ST_Force2D(s.geom)),
       ST_Z(ST_StartPoint(s.geom)), ST_Z(ST_EndPoint(s.geom)), {half_h('s')},
       s.from_node_id, s.to_node_id, na.ground_elevation_m, nb.ground_elevation_m,
       na.point_no, nb.point_no, {lonlat('s.geom')}
FROM {SEG} s JOIN {NODE} na ON na.id = s.from_node_id JOIN {NODE} nb ON nb.id = s.to_node_id
WHERE s.id = ANY(%s)
"""


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), nd)


# --- the analyses, as the API serves them ---------------------------------------------------------


class AnalysisError(Exception):
    """A request the data cannot answer as asked (HTTP 400)."""

    status = 400


class NotFound(AnalysisError):
    """An id that is not in the twin (HTTP 404)."""

    status = 404


MAX_IDS = 100_000
MAX_CLEARANCE_CANDIDATES = 200_000


@lru_cache(maxsize=1)
def _to_lonlat():
    from cimtwin.spatial.crs import transformer

    return transformer(SRID, "OGC:CRS84")


def to_lonlat(x: float, y: float) -> list[float]:
    lon, lat = _to_lonlat().transform(x, y)
    return [round(float(lon), 7), round(float(lat), 7)]


def _wkb_lonlat(wkb: bytes | memoryview | None) -> list[float] | None:
    if wkb is None:
        return None
    import shapely

    g = shapely.from_wkb(bytes(wkb))
    if g.is_empty:
        return None
    return to_lonlat(g.x, g.y)


async def resolve_segment(
    conn: AsyncConnection, *, segment_id: int | None = None,
    point: tuple[float, float] | None = None, tolerance_m: float = 10.0,
    network: str | None = None, dataset: str | None = None,
) -> tuple[int, str, dict[str, Any] | None]:
    """The segment a request names, or the pipe nearest to its point: (id, network, snap)."""
    if segment_id is not None:
        info = await segment_info(conn, segment_id)
        if info is None:
            raise NotFound(f"segment {segment_id} does not exist")
        if dataset and info[2] != dataset:
            raise NotFound(f"segment {segment_id} is not in dataset {dataset!r} "
                           f"(it is in {info[2]!r})")
        if network and info[1] != network:
            raise AnalysisError(f"segment {segment_id} belongs to network {info[1]}, "
                                f"not {network}")
        return segment_id, info[1], None
    if point is None:
        raise AnalysisError("give a segment id or a point")
    near = await nearest_segment(conn, point[0], point[1], network, dataset)
    if near is None:
        where = " ".join(x for x in (f"of network {network}" if network else "",
                                     f"in dataset {dataset!r}" if dataset else "") if x)
        raise AnalysisError(f"there are no pipes {where}".strip())
    if near[3] > tolerance_m:
        raise AnalysisError(f"the point is {near[3]:.1f} m from the nearest pipe "
                            f"(segment {near[0]}); the tolerance is {tolerance_m:g} m")
    return near[0], near[1], {"segment_id": near[0], "distance_m": round(near[3], 3)}


def _valve_split(refs: Iterable[str]) -> tuple[list[int], list[int]]:
    layer, points = [], []
    for r in refs:
        kind, _, num = r.partition(":")
        (layer if kind == "valve" else points).append(int(num))
    return layer, points


async def valve_features(
    conn: AsyncConnection, valves: Sequence[ValveToClose], g: NetworkGraph,
) -> dict[str, list[float] | None]:
    """Position (lon/lat) of each valve ref."""
    layer, points = _valve_split(v.ref for v in valves)
    out: dict[str, list[float] | None] = {}
    if layer:
        for vid, gj in await _fetchall(
                conn, f"SELECT id, {lonlat('geom')} FROM {VALVE} WHERE id = ANY(%s)", (layer,)):
            out[f"valve:{vid}"] = json.loads(gj)["coordinates"][:2]
    if points:
        for nid, gj in await _fetchall(
                conn, f"SELECT id, {lonlat('geom')} FROM {NODE} WHERE id = ANY(%s)", (points,)):
            out[f"node:{nid}"] = json.loads(gj)["coordinates"][:2]
    return out


async def isolation_analysis(
    conn: AsyncConnection, *, segment_id: int | None = None,
    point: tuple[float, float] | None = None, tolerance_m: float = 10.0,
    network: str | None = None, dataset: str | None = None,
    failed_valves: Sequence[str] = (), service_radius_m: float = SERVICE_RADIUS_M,
    max_features: int = 2000,
) -> dict[str, Any]:
    """Valves to close for a burst pipe, what they isolate and who loses supply."""
    seg_id, net, snap = await resolve_segment(
        conn, segment_id=segment_id, point=point, tolerance_m=tolerance_m, network=network,
        dataset=dataset)
    g = await network_graph(conn, net)
    s = g.seg_index(seg_id)
    if s is None:  # written between the two queries
        raise NotFound(f"segment {seg_id} does not exist")
    try:
        iso = isolate(g, s, failed_valves)
    except UnknownValve as exc:
        raise NotFound(f"not a valve of network {net}: {exc}; valves are named "
                       "valve:<pipeline_valve id> or node:<survey valve point id>") from exc
    seg_ids = g.seg_id[iso.segments].tolist()
    node_ids = g.node_id[iso.nodes].tolist()
    length = float(g.seg_len[iso.segments].sum())
    buildings = await served_buildings(conn, net, seg_ids, service_radius_m)
    where = await valve_features(conn, iso.valves, g)
    valves = []
    for v in iso.valves:
        kind, _, num = v.ref.partition(":")
        valves.append({
            "valve": v.ref, "kind": "valve_layer" if kind == "valve" else "valve_point",
            "id": int(num), "valve_no": v.valve_no, "state": v.state,
            "action": "already closed" if v.state == "closed" else "close",
            "node_id": int(g.node_id[v.node]),
            "segment_ids": sorted(int(g.seg_id[x]) for x in v.segments), "ring": v.ring,
            "point": where.get(v.ref)})
    shown = seg_ids[:max_features]
    features = await segment_features(conn, shown, {i: {"role": "isolated"} for i in shown})
    for v in valves:
        if v["point"]:
            props = {k: x for k, x in v.items() if k not in ("point", "kind")}
            features.append({"type": "Feature", "id": v["valve"],
                             "geometry": {"type": "Point", "coordinates": v["point"]},
                             "properties": {"kind": "valve", "valve_kind": v["kind"], **props}})
    residents = sum(b["residents"] or 0 for b in buildings)
    return {
        "network": net,
        "burst": {"segment_id": seg_id, "snapped": snap},
        "valves": valves,
        "failed_valves": {"used": iso.failed_used, "not_on_boundary": iso.failed_unused},
        "rings": iso.rings,
        "isolated_segments": {"count": len(seg_ids), "length_m": round(length, 3),
                              "ids": seg_ids[:MAX_IDS]},
        "affected_nodes": {"count": len(node_ids), "ids": node_ids[:MAX_IDS]},
        "customers": {
            "rule": f"a building is served by the nearest pipe of network {net} within "
                    f"{service_radius_m:g} m of its footprint (transmission and raw-water "
                    f"mains {', '.join(NON_SERVICE_SUBTYPES)} excluded); it is affected when "
                    "that pipe is isolated",
            "buildings": len(buildings), "residents": residents, "items": buildings},
        "features": {"type": "FeatureCollection", "features": features},
        "truncated": len(seg_ids) > max_features,
    }


async def trace_analysis(
    conn: AsyncConnection, *, network: str, segment_id: int | None = None,
    node_id: int | None = None, point: tuple[float, float] | None = None,
    tolerance_m: float = 10.0, direction: str = "downstream",
    max_distance_m: float | None = None, stop_at_valves: bool = False,
    stop_at_node_types: Sequence[str] = (), max_features: int = 5000,
) -> dict[str, Any]:
    """Segments and nodes reached from a start, up or down the flow or by connectivity."""
    start: dict[str, Any]
    if node_id is not None:
        info = await node_info(conn, node_id)
        if info is None:
            raise NotFound(f"node {node_id} does not exist")
        g = await network_graph(conn, network)
        k = g.node_index(node_id)
        if k is None:
            raise AnalysisError(f"node {node_id} is not on network {network} "
                                f"(it is a {info[1]} point)")
        t = trace(g, start_node=k, direction=direction, max_distance=max_distance_m,
                  stop_at_valves=stop_at_valves, stop_node_types=stop_at_node_types)
        start = {"node_id": node_id}
    else:
        seg_id, _, snap = await resolve_segment(
            conn, segment_id=segment_id, point=point, tolerance_m=tolerance_m,
            network=network)
        g = await network_graph(conn, network)
        s = g.seg_index(seg_id)
        if s is None:
            raise NotFound(f"segment {seg_id} does not exist")
        t = trace(g, start_segment=s, direction=direction, max_distance=max_distance_m,
                  stop_at_valves=stop_at_valves, stop_node_types=stop_at_node_types)
        start = {"segment_id": seg_id, "snapped": snap}
    limit = math.inf if max_distance_m is None else max_distance_m
    segs = sorted(t.segments.items(), key=lambda kv: (kv[1], kv[0]))
    nodes = sorted(t.nodes.items(), key=lambda kv: (kv[1], kv[0]))
    length = sum(min(float(g.seg_len[s]), max(0.0, limit - d)) for s, d in segs)
    seg_props = {int(g.seg_id[s]): {"distance_m": round(d, 3), "partial": s in t.partial}
                 for s, d in segs[:max_features]}
    node_props = {int(g.node_id[k]): {"distance_m": round(d, 3)}
                  for k, d in nodes[:max_features]}
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
        notes.append(f"{network} is a pressure network: it has no flow direction, so the trace "
                     "follows connectivity")
    return {
        "type": "FeatureCollection", "network": network, "start": start,
        "direction": direction, "direction_applied": t.direction, "notes": notes,
        "totals": {"segments": len(segs), "nodes": len(nodes), "length_m": round(length, 3),
                   "partial_segments": len(t.partial & set(t.segments))},
        "segment_ids": [int(g.seg_id[s]) for s, _ in segs][:MAX_IDS],
        "node_ids": [int(g.node_id[k]) for k, _ in nodes][:MAX_IDS],
        "stops": stops,
        "truncated": len(segs) > max_features or len(nodes) > max_features,
        "features": features,
    }


async def profile_analysis(
    conn: AsyncConnection, segment_id: int, *, reverse: bool = False, max_segments: int = 100,
) -> dict[str, Any]:
    """Longitudinal profile along the chain of pipes that starts at ``segment_id``."""
    info = await segment_info(conn, segment_id)
    if info is None:
        raise NotFound(f"segment {segment_id} does not exist")
    g = await network_graph(conn, info[1])
    s = g.seg_index(segment_id)
    if s is None:
        raise NotFound(f"segment {segment_id} does not exist")
    chain, why = profile_chain(g, s, reverse=reverse, max_segments=max_segments)
    ids = [int(g.seg_id[x]) for x, _ in chain]
    rows = {r[0]: r for r in await _fetchall(conn, PROFILE_SEGMENTS_SQL, (ids,))}
    chainage = 0.0
    out, ground, geoms = [], [], []
    for (_, fwd), sid in zip(chain, ids, strict=True):
        r = rows[sid]
        (net, sub, dia, wid, hei, mat, ref, flow, l2d, za, zb, h, na, nb, ga, gb, pa, pb,
         gj) = r[1:]
        if not fwd:
            za, zb, na, nb, ga, gb, pa, pb = zb, za, nb, na, gb, ga, pb, pa
        seg = {
            "segment_id": sid, "from_node_id": na, "to_node_id": nb, "from_point_no": pa,
            "to_point_no": pb, "walked": "from->to" if fwd else "to->from",
            "network": net, "subtype": sub, "size": size_text(dia, wid, hei),
            "diameter_mm": dia, "width_mm": wid, "height_mm": hei, "material": mat,
            "chainage_start_m": _r(chainage), "chainage_end_m": _r(chainage + l2d),
            "length_m": _r(l2d),
            "centre_start_m": _r(za), "centre_end_m": _r(zb),
            "top_start_m": _r(za + h), "top_end_m": _r(zb + h),
            "bottom_start_m": _r(za - h), "bottom_end_m": _r(zb - h),
            "ground_start_m": _r(ga), "ground_end_m": _r(gb),
            "cover_start_m": _r(ga - za - h) if ga is not None else None,
            "cover_end_m": _r(gb - zb - h) if gb is not None else None,
            "slope_permille": _r(1000 * (zb - za) / l2d, 2) if l2d else None,
        }
        out.append(seg)
        if not ground:
            ground.append({"chainage_m": _r(chainage), "elevation_m": _r(ga), "node_id": na,
                           "point_no": pa})
        chainage += l2d
        ground.append({"chainage_m": _r(chainage), "elevation_m": _r(gb), "node_id": nb,
                       "point_no": pb})
        geoms.append({"type": "Feature", "id": f"segment:{sid}", "geometry": json.loads(gj),
                      "properties": {"segment_id": sid, "chainage_start_m": seg[
                          "chainage_start_m"]}})
    return {
        "network": info[1], "start_segment_id": segment_id,
        "mode": ("against the flow" if reverse else "with the flow") if g.directed
        else "straight through", "stopped": why, "length_m": _r(chainage),
        "segments": out, "ground_line": {"source": "ground elevations of the survey points "
                                                   "along the chain", "points": ground},
        "features": {"type": "FeatureCollection", "features": geoms},
    }


async def qa_analysis(
    conn: AsyncConnection, network: str | None = None, max_items: int = 1000,
) -> dict[str, Any]:
    """Topology checks per network: sub-networks, dangling ends, flow loops, reversed slopes."""
    if network:
        nets = [network]
    else:
        nets = [r[0] for r in await _fetchall(
            conn, f"SELECT DISTINCT network FROM {SEG} ORDER BY network")]
    reports = []
    for net in nets:
        g = await network_graph(conn, net)
        if len(g.seg_id) == 0 and len(g.node_id) == 0:
            raise NotFound(f"network {net} has no pipes or points")
        reports.append(await _qa_network(conn, g, max_items))
    return {"networks": reports}


async def _qa_network(conn: AsyncConnection, g: NetworkGraph, max_items: int) -> dict[str, Any]:
    labels = node_components(g)
    indptr, _ = g.incidence
    degree = np.diff(indptr)
    comp_of_seg = labels[g.seg_from]
    uniq, seg_counts = np.unique(comp_of_seg, return_counts=True)
    lengths = np.bincount(np.searchsorted(uniq, comp_of_seg), weights=g.seg_len,
                          minlength=len(uniq))
    node_counts = np.bincount(np.searchsorted(uniq, labels[degree > 0]), minlength=len(uniq))
    order = np.argsort(-seg_counts, kind="stable")
    components = []
    for i in order[:max_items].tolist():
        members = np.flatnonzero(comp_of_seg == uniq[i])
        components.append({"segments": int(seg_counts[i]), "nodes": int(node_counts[i]),
                           "length_m": _r(lengths[i]),
                           "sample_segment_ids": g.seg_id[members[:5]].tolist()})
    dangling = [{"node_id": int(g.node_id[k]), "point_no": g.node_point_no[k],
                 "feature": g.node_feature[k] or None,
                 "appurtenance": g.node_appurtenance[k] or None, "reason": why,
                 "segment_id": int(g.seg_id[g.incident(k)[0]])}
                for k, why in dangling_ends(g)]
    out: dict[str, Any] = {
        "network": g.network,
        "gravity": g.directed,
        "segments": len(g.seg_id),
        "subnetworks": {"count": len(uniq), "sizes": [int(c) for c in seg_counts[order]][
            :max_items], "largest": components},
        "isolated_points": {"count": int((degree == 0).sum()),
                            "node_ids": g.node_id[degree == 0][:max_items].tolist()},
        "dangling_ends": {"count": len(dangling), "rule": "degree-1 points that are not "
                          f"outfalls or other purposeful ends ({', '.join(PURPOSEFUL_ENDS)}); "
                          "in gravity networks a head chamber (all pipes flow away) is "
                          "purposeful too", "items": dangling[:max_items]},
    }
    if g.directed:
        loops = []
        for group in directed_cycles(g):
            members = set(group)
            segs = [int(g.seg_id[s]) for s in np.flatnonzero(g.seg_flow != 0).tolist()
                    if g.upstream_node(s) in members and g.downstream_node(s) in members]
            loops.append({"node_ids": g.node_id[group].tolist(), "segment_ids": segs})
        slopes = await reversed_slopes(conn, g.network)
        out["flow_loops"] = {"count": len(loops), "items": loops[:max_items]}
        out["reversed_slopes"] = {"count": len(slopes), "tolerance_m": UPHILL_TOLERANCE_M,
                                  "items": slopes[:max_items]}
    return out


def _pipe_json(seg_id: int, p: PipeSpec, owner: str | None, dataset: str | None) -> dict:
    return {"segment_id": seg_id, "network": p.network, "subtype": p.subtype,
            "item": p.item_name, "size": size_text(p.diameter_mm, p.width_mm, p.height_mm),
            "pressure_class": p.pressure_class, "burial": p.burial, "owner": owner,
            "dataset": dataset}


@lru_cache(maxsize=4096)
def _rule_for(kind: str, p: PipeSpec, q: PipeSpec) -> RuleMatch | None:
    return clearance_rule(kind, p, q)


async def clearance_analysis(
    conn: AsyncConnection, *, area: bytes | None = None, networks: Sequence[str] | None = None,
    buildings: bool = True, max_results: int = 1000,
) -> dict[str, Any]:
    """Pipe pairs of different systems, and pipes and buildings, closer than GB 50289-2016
    allows: horizontally between outer walls where the pipes do not cross, vertically between
    outer walls at crossings."""
    has_area, has_nets = area is not None, bool(networks)
    params: dict[str, Any] = {"area": area, "networks": list(networks or []),
                              "limit": MAX_CLEARANCE_CANDIDATES}
    half_sql = f"""SELECT coalesce(max(GREATEST({half_w('a')}, {half_h('a')})), 0) FROM {SEG} a
        {f"WHERE ST_DWithin(a.geom, {_geom('area')}, 50)" if has_area else ""}"""
    max_half = float((await _fetchall(conn, half_sql, params))[0][0] or 0.0)
    pipe_reach = max(max_rule_value("horizontal", False), max_rule_value("vertical", False))
    params["search"] = pipe_reach + 2 * max_half + 0.001
    violations: list[dict[str, Any]] = []
    no_rule: dict[tuple[str, str, str], int] = {}
    checked = {"pipe_pairs": 0, "pipe_building_pairs": 0}
    rows = await _fetchall_nojit(conn, clearance_pairs_sql(has_area, has_nets), params)
    truncated = len(rows) >= MAX_CLEARANCE_CANDIDATES
    for r in rows:
        a_id, p, a_owner, a_ds = r[0], spec_from(r[1:8]), r[8], r[9]
        b_id, q, b_owner, b_ds = r[10], spec_from(r[11:18]), r[18], r[19]
        d, aw, ah, bw, bh, crosses, zs, closest, z_close = r[20:29]
        checked["pipe_pairs"] += 1
        if crosses and zs:
            kind = "vertical"
            best = min(zs, key=lambda z: abs(z[0] - z[1]))
            measured = abs(best[0] - best[1]) - ah - bh
            where = to_lonlat(best[2], best[3])
            extra = {"elevation_a_m": _r(best[0]), "elevation_b_m": _r(best[1])}
        elif z_close is not None and None not in z_close:
            # the outlines overlap in plan though the centre lines do not meet (one pipe ends
            # right at the other): one passes over the other, a vertical question
            kind = "vertical"
            measured = abs(z_close[0] - z_close[1]) - ah - bh
            where = _wkb_lonlat(closest)
            extra = {"elevation_a_m": _r(z_close[0]), "elevation_b_m": _r(z_close[1]),
                     "centre_distance_m": _r(d)}
        else:
            kind = "horizontal"
            measured = d - aw - bw
            where = _wkb_lonlat(closest)
            extra = {"centre_distance_m": _r(d)}
        match = _rule_for(kind, p, q)
        if match is None:
            key = (kind, *sorted((p.item_name, q.item_name)))
            no_rule[key] = no_rule.get(key, 0) + 1
            continue
        if measured < match.required_m - 1e-6:
            violations.append({
                "type": kind, "pair": "pipe-pipe",
                "a": _pipe_json(a_id, p, a_owner, a_ds), "b": _pipe_json(b_id, q, b_owner, b_ds),
                "measured_m": _r(measured), "required_m": match.required_m,
                "shortfall_m": _r(match.required_m - measured), **extra,
                "rule": match.rule.as_json(), "rows_considered": sorted(
                    {x.row for x in match.considered}),
                "assumptions": match.assumptions, "location": where})
    if buildings:
        params["search"] = max_rule_value("horizontal", True) + max_half + 0.001
        rows = await _fetchall_nojit(conn, clearance_buildings_sql(has_area, has_nets), params)
        truncated = truncated or len(rows) >= MAX_CLEARANCE_CANDIDATES
        house = PipeSpec(BUILDING)
        for r in rows:
            a_id, p, a_owner, a_ds = r[0], spec_from(r[1:8]), r[8], r[9]
            b_id, code, name, d, aw, closest = r[10:16]
            checked["pipe_building_pairs"] += 1
            match = _rule_for("horizontal", p, house)
            if match is None:
                key = ("horizontal", *sorted((p.item_name, BUILDING_ITEM)))
                no_rule[key] = no_rule.get(key, 0) + 1
                continue
            measured = d - aw
            if measured < match.required_m - 1e-6:
                violations.append({
                    "type": "horizontal", "pair": "pipe-building",
                    "a": _pipe_json(a_id, p, a_owner, a_ds),
                    "b": {"building_id": b_id, "building_code": code, "name": name,
                          "item": BUILDING_ITEM},
                    "measured_m": _r(measured), "required_m": match.required_m,
                    "shortfall_m": _r(match.required_m - measured),
                    "centre_distance_m": _r(d), "rule": match.rule.as_json(),
                    "rows_considered": sorted({x.row for x in match.considered}),
                    "assumptions": match.assumptions, "location": _wkb_lonlat(closest)})
    violations.sort(key=lambda v: (-v["shortfall_m"], v["a"]["segment_id"]))
    by_status: dict[str, int] = {}
    for v in violations:
        st = "unverified" if v["rule"]["unverified"] else (
            "verified" if v["rule"]["verified"] else "other")
        by_status[st] = by_status.get(st, 0) + 1
    return {
        "standard": "GB 50289-2016 (tables 4.1.9 horizontal, 4.1.14 vertical), as shipped in "
                    "cimtwin/reference/gb50289_2016_clearances.csv",
        "method": "candidate pairs from the spatial index, then exact distances: horizontal = "
                  "2D distance between centre lines minus both half widths (pipes whose "
                  "outlines do not meet in plan; buildings: distance to the footprint minus "
                  "the pipe's half width); vertical = elevation difference of the centre lines "
                  "at the crossing (or, where the outlines overlap in plan without the centre "
                  "lines crossing, at the closest points) minus both half heights; nominal "
                  "sizes stand for outer walls",
        "violations": violations[:max_results],
        "counts": {"violations": len(violations),
                   "horizontal": sum(v["type"] == "horizontal" for v in violations),
                   "vertical": sum(v["type"] == "vertical" for v in violations),
                   "by_rule_status": by_status, **checked},
        "no_rule": [{"type": k[0], "item_a": k[1], "item_b": k[2], "pairs": n,
                     "note": "the shipped GB 50289 table has no row for this pair: not checked"}
                    for k, n in sorted(no_rule.items())],
        "truncated": truncated or len(violations) > max_results,
    }


RISK_FIRST = ("RQ", "DL")


async def excavation_analysis(
    conn: AsyncConnection, *, area: bytes, depth_m: float, max_results: int = 5000,
) -> dict[str, Any]:
    """Pipes and points an excavation of ``depth_m`` below ground inside ``area`` reaches."""
    params = {"area": area, "depth": depth_m}
    pipes = []
    for r in await _fetchall_nojit(conn, EXCAVATION_PIPES_SQL, params):
        (sid, ds, net, sub, owner, dia, wid, hei, mat, pres, volt, burial, ref, top_depth,
         top_z, g0, g1, inside_len, gj) = r
        pipes.append({
            "segment_id": sid, "dataset": ds, "network": net, "subtype": sub, "owner": owner,
            "size": size_text(dia, wid, hei), "diameter_mm": dia, "width_mm": wid,
            "height_mm": hei, "material": mat, "pressure_class": pres, "voltage_kv": volt,
            "burial": burial, "top_depth_m": _r(top_depth), "top_elevation_m": _r(top_z),
            "reach_m": _r(depth_m - top_depth), "length_inside_m": _r(inside_len),
            "priority": 0 if net in RISK_FIRST else 1,
            "geometry": json.loads(gj) if gj else None})
    pipes.sort(key=lambda p: (p["priority"], p["top_depth_m"], p["segment_id"]))
    nodes = []
    for r in await _fetchall_nojit(conn, EXCAVATION_NODES_SQL, params):
        nid, ds, net, sub, no, feat, app, ground, well, top_depth, owner, gj = r
        chamber = well is not None or bool(app)
        depth = 0.0 if chamber else top_depth
        nodes.append({
            "node_id": nid, "dataset": ds, "network": net, "subtype": sub, "point_no": no,
            "feature": feat, "appurtenance": app, "owner": owner,
            "ground_elevation_m": _r(ground), "well_depth_m": well,
            "top_depth_m": _r(depth), "chamber": chamber,
            "priority": 0 if net in RISK_FIRST else 1, "point": json.loads(gj)["coordinates"]})
    nodes.sort(key=lambda n: (n["priority"], n["top_depth_m"] if n["top_depth_m"] is not None
                              else math.inf, n["node_id"]))
    summary: dict[str, dict[str, int]] = {}
    for p in pipes:
        summary.setdefault(p["network"], {"pipes": 0, "nodes": 0})["pipes"] += 1
    for n in nodes:
        summary.setdefault(n["network"], {"pipes": 0, "nodes": 0})["nodes"] += 1
    return {
        "depth_m": depth_m,
        "rule": "a pipe is hit when its top (centre elevation + half height) is above the "
                "excavation bottom (ground - depth) anywhere inside the polygon; ground along a "
                "pipe is linear between its end points' ground elevations. Points: chambers "
                "(wells, valves, appurtenances) start at the ground and are always hit; other "
                "points when a pipe meeting them is. Order: gas (RQ) and power (DL) first, then "
                "shallower first",
        "summary": summary,
        "pipes": pipes[:max_results], "nodes": nodes[:max_results],
        "truncated": len(pipes) > max_results or len(nodes) > max_results,
    }


async def cross_section_analysis(
    conn: AsyncConnection, *, line: bytes, length_m: float, max_results: int = 2000,
    sample_step_m: float = 2.0, max_samples: int = 201,
) -> dict[str, Any]:
    """Every pipe the section line crosses, and the ground along it."""
    params = {"line": line, "limit": max_results + 1}
    pipes = []
    for r in await _fetchall_nojit(conn, CROSS_SECTION_SQL, params):
        (sid, ds, net, sub, owner, mat, dia, wid, hei, pres, flow, ref, offset, zc, ground, h,
         gj) = r
        pipes.append({
            "segment_id": sid, "dataset": ds, "network": net, "subtype": sub, "owner": owner,
            "material": mat, "size": size_text(dia, wid, hei), "diameter_mm": dia,
            "width_mm": wid, "height_mm": hei, "shape": "round" if dia else (
                "rectangular" if wid and hei else None), "pressure_class": pres,
            "offset_m": _r(offset), "centre_elevation_m": _r(zc),
            "top_elevation_m": _r(zc + h), "bottom_elevation_m": _r(zc - h),
            "ground_elevation_m": _r(ground),
            "depth_m": _r(ground - zc - h) if ground is not None else None,
            "point": json.loads(gj)["coordinates"][:2]})
    samples = max(2, min(max_samples, int(math.ceil(length_m / sample_step_m)) + 1))
    last = samples - 1
    near: dict[int, list[tuple[float, float]]] = {}
    for i, z, d in await _fetchall_nojit(conn, GROUND_SAMPLES_SQL,
                                   {"line": line, "last": last, "k": IDW_NEIGHBOURS}):
        near.setdefault(i, []).append((z, d))
    ground = [{"offset_m": _r(length_m * i / last), "elevation_m": _r(idw(near.get(i, [])))}
              for i in range(samples)]
    return {
        "length_m": _r(length_m),
        "pipes": pipes[:max_results],
        "truncated": len(pipes) > max_results,
        "ground": {
            "method": f"inverse distance weighting (power {IDW_POWER:g}) of the ground "
                      f"elevations of the {IDW_NEIGHBOURS} nearest survey points within "
                      f"{IDW_MAX_DISTANCE_M:g} m of each sample",
            "samples": ground},
        "notes": ["offset_m is measured along the section from its first point",
                  "a pipe's ground_elevation_m and depth_m come from the pipe's own end "
                  "points (linear along the pipe); depth_m is from the ground to the pipe top"],
    }

"""The graph model of a pipeline network and its per-process cache.

A network (CJJ 61 major code: JS, PS, RQ ...) is a graph of survey points (nodes)
and pipes (segments); every dataset of that code is in the same graph (datasets share no nodes,
so they never connect). Graph work runs in Python on numpy arrays, built once per network and
kept per process (:func:`network_graph`); one cheap query per request tells whether the tables
changed since (:data:`FINGERPRINT_SQL`).

The valve segments (the components left when every valve is closed, see :mod:`.isolation`)
are built with the graph and kept with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from psycopg import AsyncConnection

from cimtwin.spatial.fingerprint_cache import FingerprintCache
from cimtwin.spatial.pipelines.shared import (
    BATCH,
    NODE,
    SEG,
    VALVE,
    fetch_all,
)

log = logging.getLogger(__name__)

#: networks whose pipes carry water by gravity along ``flow_direction`` (the importer's rule)
GRAVITY_NETWORKS = frozenset({"PS"})


VALVE_MARK = "阀"


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
    # lists when built here; read-only columns when mapped from another worker's build
    node_feature: Sequence[str]
    node_appurtenance: Sequence[str]
    node_point_no: Sequence[str]
    valves: Sequence[Valve]
    #: seconds since the graph was built, when it was built by another process
    age_s: float = 0.0

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_rows(
        cls,
        network: str,
        segments: Sequence[tuple],
        nodes: Sequence[tuple],
        layer_valves: Sequence[tuple] = (),
    ) -> NetworkGraph:
        """``segments``: (id, from_node_id, to_node_id, length_m, flow_direction, size_mm);
        ``nodes``: (id, feature, appurtenance, valve_state, point_no, x, y);
        ``layer_valves``: (pipeline_valve.id, segment_id, node_id, state, valve_no)."""
        seg = sorted(segments, key=lambda r: r[0])
        seg_id = np.fromiter((r[0] for r in seg), dtype=np.int64, count=len(seg))
        ends = np.array([(r[1], r[2]) for r in seg], dtype=np.int64).reshape(-1, 2)
        node_rows = {r[0]: r for r in nodes}
        node_id = np.unique(
            np.concatenate(
                [ends.ravel(), np.fromiter(node_rows, dtype=np.int64, count=len(node_rows))]
            )
        )
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
                xy[i] = (r[5] if r[5] is not None else np.nan, r[6] if r[6] is not None else np.nan)
        g = cls(
            network=network,
            seg_id=seg_id,
            seg_from=np.searchsorted(node_id, ends[:, 0]),
            seg_to=np.searchsorted(node_id, ends[:, 1]),
            seg_len=np.array([float(r[3] or 0.0) for r in seg]),
            seg_flow=np.array([int(r[4] or 0) for r in seg], dtype=np.int8),
            seg_size=np.array([float(r[5] or 0.0) for r in seg]),
            node_id=node_id,
            node_xy=xy,
            node_feature=feature,
            node_appurtenance=appurtenance,
            node_point_no=point_no,
            valves=[],
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
                for s in incident[indptr[k] : indptr[k + 1]].tolist():
                    valves.append(
                        Valve(s, k, f"node:{int(node_id[k])}", point_no[k], state[k] or "open")
                    )
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
        return segs[indptr[k] : indptr[k + 1]]

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
        return _ValveSegments(
            labels,
            order,
            labels[order],
            touch_label[t_order],
            touch_valve[t_order],
            labels[vs] if len(vs) else vs,
            labels[vn] if len(vn) else vn,
        )

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

#: this process's graphs, one per (server, database, network)
GRAPHS = FingerprintCache(
    FINGERPRINT_SQL, GRAPH_MAX_AGE_S, MAX_CACHED_GRAPHS, pass_fingerprint=True
)


def clear_graph_cache() -> None:
    GRAPHS.clear()


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
    return await GRAPHS.get(conn, key, lambda fp: _shared_graph(conn, key, fp, network))


async def _shared_graph(
    conn: AsyncConnection, key: tuple, fingerprint: tuple, network: str
) -> NetworkGraph:
    """The graph as another worker of this host stored it (:mod:`.graph_store`), else built
    here and stored for them; built privately when there is nowhere to store it."""
    from cimtwin.spatial.pipelines.graph_store import GraphStore, default_dir

    root = default_dir()
    if root is None:
        return await _load_graph(conn, network)
    store = GraphStore(root, GRAPH_MAX_AGE_S)
    found = await asyncio.to_thread(store.load, key, fingerprint)
    if found is not None:
        return found
    try:
        lock = await asyncio.to_thread(store.lock, key)
    except OSError as exc:
        log.warning("pipeline graphs are not shared (%s): %s", root, exc)
        return await _load_graph(conn, network)
    try:
        found = await asyncio.to_thread(store.load, key, fingerprint)
        if found is not None:  # built by the worker that held the lock
            return found
        graph = await _load_graph(conn, network)
        try:
            await asyncio.to_thread(store.save, key, fingerprint, graph)
        except OSError as exc:
            log.warning("pipeline graph not stored in %s: %s", root, exc)
            return graph
        # map the stored copy here too, so this worker's private arrays can go
        return await asyncio.to_thread(store.load, key, fingerprint) or graph
    finally:
        await asyncio.to_thread(store.unlock, lock)


async def _load_graph(conn: AsyncConnection, network: str) -> NetworkGraph:
    segments = await fetch_all(conn, GRAPH_SEGMENTS_SQL, (network,))
    nodes = await fetch_all(conn, GRAPH_NODES_SQL, (network,))
    known = {r[0] for r in nodes}
    missing = sorted({x for r in segments for x in (r[1], r[2])} - known)
    if missing:  # pipes ending on a point filed under another network
        nodes += await fetch_all(conn, GRAPH_NODES_BY_ID_SQL, (missing,))
    valves = await fetch_all(conn, GRAPH_VALVES_SQL, (network,))
    return await asyncio.to_thread(_build_graph, network, segments, nodes, valves)

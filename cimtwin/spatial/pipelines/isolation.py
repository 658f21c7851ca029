"""Valve isolation of a burst pipe, and the buildings that lose supply.

A valve sits on a pipe next to one of its end nodes (WNTR's valve layer: a
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

import json
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from psycopg import AsyncConnection

from cimtwin.errors import NotFoundError
from cimtwin.spatial.pipelines.graph import NetworkGraph, network_graph
from cimtwin.spatial.pipelines.lookup import (
    resolve_segment,
    segment_features,
)
from cimtwin.spatial.pipelines.shared import (
    BUILDINGS,
    MAX_IDS,
    NODE,
    SEG,
    VALVE,
    fetch_all,
    fetch_all_nojit,
    lonlat,
)

#: customers: a building is served by the nearest service pipe of the network within this
#: distance of its footprint (m)
SERVICE_RADIUS_M = 100.0
#: subtypes that carry no service connections (raw water, transmission mains)
NON_SERVICE_SUBTYPES = ("JY", "SS")


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


def isolate(g: NetworkGraph, seg: int, failed: Iterable[str] = ()) -> Isolation:
    """The valve segment of segment index ``seg`` and the valves that isolate it, growing past
    every failed valve (refs ``valve:<id>`` / ``node:<id>``) to the next ring."""
    vs = g.valve_segments
    n = len(g.node_id)
    failed_refs = list(dict.fromkeys(failed))
    unknown = [r for r in failed_refs if r not in g.valve_refs]
    if unknown:
        raise NotFoundError(
            f"not a valve of network {g.network}: {', '.join(unknown)}; valves are named "
            "valve:<pipeline_valve id> or node:<survey valve point id>"
        )
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
        segments=np.sort(members[members >= n] - n),
        nodes=np.sort(members[members < n]),
        valves=sorted(closing.values(), key=lambda c: (c.ring, c.ref)),
        failed_used=[r for r in failed_refs if r in used],
        failed_unused=[r for r in failed_refs if r not in used],
        rings=max(depth.values()),
    )


# --- customers ---------------------------------------------------------------------------------

SERVED_BUILDINGS_SQL = f"""
WITH iso AS (SELECT id, geom FROM {SEG} WHERE id = ANY(%(ids)s)),
cand AS (
    SELECT DISTINCT b.id FROM iso JOIN {BUILDINGS} b ON ST_DWithin(b.footprint, iso.geom, %(r)s)
)
SELECT b.id, b.building_code, b.name, b.address, b.use, b.residents, near.id, near.d,
       {lonlat("ST_PointOnSurface(b.footprint)")}
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
    conn: AsyncConnection,
    network: str,
    seg_ids: Sequence[int],
    radius_m: float = SERVICE_RADIUS_M,
) -> list[dict[str, Any]]:
    """Buildings whose nearest service pipe of ``network`` (within ``radius_m`` of the
    footprint; not raw-water or transmission mains) is one of ``seg_ids``."""
    if not seg_ids:
        return []
    rows = await fetch_all_nojit(
        conn,
        SERVED_BUILDINGS_SQL,
        {
            "ids": list(seg_ids),
            "r": radius_m,
            "network": network,
            "excluded": list(NON_SERVICE_SUBTYPES),
        },
    )
    return [
        {
            "building_id": r[0],
            "building_code": r[1],
            "name": r[2],
            "address": r[3],
            "use": r[4],
            "residents": r[5],
            "served_by_segment": r[6],
            "distance_m": round(r[7], 2),
            "point": json.loads(r[8]),
        }
        for r in rows
    ]


def _valve_split(refs: Iterable[str]) -> tuple[list[int], list[int]]:
    layer: list[int] = []
    points: list[int] = []
    for r in refs:
        kind, _, num = r.partition(":")
        (layer if kind == "valve" else points).append(int(num))
    return layer, points


async def valve_features(
    conn: AsyncConnection,
    valves: Sequence[ValveToClose],
    g: NetworkGraph,
) -> dict[str, list[float] | None]:
    """Position (lon/lat) of each valve ref."""
    layer, points = _valve_split(v.ref for v in valves)
    out: dict[str, list[float] | None] = {}
    if layer:
        for vid, gj in await fetch_all(
            conn, f"SELECT id, {lonlat('geom')} FROM {VALVE} WHERE id = ANY(%s)", (layer,)
        ):
            out[f"valve:{vid}"] = json.loads(gj)["coordinates"][:2]
    if points:
        for nid, gj in await fetch_all(
            conn, f"SELECT id, {lonlat('geom')} FROM {NODE} WHERE id = ANY(%s)", (points,)
        ):
            out[f"node:{nid}"] = json.loads(gj)["coordinates"][:2]
    return out


async def isolation_analysis(
    conn: AsyncConnection,
    *,
    segment_id: int | None = None,
    point: tuple[float, float] | None = None,
    tolerance_m: float = 10.0,
    network: str | None = None,
    dataset: str | None = None,
    failed_valves: Sequence[str] = (),
    service_radius_m: float = SERVICE_RADIUS_M,
    max_features: int = 2000,
) -> dict[str, Any]:
    """Valves to close for a burst pipe, what they isolate and who loses supply."""
    seg_id, net, snap = await resolve_segment(
        conn,
        segment_id=segment_id,
        point=point,
        tolerance_m=tolerance_m,
        network=network,
        dataset=dataset,
    )
    g = await network_graph(conn, net)
    s = g.seg_index(seg_id)
    if s is None:  # written between the two queries
        raise NotFoundError(f"segment {seg_id} does not exist")
    iso = isolate(g, s, failed_valves)
    seg_ids = g.seg_id[iso.segments].tolist()
    node_ids = g.node_id[iso.nodes].tolist()
    length = float(g.seg_len[iso.segments].sum())
    buildings = await served_buildings(conn, net, seg_ids, service_radius_m)
    where = await valve_features(conn, iso.valves, g)
    valves: list[dict[str, Any]] = []
    for v in iso.valves:
        kind, _, num = v.ref.partition(":")
        valves.append(
            {
                "valve": v.ref,
                "kind": "valve_layer" if kind == "valve" else "valve_point",
                "id": int(num),
                "valve_no": v.valve_no,
                "state": v.state,
                "action": "already closed" if v.state == "closed" else "close",
                "node_id": int(g.node_id[v.node]),
                "segment_ids": sorted(int(g.seg_id[x]) for x in v.segments),
                "ring": v.ring,
                "point": where.get(v.ref),
            }
        )
    shown = seg_ids[:max_features]
    features = await segment_features(conn, shown, {i: {"role": "isolated"} for i in shown})
    for valve in valves:
        if valve["point"]:
            props = {k: x for k, x in valve.items() if k not in ("point", "kind")}
            features.append(
                {
                    "type": "Feature",
                    "id": valve["valve"],
                    "geometry": {"type": "Point", "coordinates": valve["point"]},
                    "properties": {"kind": "valve", "valve_kind": valve["kind"], **props},
                }
            )
    residents = sum(b["residents"] or 0 for b in buildings)
    return {
        "network": net,
        "burst": {"segment_id": seg_id, "snapped": snap},
        "valves": valves,
        "failed_valves": {"used": iso.failed_used, "not_on_boundary": iso.failed_unused},
        "rings": iso.rings,
        "isolated_segments": {
            "count": len(seg_ids),
            "length_m": round(length, 3),
            "ids": seg_ids[:MAX_IDS],
        },
        "affected_nodes": {"count": len(node_ids), "ids": node_ids[:MAX_IDS]},
        "customers": {
            "rule": f"a building is served by the nearest pipe of network {net} within "
            f"{service_radius_m:g} m of its footprint (transmission and raw-water "
            f"mains {', '.join(NON_SERVICE_SUBTYPES)} excluded); it is affected when "
            "that pipe is isolated",
            "buildings": len(buildings),
            "residents": residents,
            "items": buildings,
        },
        "features": {"type": "FeatureCollection", "features": features},
        "truncated": len(seg_ids) > max_features,
    }

"""The dispatch context around one incident: the responsible grid and officer, hydrants by
distance along the water network, the valves to close for a burst (by the pipelines package's
isolation, as WNTR's valve segments, or a local walk when the pipe is not in its graph), gas and
power pipes, buildings and residents nearby."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from psycopg import AsyncConnection
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from cimtwin.spatial.incident_queries import POINT, grid_at
from cimtwin.spatial.pipelines.graph import network_graph
from cimtwin.spatial.pipelines.isolation import isolate
from cimtwin.spatial.sql_toolkit import T, geojson_text, one, rows

HYDRANT = "消防栓"
VALVE = "阀门"
WATER = "JS"
#: an incident this close to a water pipe gets network distances to hydrants
SNAP_M = 50.0
#: a burst is put on the nearest water pipe within this distance
BURST_SNAP_M = 100.0
#: pipes loaded around a burst for the isolation search
ISOLATION_REACH_M = 2000.0
ISOLATION_MAX_SEGMENTS = 20_000


async def responsible_grid(
    conn: AsyncConnection, grid_code: str | None, x: float, y: float
) -> dict[str, Any] | None:
    """The work grid that dispatches for the incident: its recorded grid, else where it is."""
    code = grid_code or await grid_at(conn, x, y)
    if code is None:
        return None
    row = await one(
        conn,
        f"""
        SELECT g.code, g.name, g.officer, c.code, c.name, s.code, s.name
        FROM {T.work_grid} g LEFT JOIN {T.community} c ON c.code = g.community_code
        LEFT JOIN {T.street} s ON s.code = c.street_code WHERE g.code = %s""",
        (code,),
    )
    if row is None:
        return {"code": code, "name": None, "officer": None, "community": None, "street": None}
    return {
        "code": row[0],
        "name": row[1],
        "officer": row[2],
        "community": {"code": row[3], "name": row[4]} if row[3] else None,
        "street": {"code": row[5], "name": row[6]} if row[5] else None,
    }


async def nearest_segment(
    conn: AsyncConnection, x: float, y: float, network: str, within: float
) -> dict[str, Any] | None:
    """The nearest pipe of a network within ``within`` m, and where the point projects on it."""
    row = await one(
        conn,
        f"""
        SELECT s.id, s.dataset, s.from_node_id, s.to_node_id, s.length_m,
               ST_Distance(s.geom, {POINT}),
               ST_LineLocatePoint(ST_Force2D(s.geom), {POINT}), s.diameter_mm, s.subtype
        FROM {T.pipeline_segment} s
        WHERE s.network = %(net)s AND ST_DWithin(s.geom, {POINT}, %(within)s)
        ORDER BY s.geom <-> {POINT}, s.id LIMIT 1""",
        {"x": x, "y": y, "net": network, "within": within},
    )
    if row is None:
        return None
    return {
        "id": row[0],
        "dataset": row[1],
        "from_node_id": row[2],
        "to_node_id": row[3],
        "length_m": row[4],
        "offset_m": row[5],
        "fraction": row[6],
        "diameter_mm": row[7],
        "subtype": row[8],
    }


def network_distances(
    edges: list[tuple[int, int, float]], start: dict[str, Any], limit: float
) -> dict[int, float]:
    """Shortest distances along ``edges`` (node, node, length) from a point on a pipe, to
    every node within ``limit`` (Dijkstra over a sparse graph with scipy)."""
    a, b = start["from_node_id"], start["to_node_id"]
    f = min(max(float(start["fraction"] or 0.0), 0.0), 1.0)
    length = float(start["length_m"] or 0.0)
    seeds = {a: f * length, b: (1 - f) * length}
    nodes = sorted({n for e in edges for n in e[:2]} | set(seeds))
    index = {n: i for i, n in enumerate(nodes)}
    src = len(nodes)  # the point on the pipe
    u = [index[e[0]] for e in edges] + [src] * len(seeds)
    v = [index[e[1]] for e in edges] + [index[n] for n in seeds]
    # zero-length pipes must stay edges: an explicit zero is dropped by sparse matrices
    w = [max(float(e[2] or 0.0), 1e-9) for e in edges] + [max(d, 1e-9) for d in seeds.values()]
    graph = coo_matrix((w, (u, v)), shape=(src + 1, src + 1)).tocsr()
    dist = dijkstra(graph, directed=False, indices=src, limit=limit)
    return {n: float(dist[i]) for n, i in index.items() if np.isfinite(dist[i])}


async def hydrants(
    conn: AsyncConnection,
    x: float,
    y: float,
    radius: float,
    count: int,
    water: dict[str, Any] | None | Literal[False] = False,
) -> dict[str, Any]:
    """The nearest hydrants within ``radius``: along the water network from the nearest water
    pipe when the incident is within :data:`SNAP_M` of one, else in a straight line.

    ``water``: the nearest water pipe (:func:`nearest_segment`) when the caller has it."""
    p = {"x": x, "y": y, "r": radius, "h": HYDRANT, "net": WATER}
    candidates = await rows(
        conn,
        f"""
        SELECT n.id, n.point_no, n.dataset, ST_Distance(n.geom, {POINT}), ST_X(n.geom),
               ST_Y(n.geom), {geojson_text("n.geom")}::json
        FROM {T.pipeline_node} n
        WHERE n.appurtenance = %(h)s AND ST_DWithin(n.geom, {POINT}, %(r)s)""",
        p,
    )
    if water is False:
        water = await nearest_segment(conn, x, y, WATER, min(SNAP_M, radius))
    snap = water if water and water["offset_m"] <= min(SNAP_M, radius) else None
    method = "straight_line"
    along: dict[int, float] = {}
    if snap is not None and candidates:
        edges = await rows(
            conn,
            f"""
            SELECT s.from_node_id, s.to_node_id, s.length_m FROM {T.pipeline_segment} s
            WHERE s.network = %(net)s AND s.dataset = %(ds)s
              AND ST_DWithin(s.geom, {POINT}, %(r)s)""",
            {**p, "ds": snap["dataset"]},
        )
        along = network_distances(
            [tuple(e) for e in edges], snap, max(radius - snap["offset_m"], 0.0)
        )
        method = "network"
    items = []
    for c in candidates:
        item = {"id": c[0], "point_no": c[1], "straight_line_m": round(c[3], 2), "geometry": c[6]}
        if snap is not None and method == "network":
            if c[0] not in along:
                continue
            item["network_m"] = round(along[c[0]], 2)
            item["distance_m"] = round(snap["offset_m"] + along[c[0]], 2)
        else:
            item["distance_m"] = item["straight_line_m"]
        if item["distance_m"] <= radius:
            items.append(item)
    items.sort(key=lambda i: (i["distance_m"], i["id"]))
    out: dict[str, Any] = {
        "method": method,
        "radius_m": radius,
        "items": items[:count],
        "found": len(items),
    }
    if snap is not None and method == "network":
        out["explanation"] = (
            f"distance = {snap['offset_m']:.1f} m from the incident to water pipe "
            f"{snap['id']}, then along the water network (Dijkstra over pipe lengths); "
            "hydrants not reachable that way within the radius are left out"
        )
        out["snapped_to_segment"] = snap["id"]
        out["offset_m"] = round(snap["offset_m"], 2)
    else:
        out["explanation"] = (
            f"no water pipe within {min(SNAP_M, radius):.0f} m of the "
            "incident: straight-line distances"
        )
    return out


@dataclass
class Isolation:
    segment: dict[str, Any]
    valves: list[dict[str, Any]]
    segments: list[int]
    length_m: float
    complete: bool
    method: str = "simple"


async def simple_isolation(
    conn: AsyncConnection, x: float, y: float, water: dict[str, Any] | None | Literal[False] = False
) -> Isolation | None:
    """Valves to close to isolate the water pipe nearest (x, y), found by walking the water
    network from that pipe until valves stop the walk: valve points (附属物 阀门) close every
    pipe that meets them, valves on pipes (pipeline_valve) close their pipe at their node,
    valve links (EPANET) close themselves. None when no water pipe is within
    :data:`BURST_SNAP_M` (``water``: the nearest water pipe when the caller has it). Pipes are
    loaded around the burst, 500 m first, then
    :data:`ISOLATION_REACH_M` when the walk reaches the edge of what was loaded."""
    if water is False:
        water = await nearest_segment(conn, x, y, WATER, BURST_SNAP_M)
    burst = water if water and water["offset_m"] <= BURST_SNAP_M else None
    if burst is None:
        return None
    for reach in (500.0, ISOLATION_REACH_M):
        found = await _walk(conn, x, y, burst, reach)
        if found.complete:
            break
    return found


async def _walk(
    conn: AsyncConnection, x: float, y: float, burst: dict[str, Any], reach: float
) -> Isolation:
    p = {"x": x, "y": y, "net": WATER, "ds": burst["dataset"], "reach": reach}
    segs = await rows(
        conn,
        f"""
        SELECT s.id, s.from_node_id, s.to_node_id, s.length_m, s.link_type,
               ST_DFullyWithin(s.geom, {POINT}, %(reach)s)
        FROM {T.pipeline_segment} s
        WHERE s.network = %(net)s AND s.dataset = %(ds)s
          AND ST_DWithin(s.geom, {POINT}, %(reach)s)""",
        p,
    )
    valve_nodes = {
        r[0]: r[1:]
        for r in await rows(
            conn,
            f"""
        SELECT n.id, n.point_no, n.valve_state FROM {T.pipeline_node} n
        WHERE n.network = %(net)s AND n.dataset = %(ds)s AND n.appurtenance = %(v)s
          AND ST_DWithin(n.geom, {POINT}, %(reach)s)""",
            {**p, "v": VALVE},
        )
    }
    seg_valves = {
        (r[1], r[2]): (r[0], r[3], r[4])
        for r in await rows(
            conn,
            f"""
        SELECT v.id, v.segment_id, v.node_id, v.valve_no, v.state
        FROM {T.pipeline_valve} v JOIN {T.pipeline_segment} s
            ON (s.county_code, s.batch_id, s.id) = (v.county_code, v.network_batch_id, v.segment_id)
        WHERE s.network = %(net)s AND s.dataset = %(ds)s
          AND ST_DWithin(s.geom, {POINT}, %(reach)s)""",
            p,
        )
    }
    info = {r[0]: r for r in segs}
    at_node: dict[int, list[int]] = defaultdict(list)
    for r in segs:
        at_node[r[1]].append(r[0])
        at_node[r[2]].append(r[0])
    start = burst["id"]
    seen, stack, valves = {start}, [start], {}
    complete = True
    while stack:
        sid = stack.pop()
        sid_row = info.get(sid)
        if sid_row is None:
            continue
        if not sid_row[5]:
            complete = False  # the walk reached the edge of what was loaded
        for node in (sid_row[1], sid_row[2]):
            if (sid, node) in seg_valves:
                vid, no, state = seg_valves[(sid, node)]
                valves[("pipe_valve", vid)] = {
                    "kind": "valve_on_pipe",
                    "id": vid,
                    "valve_no": no,
                    "state": state,
                    "node_id": node,
                    "segment_id": sid,
                }
                continue
            if node in valve_nodes:
                no, state = valve_nodes[node]
                valves[("node", node)] = {
                    "kind": "valve_point",
                    "id": node,
                    "point_no": no,
                    "state": state or "open",
                    "node_id": node,
                }
                continue
            for other in at_node[node]:
                if other in seen:
                    continue
                if (other, node) in seg_valves:
                    vid, no, state = seg_valves[(other, node)]
                    valves[("pipe_valve", vid)] = {
                        "kind": "valve_on_pipe",
                        "id": vid,
                        "valve_no": no,
                        "state": state,
                        "node_id": node,
                        "segment_id": other,
                    }
                    continue
                if info[other][4] == "valve":
                    seen.add(other)
                    valves[("link", other)] = {
                        "kind": "valve_link",
                        "id": other,
                        "state": "open",
                        "segment_id": other,
                    }
                    continue
                seen.add(other)
                stack.append(other)
                if len(seen) > ISOLATION_MAX_SEGMENTS:
                    complete, stack = False, []
                    break
    isolated = [s for s in seen if info.get(s) is not None and info[s][4] != "valve"]
    return Isolation(
        burst,
        sorted(valves.values(), key=lambda v: (v["kind"], v["id"])),
        sorted(isolated),
        float(sum(info[s][3] or 0.0 for s in isolated)),
        complete,
    )


async def analysis_isolation(conn: AsyncConnection, burst: dict[str, Any]) -> Isolation | None:
    """The isolation of pipe ``burst`` by :func:`cimtwin.spatial.pipelines.isolation.isolate`
    (valve segments of the whole water network, same answer as WNTR's); None when the water
    graph does not know the pipe (then :func:`simple_isolation` answers)."""
    graph = await network_graph(conn, WATER)
    k = graph.seg_index(burst["id"])
    if k is None:
        return None
    iso = isolate(graph, k)
    valves = []
    for v in iso.valves:
        kind, _, ref_id = v.ref.partition(":")
        valves.append(
            {
                "kind": "valve_on_pipe" if kind == "valve" else "valve_point",
                "id": int(ref_id),
                "ref": v.ref,
                "valve_no": v.valve_no,
                "state": v.state,
                "node_id": int(graph.node_id[v.node]),
                "segment_ids": [int(graph.seg_id[i]) for i in v.segments],
            }
        )
    segs = [int(i) for i in graph.seg_id[iso.segments]]
    length = float(np.asarray(graph.seg_len)[iso.segments].sum())
    return Isolation(burst, valves, sorted(segs), length, True, "pipeline_analysis")


async def describe_valves(
    conn: AsyncConnection, valves: list[dict[str, Any]], x: float, y: float
) -> None:
    """Add position (GeoJSON) and straight-line distance from (x, y) to each valve."""
    nodes = [v["node_id"] for v in valves if v.get("node_id") is not None]
    if not nodes:
        return
    where = {
        r[0]: r[1:]
        for r in await rows(
            conn,
            f"""
        SELECT n.id, n.point_no, ST_Distance(n.geom, {POINT}), {geojson_text("n.geom")}::json
        FROM {T.pipeline_node} n WHERE n.id = ANY(%(ids)s)""",
            {"x": x, "y": y, "ids": nodes},
        )
    }
    for v in valves:
        hit = where.get(v.get("node_id"))
        if hit:
            v.setdefault("point_no", hit[0])
            v["distance_m"] = round(hit[1], 2)
            v["geometry"] = hit[2]
    valves.sort(key=lambda v: (v.get("distance_m", float("inf")), v["kind"], v["id"]))


async def pipes_within(
    conn: AsyncConnection, x: float, y: float, radius: float, networks: tuple[str, ...], cap: int
) -> dict[str, dict[str, Any]]:
    """Per network: every pipe within ``radius`` of (x, y), nearest first (``cap`` listed)."""
    found = await rows(
        conn,
        f"""
        SELECT * FROM (
          SELECT s.network, s.id, s.subtype, s.diameter_mm, s.width_mm, s.height_mm,
                 s.pressure_class, s.voltage_kv, s.from_depth_m, s.to_depth_m, s.material,
                 s.owner, s.road, ST_Distance(s.geom, {POINT}) AS d,
                 row_number() OVER (PARTITION BY s.network
                                    ORDER BY ST_Distance(s.geom, {POINT}), s.id) AS k,
                 count(*) OVER (PARTITION BY s.network) AS n
          FROM {T.pipeline_segment} s
          WHERE s.network = ANY(%(nets)s) AND ST_DWithin(s.geom, {POINT}, %(r)s)) q
        WHERE k <= %(cap)s ORDER BY network, k""",
        {"x": x, "y": y, "nets": list(networks), "r": radius, "cap": cap},
    )
    keys = (
        "id",
        "subtype",
        "diameter_mm",
        "width_mm",
        "height_mm",
        "pressure_class",
        "voltage_kv",
        "from_depth_m",
        "to_depth_m",
        "material",
        "owner",
        "road",
    )
    out: dict[str, dict[str, Any]] = {
        net: {"network": net, "count": 0, "truncated": False, "nearest_m": None, "items": []}
        for net in networks
    }
    for r in found:
        entry = out[r[0]]
        entry["count"] = r[15]
        entry["truncated"] = r[15] > cap
        entry["items"].append(
            {**dict(zip(keys, r[1:13], strict=True)), "distance_m": round(r[13], 2)}
        )
    for entry in out.values():
        if entry["items"]:
            entry["nearest_m"] = entry["items"][0]["distance_m"]
    return out


async def buildings_within(
    conn: AsyncConnection, x: float, y: float, radius: float, cap: int
) -> dict[str, Any]:
    p = {"x": x, "y": y, "r": radius, "cap": cap}
    # one statement: the totals over every building in the radius are window aggregates,
    # computed before the LIMIT (the listed rows carry them)
    found = await rows(
        conn,
        f"""
        SELECT id, building_code, name, use, height_m, floors, residents,
               ST_Distance(footprint, {POINT}) AS d,
               count(*) OVER (), coalesce(sum(residents) OVER (), 0), count(residents) OVER (),
               coalesce(sum(floor_area_m2) OVER (), 0)
        FROM {T.building} WHERE ST_DWithin(footprint, {POINT}, %(r)s)
        ORDER BY d, id LIMIT %(cap)s""",
        p,
    )
    total = found[0][8:12] if found else (0, 0, 0, 0.0)  # the types the aggregates give
    keys = ("id", "building_code", "name", "use", "height_m", "floors", "residents")
    return {
        "count": total[0],
        "residents": total[1],
        "with_residents": total[2],
        "floor_area_m2": total[3],
        "truncated": total[0] > len(found),
        "items": [
            {**dict(zip(keys, r[:7], strict=True)), "distance_m": round(r[7], 2)} for r in found
        ],
    }

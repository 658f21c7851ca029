"""Excavation checks and cross sections: the pipes and points a dig reaches, and the pipes
a section line crosses with the ground along it (inverse distance weighting of survey
ground elevations).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from cimtwin.spatial.pipelines.shared import (
    NODE,
    SEG,
    fetch_all_nojit,
    half_h,
    lonlat,
    rounded,
    size_text,
    wkb_geom,
)

# --- excavation, cross-section, profile SQL ---------------------------------------------------

#: centre elevation along a pipe at fraction f (2D) and ground linear between its end points
EXCAVATION_PIPES_SQL = f"""
WITH ex AS (SELECT {wkb_geom("area")} AS g),
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
             - (ST_Z(ST_LineInterpolatePoint(h.geom, p.f)) + {half_h("h")}) AS top_depth,
           ST_Z(ST_LineInterpolatePoint(h.geom, p.f)) + {half_h("h")} AS top_z,
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
       {lonlat("ST_Intersection(h.geom, ex.g)")}
FROM hit h JOIN agg a ON a.id = h.id, ex
WHERE a.top_depth < %(depth)s
"""

EXCAVATION_NODES_SQL = f"""
WITH ex AS (SELECT {wkb_geom("area")} AS g),
inside AS (SELECT n.* FROM {NODE} n, ex WHERE ST_Intersects(n.geom, ex.g)),
ends AS (
    SELECT i.id,
           min(i.ground_elevation_m - (CASE WHEN s.from_node_id = i.id
                  THEN ST_Z(ST_StartPoint(s.geom)) ELSE ST_Z(ST_EndPoint(s.geom)) END
                + {half_h("s")})) AS top_depth
    FROM inside i JOIN {SEG} s ON s.from_node_id = i.id OR s.to_node_id = i.id
    GROUP BY i.id
)
SELECT i.id, i.dataset, i.network, i.subtype, i.point_no, i.feature, i.appurtenance,
       i.ground_elevation_m, i.well_depth_m, e.top_depth,
       (SELECT s.owner FROM {SEG} s WHERE s.from_node_id = i.id OR s.to_node_id = i.id
        ORDER BY s.id LIMIT 1),
       {lonlat("i.geom")}
FROM inside i LEFT JOIN ends e ON e.id = i.id
WHERE i.well_depth_m IS NOT NULL OR coalesce(i.appurtenance, '') <> ''
   OR e.top_depth < %(depth)s
"""

CROSS_SECTION_SQL = f"""
WITH l AS (SELECT {wkb_geom("line")} AS g),
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
       {half_h("h")}, {lonlat("x.p")}
FROM hit h JOIN x ON x.id = h.id, l
ORDER BY offset_m, h.id
LIMIT %(limit)s
"""

GROUND_SAMPLES_SQL = f"""
WITH l AS (SELECT {wkb_geom("line")} AS g),
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


RISK_FIRST = ("RQ", "DL")


async def excavation_analysis(
    conn: AsyncConnection,
    *,
    area: bytes,
    depth_m: float,
    max_results: int = 5000,
) -> dict[str, Any]:
    """Pipes and points an excavation of ``depth_m`` below ground inside ``area`` reaches."""
    params = {"area": area, "depth": depth_m}
    pipes = []
    for r in await fetch_all_nojit(conn, EXCAVATION_PIPES_SQL, params):
        (
            sid,
            ds,
            net,
            sub,
            owner,
            dia,
            wid,
            hei,
            mat,
            pres,
            volt,
            burial,
            ref,
            top_depth,
            top_z,
            g0,
            g1,
            inside_len,
            gj,
        ) = r
        pipes.append(
            {
                "segment_id": sid,
                "dataset": ds,
                "network": net,
                "subtype": sub,
                "owner": owner,
                "size": size_text(dia, wid, hei),
                "diameter_mm": dia,
                "width_mm": wid,
                "height_mm": hei,
                "material": mat,
                "pressure_class": pres,
                "voltage_kv": volt,
                "burial": burial,
                "top_depth_m": rounded(top_depth),
                "top_elevation_m": rounded(top_z),
                "reach_m": rounded(depth_m - top_depth),
                "length_inside_m": rounded(inside_len),
                "priority": 0 if net in RISK_FIRST else 1,
                "geometry": json.loads(gj) if gj else None,
            }
        )
    pipes.sort(key=lambda p: (p["priority"], p["top_depth_m"], p["segment_id"]))
    nodes = []
    for r in await fetch_all_nojit(conn, EXCAVATION_NODES_SQL, params):
        nid, ds, net, sub, no, feat, app, ground, well, top_depth, owner, gj = r
        chamber = well is not None or bool(app)
        depth = 0.0 if chamber else top_depth
        nodes.append(
            {
                "node_id": nid,
                "dataset": ds,
                "network": net,
                "subtype": sub,
                "point_no": no,
                "feature": feat,
                "appurtenance": app,
                "owner": owner,
                "ground_elevation_m": rounded(ground),
                "well_depth_m": well,
                "top_depth_m": rounded(depth),
                "chamber": chamber,
                "priority": 0 if net in RISK_FIRST else 1,
                "point": json.loads(gj)["coordinates"],
            }
        )
    nodes.sort(
        key=lambda n: (
            n["priority"],
            n["top_depth_m"] if n["top_depth_m"] is not None else math.inf,
            n["node_id"],
        )
    )
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
        "pipes": pipes[:max_results],
        "nodes": nodes[:max_results],
        "truncated": len(pipes) > max_results or len(nodes) > max_results,
    }


async def cross_section_analysis(
    conn: AsyncConnection,
    *,
    line: bytes,
    length_m: float,
    max_results: int = 2000,
    sample_step_m: float = 2.0,
    max_samples: int = 201,
) -> dict[str, Any]:
    """Every pipe the section line crosses, and the ground along it."""
    params = {"line": line, "limit": max_results + 1}
    pipes = []
    for r in await fetch_all_nojit(conn, CROSS_SECTION_SQL, params):
        (
            sid,
            ds,
            net,
            sub,
            owner,
            mat,
            dia,
            wid,
            hei,
            pres,
            flow,
            ref,
            offset,
            zc,
            ground,
            h,
            gj,
        ) = r
        pipes.append(
            {
                "segment_id": sid,
                "dataset": ds,
                "network": net,
                "subtype": sub,
                "owner": owner,
                "material": mat,
                "size": size_text(dia, wid, hei),
                "diameter_mm": dia,
                "width_mm": wid,
                "height_mm": hei,
                "shape": "round" if dia else ("rectangular" if wid and hei else None),
                "pressure_class": pres,
                "offset_m": rounded(offset),
                "centre_elevation_m": rounded(zc),
                "top_elevation_m": rounded(zc + h),
                "bottom_elevation_m": rounded(zc - h),
                "ground_elevation_m": rounded(ground),
                "depth_m": rounded(ground - zc - h) if ground is not None else None,
                "point": json.loads(gj)["coordinates"][:2],
            }
        )
    samples = max(2, min(max_samples, int(math.ceil(length_m / sample_step_m)) + 1))
    last = samples - 1
    near: dict[int, list[tuple[float, float]]] = {}
    for i, z, d in await fetch_all_nojit(
        conn, GROUND_SAMPLES_SQL, {"line": line, "last": last, "k": IDW_NEIGHBOURS}
    ):
        near.setdefault(i, []).append((z, d))
    ground = [
        {"offset_m": rounded(length_m * i / last), "elevation_m": rounded(idw(near.get(i, [])))}
        for i in range(samples)
    ]
    return {
        "length_m": rounded(length_m),
        "pipes": pipes[:max_results],
        "truncated": len(pipes) > max_results,
        "ground": {
            "method": f"inverse distance weighting (power {IDW_POWER:g}) of the ground "
            f"elevations of the {IDW_NEIGHBOURS} nearest survey points within "
            f"{IDW_MAX_DISTANCE_M:g} m of each sample",
            "samples": ground,
        },
        "notes": [
            "offset_m is measured along the section from its first point",
            "a pipe's ground_elevation_m and depth_m come from the pipe's own end "
            "points (linear along the pipe); depth_m is from the ground to the pipe top",
        ],
    }

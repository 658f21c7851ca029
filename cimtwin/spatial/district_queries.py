"""Queries on named districts for the API: a summary above and below ground, and which objects
meet a volume (an area and an elevation range, absolute or relative to the ground).

Rules, the same in the summary and in the volume query:

* buildings belong to a district when the point on their footprint's surface is inside it
  (the importers' grid rule); their vertical extent is base .. base + height;
* underground structures, pipes, pipeline points, components and incidents count when they
  meet the area; pipe lengths and parcel areas are clipped to it;
* a pipe's depth band is that of its shallowest top: the smaller end depth, turned into a depth
  to the pipe top when measured to the centre or the invert (depth - size/2, depth - size);
* ground under an underground structure (for depths) is estimated from the nearest survey
  points' ground elevations (8 within 300 m), else the nearest building bases.
"""

from __future__ import annotations

import copy
from typing import Any

from psycopg import AsyncConnection

from cimtwin.spatial.admin_queries import ImportCache
from cimtwin.spatial.base import SRID
from cimtwin.spatial.incident import OPEN_STATUSES
from cimtwin.spatial.pipeline_network import pipe_size_mm_sql
from cimtwin.spatial.sql_toolkit import T, geojson_text, one, one_row, rows

DEPTH_BANDS: tuple[tuple[str, float, float | None], ...] = (
    ("0-1", 0.0, 1.0),
    ("1-2", 1.0, 2.0),
    ("2-3", 2.0, 3.0),
    ("3-5", 3.0, 5.0),
    (">5", 5.0, None),
)
VOLUME_LAYERS = ("buildings", "underground", "pipelines", "pipeline_points")
GROUND_SEARCH_M = 300.0
MAX_DISTRICTS = 200

#: size of a pipe in metres (diameter, else height of its section), 0 when unknown
PIPE_SIZE = f"(coalesce({pipe_size_mm_sql('s')}, 0) / 1000.0)"
#: metres from the depth reference up to the pipe top
TOP_OFFSET = (
    f"(CASE s.depth_ref WHEN 'centre' THEN {PIPE_SIZE} / 2 "
    f"WHEN 'invert' THEN {PIPE_SIZE} ELSE 0 END)"
)
#: depth below ground of the pipe top at each end (from the survey depths)
FROM_TOP_DEPTH = f"(s.from_depth_m - {TOP_OFFSET})"
TO_TOP_DEPTH = f"(s.to_depth_m - {TOP_OFFSET})"
TOP_DEPTH = f"least({FROM_TOP_DEPTH}, {TO_TOP_DEPTH})"


def _band_sql() -> str:
    cases = []
    for label, lo, hi in DEPTH_BANDS:
        cond = f"d >= {lo}" if hi is None else f"d < {hi}"
        cases.append(f"WHEN {cond} THEN '{label}'")
    first = DEPTH_BANDS[0]
    return (
        f"CASE WHEN d IS NULL THEN 'unknown' WHEN d < {first[1]} THEN '{first[0]}' "
        + " ".join(cases)
        + " END"
    )


def ground_sql(point: str) -> str:
    """SQL for the estimated ground elevation at ``point`` (a storage-CRS point expression)."""
    return f"""coalesce(
      (SELECT avg(n.ground_elevation_m) FROM (
         SELECT ground_elevation_m FROM {T.pipeline_node}
         WHERE ground_elevation_m IS NOT NULL AND ST_DWithin(geom, {point}, {GROUND_SEARCH_M})
         ORDER BY geom <-> {point} LIMIT 8) n),
      (SELECT avg(b.base_elevation_m) FROM (
         SELECT base_elevation_m FROM {T.building}
         WHERE base_elevation_m IS NOT NULL AND ST_DWithin(footprint, {point}, {GROUND_SEARCH_M})
         ORDER BY footprint <-> {point} LIMIT 4) b))"""


# --- list and summary -----------------------------------------------------------------------


async def list_districts(conn: AsyncConnection) -> list[dict[str, Any]]:
    found = await rows(
        conn,
        f"""
        SELECT slug, name, kind, description, ST_Area(geom),
               ST_AsGeoJSON(ST_Transform(ST_Envelope(geom), 4326), 7, 0)::json -> 'coordinates'
        FROM {T.district} ORDER BY slug LIMIT %s""",
        (MAX_DISTRICTS,),
    )
    out = []
    for r in found:
        ring = r[5][0] if r[5] else None
        bbox = None
        if ring:
            xs, ys = [p[0] for p in ring], [p[1] for p in ring]
            bbox = [min(xs), min(ys), max(xs), max(ys)]
        out.append(
            {
                "slug": r[0],
                "name": r[1],
                "kind": r[2],
                "description": r[3],
                "area_m2": r[4],
                "bbox": bbox,
            }
        )
    return out


async def district_row(conn: AsyncConnection, slug: str) -> tuple | None:
    return await one(
        conn,
        f"""
        SELECT id, slug, name, kind, description, ST_Area(geom)
        FROM {T.district} WHERE slug = %s""",
        (slug,),
    )


D = f"(SELECT geom FROM {T.district} WHERE slug = %(slug)s)"


async def district_summary(
    conn: AsyncConnection, slug: str, cache: ImportCache | None = None
) -> dict[str, Any] | None:
    """The summary of a district; the parts that only imports change come from ``cache``
    when given (checked against the import batches on every call), incidents are always
    read afresh."""
    if cache is not None:
        out = await cache.get(conn, ("district", slug), lambda: _static_summary(conn, slug))
    else:
        out = await _static_summary(conn, slug)
    if out is None:
        return None
    out = copy.deepcopy(out)
    inc = await rows(
        conn,
        f"""
        SELECT i.incident_type, count(*) FROM {T.incident} i, {D} d(geom)
        WHERE ST_Intersects(i.geom, d.geom) AND i.status = ANY(%(open)s)
        GROUP BY 1 ORDER BY 1""",
        {"slug": slug, "open": list(OPEN_STATUSES)},
    )
    out["above_ground"]["open_incidents"] = {
        "count": sum(r[1] for r in inc),
        "statuses": list(OPEN_STATUSES),
        "by_type": [{"type": r[0], "count": r[1]} for r in inc],
    }
    return out


async def _static_summary(conn: AsyncConnection, slug: str) -> dict[str, Any] | None:
    head = await district_row(conn, slug)
    if head is None:
        return None
    p = {"slug": slug}
    out: dict[str, Any] = {
        "slug": head[1],
        "name": head[2],
        "kind": head[3],
        "description": head[4],
        "area_m2": head[5],
    }
    b = await one_row(
        conn,
        f"""
        SELECT count(*), coalesce(sum(ST_Area(b.footprint)), 0),
               coalesce(sum(b.floor_area_m2), 0), coalesce(sum(b.residents), 0),
               min(b.height_m), max(b.height_m), avg(b.height_m),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY b.height_m),
               count(*) FILTER (WHERE b.height_m >= 100)
        FROM {T.building} b, {D} d(geom)
        WHERE ST_Intersects(b.footprint, d.geom)
          AND ST_Intersects(d.geom, ST_PointOnSurface(b.footprint))""",
        p,
    )
    above = {
        "buildings": {
            "count": b[0],
            "footprint_area_m2": b[1],
            "floor_area_m2": b[2],
            "residents": b[3],
            "height_m": {"min": b[4], "max": b[5], "mean": b[6], "median": b[7]},
            "high_rise_100m": b[8],
        }
    }
    comp = await rows(
        conn,
        f"""
        SELECT k.major_code, k.major_name, count(*)
        FROM {T.city_component} c JOIN {T.component_class} k ON k.code = c.class_code,
             {D} d(geom)
        WHERE ST_Intersects(c.geom, d.geom) GROUP BY 1, 2 ORDER BY 1""",
        p,
    )
    above["components"] = {
        "count": sum(r[2] for r in comp),
        "by_major_class": [{"code": r[0], "name": r[1], "count": r[2]} for r in comp],
    }
    parcels = await rows(
        conn,
        f"""
        SELECT q.land_use, l.name, count(*), sum(q.a) FROM (
          SELECT p.land_use,
                 CASE WHEN ST_CoveredBy(p.geom, d.geom) THEN ST_Area(p.geom)
                      ELSE ST_Area(ST_Intersection(p.geom, d.geom)) END AS a
          FROM {T.parcel} p, {D} d(geom) WHERE ST_Intersects(p.geom, d.geom)) q
        LEFT JOIN {T.land_use_class} l ON l.code = q.land_use
        WHERE q.a > 0 GROUP BY 1, 2 ORDER BY 1""",
        p,
    )
    above["parcels"] = {
        "count": sum(r[2] for r in parcels),
        "area_m2": sum(r[3] for r in parcels),
        "rule": "area of each parcel inside the district",
        "by_land_use": [
            {"code": r[0], "name": r[1], "count": r[2], "area_m2": r[3]} for r in parcels
        ],
    }

    bim = await one_row(
        conn,
        f"""
        SELECT count(DISTINCT m.id), count(r.id), coalesce(sum(r.area_m2), 0)
        FROM {T.bim_model} m LEFT JOIN {T.bim_space} r
            ON (r.county_code, r.model_id) = (m.county_code, m.id), {D} d(geom)
        WHERE ST_Intersects(d.geom, ST_PointOnSurface(m.footprint))""",
        p,
    )
    above["bim"] = {
        "models": bim[0],
        "rooms": bim[1],
        "room_area_m2": bim[2],
        "rule": "BIM models whose footprint's inner point is in the district, their rooms",
    }

    ground = ground_sql("ST_PointOnSurface(ST_Intersection(u.footprint, d.geom))")
    ug = await rows(
        conn,
        f"""
        SELECT kind, count(*), max(top), min(bottom), min(g - top), max(g - bottom),
               sum(area) FROM (
          SELECT u.kind, u.top_elevation_m AS top, u.bottom_elevation_m AS bottom,
                 ST_Area(ST_Intersection(u.footprint, d.geom)) AS area, {ground} AS g
          FROM {T.underground_structure} u, {D} d(geom)
          WHERE ST_Intersects(u.footprint, d.geom)) q
        GROUP BY 1 ORDER BY 1""",
        p,
    )
    below: dict[str, Any] = {
        "underground_structures": {
            "count": sum(r[1] for r in ug),
            "by_kind": [
                {
                    "kind": r[0],
                    "count": r[1],
                    "top_elevation_m": r[2],
                    "bottom_elevation_m": r[3],
                    "depth_m": {"top": r[4], "bottom": r[5]},
                    "footprint_area_m2": r[6],
                }
                for r in ug
            ],
        }
    }
    pipes = await rows(
        conn,
        f"""
        SELECT network, band, count(*), sum(len) FROM (
          SELECT s.network, {_band_sql()} AS band,
                 CASE WHEN ST_CoveredBy(s.geom, g) THEN ST_Length(s.geom)
                      ELSE ST_Length(ST_Intersection(s.geom, g)) END AS len
          FROM (SELECT s.*, {TOP_DEPTH} AS d FROM {T.pipeline_segment} s, {D} dd(geom)
                WHERE ST_Intersects(s.geom, dd.geom)) s, {D} d(g)) q
        GROUP BY 1, 2 ORDER BY 1, 2""",
        p,
    )
    names = dict(
        await rows(conn, f"SELECT network, min(network_name) FROM {T.pipeline_type} GROUP BY 1")
    )
    by_net: dict[str, dict[str, Any]] = {}
    order = [b[0] for b in DEPTH_BANDS] + ["unknown"]
    for net, band, n, length in pipes:
        entry = by_net.setdefault(
            net,
            {
                "network": net,
                "name": names.get(net),
                "segments": 0,
                "length_m": 0.0,
                "by_depth": [],
            },
        )
        entry["segments"] += n
        entry["length_m"] += length
        entry["by_depth"].append({"band": band, "segments": n, "length_m": length})
    for entry in by_net.values():
        entry["by_depth"].sort(key=lambda x: order.index(x["band"]))
    below["pipelines"] = {
        "length_m": sum(e["length_m"] for e in by_net.values()),
        "bands_m": [b[0] for b in DEPTH_BANDS],
        "rule": "2D length clipped to the district; band by the shallowest depth to the "
        "pipe top of both ends",
        "by_network": list(by_net.values()),
    }
    out["above_ground"] = above
    out["below_ground"] = below
    return out


# --- volume query ---------------------------------------------------------------------------


def _range_filter(lo: str, hi: str) -> str:
    """Extent [lo, hi] meets [zmin, zmax]: they overlap by more than a touch, or one of them
    is a single level inside the other (a building standing on the ground does not meet
    'from -5 to 0'; a survey point at ground level does)."""
    return (
        f"(({lo} < %(zmax)s AND {hi} > %(zmin)s) OR (({lo} = {hi} OR "
        f"%(zmin)s = %(zmax)s) AND {lo} <= %(zmax)s AND {hi} >= %(zmin)s))"
    )


def _volume_sql(layer: str, relative: bool) -> str:
    """SELECT id, geojson, properties (json), bottom, top, rel_bottom, rel_top, matched."""
    region = "ST_GeomFromWKB(%(region)s, " + str(SRID) + ")"
    if layer == "buildings":
        lo_abs, hi_abs = "b.base_elevation_m", "(b.base_elevation_m + b.height_m)"
        lo_rel, hi_rel = "0.0", "b.height_m"
        lo, hi = (lo_rel, hi_rel) if relative else (lo_abs, hi_abs)
        return f"""
        SELECT b.id, {geojson_text("b.footprint")}, json_build_object(
                 'building_code', b.building_code, 'name', b.name, 'use', b.use,
                 'height_m', b.height_m, 'floors', b.floors,
                 'underground_floors', b.underground_floors,
                 'base_elevation_m', b.base_elevation_m, 'grid_code', b.grid_code),
               {lo_abs}, {hi_abs}, {lo_rel}, {hi_rel}, count(*) OVER ()
        FROM {T.building} b, (SELECT {region} AS r) q
        WHERE ST_Intersects(b.footprint, q.r) AND b.height_m IS NOT NULL
          AND {_range_filter(lo, hi)}
        ORDER BY b.id LIMIT %(limit)s"""
    if layer == "underground":
        g = ground_sql("ST_PointOnSurface(ST_Intersection(u.footprint, q.r))")
        lo, hi = (
            ("(u.bottom_elevation_m - u.g)", "(u.top_elevation_m - u.g)")
            if relative
            else ("u.bottom_elevation_m", "u.top_elevation_m")
        )
        return f"""
        SELECT u.id, {geojson_text("u.footprint")}, json_build_object(
                 'code', u.code, 'kind', u.kind, 'name', u.name,
                 'top_elevation_m', u.top_elevation_m,
                 'bottom_elevation_m', u.bottom_elevation_m, 'ground_elevation_m', u.g),
               u.bottom_elevation_m, u.top_elevation_m,
               u.bottom_elevation_m - u.g, u.top_elevation_m - u.g, count(*) OVER ()
        FROM (SELECT u.*, {g} AS g, q.r FROM {T.underground_structure} u,
                     (SELECT {region} AS r) q
              WHERE ST_Intersects(u.footprint, q.r)) u
        WHERE {_range_filter(lo, hi)}
        ORDER BY u.id LIMIT %(limit)s"""
    if layer == "pipelines":
        half = f"({PIPE_SIZE} / 2)"
        lo_abs, hi_abs = f"(ST_ZMin(s.geom) - {half})", f"(ST_ZMax(s.geom) + {half})"
        # relative: minus the depths of the pipe bottom / top, from the survey depths
        from_top = (
            f"coalesce({FROM_TOP_DEPTH}, fn.ground_elevation_m - "
            f"(ST_Z(ST_StartPoint(s.geom)) + {half}))"
        )
        to_top = (
            f"coalesce({TO_TOP_DEPTH}, tn.ground_elevation_m - "
            f"(ST_Z(ST_EndPoint(s.geom)) + {half}))"
        )
        lo_rel = f"(-(greatest({from_top}, {to_top}) + {PIPE_SIZE}))"
        hi_rel = f"(-least({from_top}, {to_top}))"
        lo, hi = (lo_rel, hi_rel) if relative else (lo_abs, hi_abs)
        return f"""
        SELECT s.id, {geojson_text("s.geom")}, json_build_object(
                 'network', s.network, 'subtype', s.subtype, 'diameter_mm', s.diameter_mm,
                 'width_mm', s.width_mm, 'height_mm', s.height_mm,
                 'from_depth_m', s.from_depth_m, 'to_depth_m', s.to_depth_m,
                 'depth_ref', s.depth_ref, 'material', s.material, 'owner', s.owner),
               {lo_abs}, {hi_abs}, {lo_rel}, {hi_rel}, count(*) OVER ()
        FROM {T.pipeline_segment} s
        JOIN {T.pipeline_node} fn
            ON (fn.county_code, fn.batch_id, fn.id) = (s.county_code, s.batch_id, s.from_node_id)
        JOIN {T.pipeline_node} tn
            ON (tn.county_code, tn.batch_id, tn.id) = (s.county_code, s.batch_id, s.to_node_id),
        (SELECT {region} AS r) q
        WHERE ST_Intersects(s.geom, q.r) AND {_range_filter(lo, hi)}
        ORDER BY s.id LIMIT %(limit)s"""
    if layer == "pipeline_points":
        # depth at a point: its well, or the deepest pipe bottom that ends there
        bottom = f"""(SELECT max(CASE WHEN s.from_node_id = n.id THEN s.from_depth_m
                                      ELSE s.to_depth_m END - {TOP_OFFSET} + {PIPE_SIZE})
                      FROM {T.pipeline_segment} s
                      WHERE (s.county_code, s.batch_id) = (n.county_code, n.batch_id)
                        AND (s.from_node_id = n.id OR s.to_node_id = n.id))"""
        lo_rel, hi_rel = "(-n.depth)", "0.0"
        lo_abs, hi_abs = "(n.ground - n.depth)", "n.ground"
        lo, hi = (lo_rel, hi_rel) if relative else (lo_abs, hi_abs)
        return f"""
        SELECT n.id, {geojson_text("n.geom")}, json_build_object(
                 'point_no', n.point_no, 'network', n.network, 'subtype', n.subtype,
                 'feature', n.feature, 'appurtenance', n.appurtenance,
                 'ground_elevation_m', n.ground, 'well_depth_m', n.well_depth_m,
                 'depth_m', n.depth),
               {lo_abs}, {hi_abs}, {lo_rel}, {hi_rel}, count(*) OVER ()
        FROM (SELECT n.*, coalesce(n.ground_elevation_m, ST_Z(n.geom)) AS ground,
                     greatest(coalesce(n.well_depth_m, 0), coalesce({bottom}, 0)) AS depth
              FROM {T.pipeline_node} n, (SELECT {region} AS r) q
              WHERE ST_Intersects(n.geom, q.r)) n
        WHERE {_range_filter(lo, hi)}
        ORDER BY n.id LIMIT %(limit)s"""
    raise ValueError(f"unknown layer {layer!r}")


async def clip_to_district(
    conn: AsyncConnection, slug: str, region_wkb: bytes | None
) -> tuple[bytes | None, float]:
    """The query area inside the district (WKB, storage CRS) and its area; None when empty."""
    if region_wkb is None:
        row = await one(
            conn,
            f"SELECT ST_AsBinary(geom), ST_Area(geom) FROM {T.district} WHERE slug = %s",
            (slug,),
        )
    else:
        row = await one(
            conn,
            f"""
            SELECT ST_AsBinary(x), ST_Area(x) FROM (
              SELECT ST_Intersection(d.geom, ST_GeomFromWKB(%s, {SRID})) AS x
              FROM {T.district} d WHERE d.slug = %s) q""",
            (region_wkb, slug),
        )
    if row is None or row[0] is None or not row[1]:
        return None, 0.0
    return bytes(row[0]), float(row[1])


async def volume_query(
    conn: AsyncConnection,
    region_wkb: bytes,
    layers: list[str],
    zmin: float,
    zmax: float,
    relative: bool,
    limit: int,
) -> dict[str, dict[str, Any]]:
    """Per layer: features whose vertical extent meets [zmin, zmax] inside the region
    (``relative``: metres from the ground at each feature, negative below; else elevations).

    Each row: id, GeoJSON geometry text, properties, absolute bottom/top, bottom/top relative
    to the ground, and the number matched."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        query = _volume_sql(layer, relative)
        params = {"region": region_wkb, "zmin": zmin, "zmax": zmax, "limit": limit}
        found = await rows(conn, query, params)
        out[layer] = {"matched": found[0][7] if found else 0, "rows": found}
    return out

"""Queries on land parcels (地块) for the API: listing, and the planning report of one parcel
(what stands on it against its planning controls, what crosses it).

A building stands on a parcel when its footprint is covered by the parcel or more than half of
its footprint area lies in it (each building on at most one parcel). Plot ratio (容积率, FAR)
= total floor area of those buildings / parcel area.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from cimtwin.spatial.base import SRID
from cimtwin.spatial.sql_toolkit import T, geojson_text, one, one_row, rows

#: share of a footprint that must lie in a parcel for the building to count as on it
MAJORITY = 0.5
PARCEL_PROPERTIES = (
    "parcel_code",
    "land_use",
    "land_use_name",
    "area_m2",
    "planned_plot_ratio",
    "height_limit_m",
    "grid_code",
)


async def list_parcels(
    conn: AsyncConnection, area_wkb: bytes | None, land_use: list[str], limit: int, offset: int
) -> tuple[list[tuple], int]:
    """Parcels meeting an area (WKB in the storage CRS) with one of the land-use codes (or
    their subclasses), by id; and how many match."""
    conds: list[str] = []
    params: list[object] = []
    if area_wkb is not None:
        conds.append(f"ST_Intersects(p.geom, ST_GeomFromWKB(%s, {SRID}))")
        params.append(area_wkb)
    if land_use:
        conds.append("(" + " OR ".join("p.land_use LIKE %s" for _ in land_use) + ")")
        params += [f"{code}%" for code in land_use]
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    found = await rows(
        conn,
        f"""
        SELECT p.id, {geojson_text("p.geom")}, p.parcel_code, p.land_use, l.name, p.area_m2,
               p.planned_plot_ratio, p.height_limit_m, p.grid_code
        FROM {T.parcel} p LEFT JOIN {T.land_use_class} l ON l.code = p.land_use{where}
        ORDER BY p.id LIMIT %s OFFSET %s""",
        [*params, limit, offset],
    )
    if offset == 0 and len(found) < limit:
        return found, len(found)
    total = await one_row(conn, f"SELECT count(*) FROM {T.parcel} p{where}", params)
    return found, total[0]


async def unknown_land_uses(conn: AsyncConnection, codes: list[str]) -> list[str]:
    """The codes (or code prefixes) that match no GB 50137 class."""
    if not codes:
        return []
    found = await rows(
        conn,
        f"""
        SELECT c FROM unnest(%s::text[]) c
        WHERE NOT EXISTS (SELECT 1 FROM {T.land_use_class} l WHERE l.code LIKE c || '%%')""",
        (codes,),
    )
    return [r[0] for r in found]


async def find_parcel(conn: AsyncConnection, ref: str) -> int | None:
    """A parcel's id from its id or its parcel code."""
    if ref.isdigit() and len(ref) <= 18:
        row = await one(conn, f"SELECT id FROM {T.parcel} WHERE id = %s", (int(ref),))
        if row:
            return row[0]
    row = await one(conn, f"SELECT id FROM {T.parcel} WHERE parcel_code = %s", (ref,))
    return row[0] if row else None


async def parcel_report(conn: AsyncConnection, parcel_id: int) -> dict[str, Any] | None:
    p = await one(
        conn,
        f"""
        SELECT p.id, p.parcel_code, p.land_use, l.name, p.area_m2, ST_Area(p.geom),
               p.planned_plot_ratio, p.height_limit_m, p.grid_code,
               {geojson_text("p.geom")}::json
        FROM {T.parcel} p LEFT JOIN {T.land_use_class} l ON l.code = p.land_use
        WHERE p.id = %s""",
        (parcel_id,),
    )
    if p is None:
        return None
    area = p[4] if p[4] and p[4] > 0 else p[5]
    buildings = await rows(
        conn,
        f"""
        SELECT id, building_code, name, use, height_m, floors, floor_area_m2, residents, share
        FROM (
          SELECT b.*, CASE WHEN ST_CoveredBy(b.footprint, p.geom) THEN 1.0
                      ELSE ST_Area(ST_Intersection(b.footprint, p.geom))
                           / NULLIF(ST_Area(b.footprint), 0) END AS share
          FROM {T.building} b JOIN {T.parcel} p ON ST_Intersects(b.footprint, p.geom)
          WHERE p.id = %s) q
        WHERE share > %s ORDER BY id""",
        (parcel_id, MAJORITY),
    )
    floor_area = sum(b[6] or 0.0 for b in buildings)
    unknown_floor = [b[1] for b in buildings if b[6] is None]
    heights = [b[4] for b in buildings if b[4] is not None]
    max_height = max(heights) if heights else None
    planned, limit = p[6], p[7]
    actual = floor_area / area if area else None
    over_height = [
        b[1] for b in buildings if limit is not None and b[4] is not None and b[4] > limit
    ]
    pipes = await rows(
        conn,
        f"""
        SELECT s.network,
               (SELECT min(t.network_name) FROM {T.pipeline_type} t WHERE t.network = s.network),
               count(*), sum(ST_Length(ST_Intersection(s.geom, p.geom)))
        FROM {T.pipeline_segment} s JOIN {T.parcel} p ON ST_Intersects(s.geom, p.geom)
        WHERE p.id = %s GROUP BY 1 ORDER BY 1""",
        (parcel_id,),
    )
    comps = await rows(
        conn,
        f"""
        SELECT c.class_code, k.name, k.major_name, count(*)
        FROM {T.city_component} c JOIN {T.parcel} p ON ST_Intersects(c.geom, p.geom)
        LEFT JOIN {T.component_class} k ON k.code = c.class_code
        WHERE p.id = %s GROUP BY 1, 2, 3 ORDER BY 1""",
        (parcel_id,),
    )
    return {
        "parcel": {
            "id": p[0],
            "parcel_code": p[1],
            "land_use": p[2],
            "land_use_name": p[3],
            "area_m2": area,
            "geometric_area_m2": p[5],
            "grid_code": p[8],
            "planned_plot_ratio": planned,
            "height_limit_m": limit,
        },
        "geometry": p[9],
        "buildings": {
            "count": len(buildings),
            "rule": f"footprint covered by the parcel or more than {MAJORITY:.0%} of it inside",
            "floor_area_m2": floor_area,
            "floor_area_unknown": unknown_floor,
            "residents": sum(b[7] or 0 for b in buildings),
            "items": [
                {
                    "id": b[0],
                    "building_code": b[1],
                    "name": b[2],
                    "use": b[3],
                    "height_m": b[4],
                    "floors": b[5],
                    "floor_area_m2": b[6],
                    "residents": b[7],
                    "share_on_parcel": round(float(b[8]), 4),
                }
                for b in buildings
            ],
        },
        "plot_ratio": {
            "actual": actual,
            "planned": planned,
            "exceeds": None if planned is None or actual is None else actual > planned,
            "utilisation": None if not planned or actual is None else actual / planned,
            "formula": "total floor area of the buildings on the parcel / parcel area",
        },
        "height": {
            "max_building_m": max_height,
            "limit_m": limit,
            "exceeds": None if limit is None or max_height is None else max_height > limit,
            "buildings_over_limit": over_height,
        },
        "pipelines": {
            "length_m": sum(r[3] for r in pipes),
            "rule": "pipes meeting the parcel; 2D length inside it",
            "by_network": [
                {"network": r[0], "name": r[1], "segments": r[2], "length_m": r[3]} for r in pipes
            ],
        },
        "components": {
            "count": sum(r[3] for r in comps),
            "by_class": [
                {"code": r[0], "name": r[1], "major_name": r[2], "count": r[3]} for r in comps
            ],
        },
    }

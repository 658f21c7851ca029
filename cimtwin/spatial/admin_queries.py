"""Queries on the street > community > work-grid hierarchy for the API: where a point is, what a
grid holds, and bulk 进格入块 (grid assignment) with a :class:`GridIndex` kept per process.

Membership rules (the same everywhere, and the importers' at load time): a building, parcel,
component or incident belongs to the grid recorded in its ``grid_code`` (assigned by the point
on its surface, lowest code on shared boundaries); pipes are clipped to the grid's polygon.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import shapely
from psycopg import AsyncConnection, sql

from cimtwin.spatial.admin_grid import GridIndex
from cimtwin.spatial.base import SRID
from cimtwin.spatial.catalogue import BY_ID, Layer
from cimtwin.spatial.fingerprint_cache import FingerprintCache
from cimtwin.spatial.incident import OPEN_STATUSES
from cimtwin.spatial.sql_toolkit import T, geojson_sql, one, one_row, rows

#: layers of GET /grids/{code}/features, and how a feature belongs to a grid
GRID_LAYERS = ("buildings", "components", "parcels", "pipelines", "incidents")


# --- a cache for what only imports change ----------------------------------------------------


IMPORTS_FINGERPRINT_SQL = f"""
SELECT md5(coalesce(string_agg(id::text || ':' || xmin::text, ',' ORDER BY id), ''))
FROM {T.import_batch}"""


class ImportCache(FingerprintCache):
    """Answers computed from tables that only imports change (grids, buildings, parcels,
    pipes, components, structures: every change to them is an import batch), kept while the
    import batches stay as they were and for at most ``max_age_s``."""

    def __init__(self, max_age_s: float = 300.0, max_entries: int = 10_000) -> None:
        super().__init__(IMPORTS_FINGERPRINT_SQL, max_age_s, max_entries)


def import_cache(state: Any, max_age_s: float) -> ImportCache | None:
    """The app's :class:`ImportCache` (None when ``max_age_s`` is 0: no caching)."""
    if max_age_s <= 0:
        return None
    cache = getattr(state, "import_cache", None)
    if cache is None:
        cache = state.import_cache = ImportCache(max_age_s)
    return cache


# --- where is a point -----------------------------------------------------------------------


LOCATE_SQL = f"""
SELECT g.code, g.name, g.officer, g.area_m2, c.code, c.name, s.code, s.name
FROM {T.work_grid} g
LEFT JOIN {T.community} c ON c.code = g.community_code
LEFT JOIN {T.street} s ON s.code = c.street_code
WHERE ST_Intersects(g.geom, ST_SetSRID(ST_MakePoint(%s, %s), {SRID}))
ORDER BY g.code LIMIT 1
"""


def _hierarchy(row: tuple) -> dict[str, Any]:
    return {
        "street": {"code": row[6], "name": row[7]} if row[6] else None,
        "community": {"code": row[4], "name": row[5]} if row[4] else None,
        "grid": {"code": row[0], "name": row[1], "officer": row[2], "area_m2": row[3]},
    }


async def locate(conn: AsyncConnection, x: float, y: float) -> dict[str, Any] | None:
    """Street, community and work grid at (x, y) in the storage CRS; None outside every grid.

    On a boundary shared by grids the lowest code wins, as in :class:`GridIndex`."""
    row = await one(conn, LOCATE_SQL, (x, y))
    return _hierarchy(row) if row else None


# --- what a grid holds ----------------------------------------------------------------------


GRID_SQL = f"""
SELECT g.code, g.name, g.officer, g.area_m2, c.code, c.name, s.code, s.name
FROM {T.work_grid} g
LEFT JOIN {T.community} c ON c.code = g.community_code
LEFT JOIN {T.street} s ON s.code = c.street_code
WHERE g.code = %s
"""


async def grid_summary(
    conn: AsyncConnection, code: str, cache: ImportCache | None = None
) -> dict[str, Any] | None:
    """What a grid holds; all but the open incidents comes from ``cache`` when given."""
    if cache is not None:
        out = await cache.get(conn, ("grid", code), lambda: _grid_static(conn, code))
    else:
        out = await _grid_static(conn, code)
    if out is None:
        return None
    out = dict(out)  # the cached dict stays as it is
    inc = await rows(
        conn,
        f"""
        SELECT incident_type, count(*) FROM {T.incident}
        WHERE grid_code = %s AND status = ANY(%s) GROUP BY 1 ORDER BY 1""",
        (code, list(OPEN_STATUSES)),
    )
    out["open_incidents"] = {
        "count": sum(r[1] for r in inc),
        "statuses": list(OPEN_STATUSES),
        "by_type": [{"type": r[0], "count": r[1]} for r in inc],
    }
    return out


async def _grid_static(conn: AsyncConnection, code: str) -> dict[str, Any] | None:
    row = await one(conn, GRID_SQL, (code,))
    if row is None:
        return None
    out = _hierarchy(row)
    b = await one_row(
        conn,
        f"""
        SELECT count(*), coalesce(sum(floor_area_m2), 0), coalesce(sum(residents), 0),
               coalesce(sum(ST_Area(footprint)), 0), max(height_m)
        FROM {T.building} WHERE grid_code = %s""",
        (code,),
    )
    out["buildings"] = {
        "count": b[0],
        "floor_area_m2": b[1],
        "footprint_area_m2": b[3],
        "max_height_m": b[4],
    }
    out["residents"] = b[2]
    bim = await one_row(
        conn,
        f"""
        SELECT count(DISTINCT m.id), count(r.id), coalesce(sum(r.area_m2), 0)
        FROM {T.bim_model} m LEFT JOIN {T.bim_space} r
            ON (r.county_code, r.model_id) = (m.county_code, m.id)
        JOIN {T.work_grid} g ON ST_Intersects(g.geom, ST_PointOnSurface(m.footprint))
        WHERE g.code = %s""",
        (code,),
    )
    out["bim"] = {"models": bim[0], "rooms": bim[1], "room_area_m2": bim[2]}
    # photo tiles with a mesh whose bounds meet the grid (every level of the pyramid), the
    # productions they are of, and the grid's buildings baked into some photo tile (单体化)
    photo = await one_row(
        conn,
        f"""
        SELECT count(*), count(DISTINCT t.dataset),
               count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM {T.oblique_mesh_tile} c
                                                  WHERE (c.county_code, c.parent_id)
                                                      = (t.county_code, t.id)))
        FROM {T.oblique_mesh_tile} t JOIN {T.work_grid} g ON ST_Intersects(g.geom, t.footprint)
        WHERE g.code = %s AND t.content_uri IS NOT NULL""",
        (code,),
    )
    clickable = await one_row(
        conn,
        f"""
        SELECT count(*) FROM {T.building} b WHERE b.grid_code = %s
          AND EXISTS (SELECT 1 FROM {T.oblique_mesh_tile} t WHERE t.building_ids @> ARRAY[b.id])""",
        (code,),
    )
    out["oblique"] = {
        "tiles": photo[0],
        "finest_tiles": photo[2],
        "productions": photo[1],
        "buildings_in_mesh": clickable[0],
    }
    comp = await rows(
        conn,
        f"""
        SELECT c.class_code, k.name, k.major_code, k.major_name, count(*)
        FROM {T.city_component} c LEFT JOIN {T.component_class} k ON k.code = c.class_code
        WHERE c.grid_code = %s GROUP BY 1, 2, 3, 4 ORDER BY 1""",
        (code,),
    )
    out["components"] = {
        "count": sum(r[4] for r in comp),
        "by_class": [
            {"code": r[0], "name": r[1], "major_code": r[2], "major_name": r[3], "count": r[4]}
            for r in comp
        ],
    }
    pipes = await rows(
        conn,
        f"""
        SELECT s.network,
               (SELECT min(t.network_name) FROM {T.pipeline_type} t WHERE t.network = s.network),
               count(*), sum(ST_Length(ST_Intersection(s.geom, g.geom)))
        FROM {T.pipeline_segment} s JOIN {T.work_grid} g ON ST_Intersects(s.geom, g.geom)
        WHERE g.code = %s GROUP BY 1 ORDER BY 1""",
        (code,),
    )
    out["pipelines"] = {
        "length_m": sum(r[3] for r in pipes),
        "rule": "2D length of each pipe clipped to the grid polygon",
        "by_network": [
            {"network": r[0], "name": r[1], "segments": r[2], "length_m": r[3]} for r in pipes
        ],
    }
    parcels = await rows(
        conn,
        f"""
        SELECT p.land_use, l.name, count(*), sum(p.area_m2)
        FROM {T.parcel} p LEFT JOIN {T.land_use_class} l ON l.code = p.land_use
        WHERE p.grid_code = %s GROUP BY 1, 2 ORDER BY 1""",
        (code,),
    )
    out["parcels"] = {
        "count": sum(r[2] for r in parcels),
        "area_m2": sum(r[3] for r in parcels),
        "by_land_use": [
            {"code": r[0], "name": r[1], "count": r[2], "area_m2": r[3]} for r in parcels
        ],
    }
    return out


async def grid_exists(conn: AsyncConnection, code: str) -> bool:
    return await one(conn, f"SELECT 1 FROM {T.work_grid} WHERE code = %s", (code,)) is not None


def _grid_condition(layer: Layer) -> sql.Composable:
    if layer.id == "pipelines":
        return sql.SQL(f"ST_Intersects(t.geom, (SELECT geom FROM {T.work_grid} WHERE code = %s))")
    return sql.SQL("t.grid_code = %s")


async def grid_features(
    conn: AsyncConnection, code: str, layer_id: str, limit: int, offset: int
) -> tuple[Layer, list[tuple], int]:
    """Features of one layer in a grid (GeoJSON geometry text in CRS84), and how many match."""
    layer = BY_ID[layer_id]
    table = sql.Identifier(layer.schema, layer.table)
    cond = _grid_condition(layer)
    cols = [
        sql.SQL("t.{}").format(sql.Identifier(layer.id_column)),
        geojson_sql(sql.SQL("t.{}").format(sql.Identifier(layer.geometry_column))),
        *(sql.SQL("t.{}").format(sql.Identifier(p)) for p in layer.properties),
    ]
    query = sql.SQL("SELECT {} FROM {} t WHERE {} ORDER BY t.{} LIMIT %s OFFSET %s").format(
        sql.SQL(", ").join(cols), table, cond, sql.Identifier(layer.id_column)
    )
    found = await rows(conn, query, (code, limit, offset))
    if offset == 0 and len(found) < limit:
        matched = len(found)
    else:
        count = sql.SQL("SELECT count(*) FROM {} t WHERE {}").format(table, cond)
        matched = (await one_row(conn, count, (code,)))[0]
    return layer, found, matched


# --- 进格入块: bulk assignment --------------------------------------------------------------


FINGERPRINT_SQL = f"""
SELECT md5(concat_ws('|',
  (SELECT string_agg(code || ':' || xmin::text, ',' ORDER BY code) FROM {T.work_grid}),
  (SELECT string_agg(code || ':' || xmin::text, ',' ORDER BY code) FROM {T.community}),
  (SELECT string_agg(code || ':' || xmin::text, ',' ORDER BY code) FROM {T.street})))
"""


@dataclass
class GridLookup:
    """A :class:`GridIndex` with each grid's community and street, for one table state."""

    index: GridIndex
    community: dict[str, str]
    street: dict[str, str]
    fingerprint: str

    def assign(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(street, community, grid) code arrays for storage-CRS points; None outside."""
        grids = self.index.assign(shapely.points(x, y))
        codes = pd.Series(grids, dtype=object)
        communities = codes.map(self.community)
        streets = communities.map(self.street)
        return _none(streets), _none(communities), np.asarray(grids, dtype=object)


def _none(values: pd.Series) -> np.ndarray:
    """Object array with None (not NaN) where a code is missing."""
    arr = values.to_numpy(dtype=object)
    arr[pd.isna(arr)] = None
    return arr


async def _load_lookup(conn: AsyncConnection, fingerprint: str) -> GridLookup:
    grid_rows = await rows(
        conn, f"SELECT code, community_code, ST_AsBinary(geom) FROM {T.work_grid}"
    )
    comm_rows = await rows(conn, f"SELECT code, street_code FROM {T.community}")

    def build() -> GridIndex:
        return GridIndex(
            [r[0] for r in grid_rows],
            list(shapely.from_wkb([bytes(r[2]) for r in grid_rows])) if grid_rows else [],
        )

    index = await asyncio.to_thread(build)
    return GridLookup(index, {r[0]: r[1] for r in grid_rows}, dict(comm_rows), fingerprint)


async def grid_lookup(state: Any, conn: AsyncConnection) -> GridLookup:
    """The process's grid lookup, rebuilt when the grid tables changed since it was made.

    ``state`` is the app's state; the check costs one small query per call (row versions of
    the three tables), so a re-import or an edit of the grids is seen by the next request."""
    lock = getattr(state, "grid_lookup_lock", None)
    if lock is None:
        lock = state.grid_lookup_lock = asyncio.Lock()
    fingerprint = (await one_row(conn, FINGERPRINT_SQL))[0] or ""
    current: GridLookup | None = getattr(state, "grid_lookup", None)
    if current is not None and current.fingerprint == fingerprint:
        return current
    async with lock:
        current = getattr(state, "grid_lookup", None)
        if current is None or current.fingerprint != fingerprint:
            current = await _load_lookup(conn, fingerprint)
            state.grid_lookup = current
    return current

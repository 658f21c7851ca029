"""Ground heights (1985) at storage points, for 3D objects that stand on the ground without a
recorded elevation (city components).

The imported DEM first (bilinear between cell centres, as the terrain tileset is built from
the same cells, so what stands on the ground stands on the drawn terrain); where no DEM
covers a point, the ground of the nearest survey point (管线点 carry surveyed ground
elevations along the same streets); else 0.
"""

from __future__ import annotations

import numpy as np
import psycopg

from cimtwin.spatial.base import SRID
from cimtwin.spatial.sql_toolkit import T
from cimtwin.spatial.terrain import Grid, decode


def bilinear(grid: Grid, values: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Heights between the four nearest node centres; NaN outside the nodes or next to a
    nodata node."""
    fc = (np.asarray(x, np.float64) - grid.origin_x) / grid.cell_x - 0.5
    fr = (grid.origin_y - np.asarray(y, np.float64)) / grid.cell_y - 0.5
    h, w = values.shape
    inside = (fc >= 0) & (fc <= w - 1) & (fr >= 0) & (fr <= h - 1)
    c0 = np.clip(np.floor(fc), 0, max(w - 2, 0)).astype(np.int64)
    r0 = np.clip(np.floor(fr), 0, max(h - 2, 0)).astype(np.int64)
    c1, r1 = np.minimum(c0 + 1, w - 1), np.minimum(r0 + 1, h - 1)
    u, v = fc - c0, fr - r0
    z = (values[r0, c0] * (1 - u) + values[r0, c1] * u) * (1 - v) + (
        values[r1, c0] * (1 - u) + values[r1, c1] * u
    ) * v
    return np.where(inside, z, np.nan)


def dem_heights(conn: psycopg.Connection, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Heights of the DEM blocks under the points (NaN where none covers a point)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    out = np.full(len(x), np.nan)
    if not len(x):
        return out
    rows = conn.execute(
        "SELECT d.origin_x, d.origin_y, d.cell_x, d.cell_y, d.block_size, b.block_row,"
        f" b.block_col, b.rows, b.cols, b.data FROM {T.terrain_dem_block} b"
        f" JOIN {T.terrain_dem} d ON d.id = b.dem_id"
        f" WHERE b.extent && ST_MakeEnvelope(%s, %s, %s, %s, {SRID}) ORDER BY d.id DESC",
        (float(x.min()), float(y.min()), float(x.max()), float(y.max())),
    ).fetchall()
    for ox, oy, cx, cy, size, br, bc, nr, nc, data in rows:
        todo = np.isnan(out)
        if not todo.any():
            break
        # the block's nodes as a grid of their own: node (0, 0) is cell (br*size, bc*size)
        grid = Grid(ox + bc * size * cx, oy - br * size * cy, cx, cy)
        out[todo] = bilinear(grid, decode(data, nr, nc).astype(np.float64), x[todo], y[todo])
    return out


def survey_heights(conn: psycopg.Connection, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The ground elevation of the nearest survey point to each point (NaN without any)."""
    if not len(x):
        return np.empty(0)
    rows = conn.execute(
        "SELECT p.i, g.ground FROM unnest(%s::float8[], %s::float8[]) WITH ORDINALITY"
        " AS p(x, y, i) LEFT JOIN LATERAL (SELECT n.ground_elevation_m AS ground"
        f" FROM {T.pipeline_node} n WHERE n.ground_elevation_m IS NOT NULL"
        f" ORDER BY n.geom <-> ST_SetSRID(ST_MakePoint(p.x, p.y), {SRID}) LIMIT 1) g ON true",
        (np.asarray(x, float).tolist(), np.asarray(y, float).tolist()),
    ).fetchall()
    out = np.full(len(x), np.nan)
    for i, ground in rows:
        if ground is not None:
            out[int(i) - 1] = ground
    return out


def ground_heights(conn: psycopg.Connection, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The DEM's height at each point, else the nearest survey point's ground, else 0."""
    z = dem_heights(conn, x, y)
    missing = np.isnan(z)
    if missing.any():
        z[missing] = survey_heights(conn, np.asarray(x)[missing], np.asarray(y)[missing])
    return np.nan_to_num(z, nan=0.0)

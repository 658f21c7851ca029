"""A synthetic 3D source for the core tests: boxes (one feature each) from a small table
``threed_fake.box`` (centre, size, height) in the test database, so the build's jobs read
PostGIS like a real source does, without depending on any other source module."""

from __future__ import annotations

import numpy as np
import psycopg

from cimtwin.tiles.threed.mesh import FeatureTable, Mesh, Property, TileContent
from cimtwin.tiles.threed.sources.base import Bounds, Box, PropertySpec

TABLE = "threed_fake.box"
X0, Y0 = 503000.0, 2501000.0  # near Shenzhen North in EPSG:4547


def box_mesh(x: float, y: float, half: float, z0: float, z1: float, row: int) -> Mesh:
    """A closed box with its own vertices per face (sharp edges), outward counter-clockwise."""
    c = np.array(
        [[x - half, y - half], [x + half, y - half], [x + half, y + half], [x - half, y + half]]
    )
    quads = [
        [(c[0], z0), (c[3], z0), (c[2], z0), (c[1], z0)],  # bottom, facing down
        [(c[0], z1), (c[1], z1), (c[2], z1), (c[3], z1)],  # top
    ]
    for i in range(4):
        a, b = c[i], c[(i + 1) % 4]
        quads.append([(a, z0), (b, z0), (b, z1), (a, z1)])
    pos, tri = [], []
    for q in quads:
        base = len(pos)
        pos += [(p[0], p[1], z) for p, z in q]
        tri += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    color = (200, 60 + 10 * (row % 10), 40, 255)
    return Mesh(np.array(pos), np.array(tri), row, color)


def create_table(conn: psycopg.Connection) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS threed_fake")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, x float8, y float8, "
        "half float8, z0 float8, z1 float8, name text, floors int)"
    )


def fill_grid(conn: psycopg.Connection, n: int, step: float = 40.0, x0: float = X0) -> None:
    """n x n boxes on a regular grid from (x0, Y0)."""
    conn.execute(f"DELETE FROM {TABLE}")
    rows = []
    for i in range(n):
        for j in range(n):
            k = i * n + j + 1
            name = None if k % 7 == 0 else f"box {k}"
            rows.append((k, x0 + i * step, Y0 + j * step, 8.0, 5.0, 20.0 + k % 13, name, k % 9))
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", rows)


class FakeSource:
    """Boxes anchored at their centres; a parent shows every box as a flat-topped block at
    the tile's mean height, its error the largest height difference (measured)."""

    id = "fakeboxes"
    title = "Synthetic boxes"
    layer = None
    class_name = "box"
    properties = (
        PropertySpec("name", "STRING", "the box's name"),
        PropertySpec("height", "FLOAT64", "top minus bottom (m)"),
        PropertySpec("floors", "INT64"),
    )
    max_features_per_tile = 30

    def bounds(self, conn: psycopg.Connection) -> Bounds | None:
        row = conn.execute(
            f"SELECT min(x - half), min(y - half), max(x + half), max(y + half), min(z0), "
            f"max(z1) FROM {TABLE}"
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return Bounds((row[0], row[1], row[2], row[3]), row[4], row[5])

    def count(self, conn: psycopg.Connection, box: Box) -> int:
        row = conn.execute(
            f"SELECT count(*) FROM {TABLE} WHERE x >= %s AND y >= %s AND x < %s AND y < %s", box
        ).fetchone()
        return int(row[0]) if row else 0

    def content(self, conn: psycopg.Connection, box: Box, tolerance_m: float) -> TileContent | None:
        rows = conn.execute(
            f"SELECT id, x, y, half, z0, z1, name, floors FROM {TABLE} "
            "WHERE x >= %s AND y >= %s AND x < %s AND y < %s ORDER BY id",
            box,
        ).fetchall()
        if not rows:
            return None
        error = 0.0
        tops = [r[5] for r in rows]
        if tolerance_m > 0:
            mean = float(np.mean(tops))
            error = max(abs(t - mean) for t in tops)
            tops = [mean] * len(rows)
        meshes = [
            box_mesh(r[1], r[2], r[3], r[4], top, i)
            for i, (r, top) in enumerate(zip(rows, tops, strict=True))
        ]
        features = FeatureTable(
            "box",
            [r[0] for r in rows],
            [
                Property("name", "STRING", [r[6] for r in rows]),
                Property("height", "FLOAT64", [r[5] - r[4] for r in rows]),
                Property("floors", "INT64", [r[7] for r in rows]),
            ],
        )
        return TileContent(Mesh.concat(meshes), features, error)


class FakeBuildingSource:
    """Each building of ``cim.building`` as a box at its footprint's point on surface (side
    sqrt(area)), from its base up by its height: a stand-in with the real import path, so
    the incremental build is tested on re-imported buildings (not the real buildings source,
    which lives on another branch)."""

    id = "fakebuildings"
    title = "Synthetic building boxes"
    layer = "buildings"
    class_name = "building"
    properties = (
        PropertySpec("code", "STRING"),
        PropertySpec("height", "FLOAT64"),
    )
    import_kinds = ("buildings",)
    max_features_per_tile = 20

    _anchor = "ST_PointOnSurface(footprint)"

    def bounds(self, conn: psycopg.Connection) -> Bounds | None:
        row = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e), h0, h1 FROM (SELECT "
            "ST_Extent(footprint) e, min(coalesce(base_elevation_m, 0)) h0, "
            "max(coalesce(base_elevation_m, 0) + height_m) h1 FROM cim.building) s"
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return Bounds((row[0], row[1], row[2], row[3]), row[4], row[5])

    def _where(self) -> str:
        a = self._anchor
        return f"ST_X({a}) >= %s AND ST_Y({a}) >= %s AND ST_X({a}) < %s AND ST_Y({a}) < %s"

    def count(self, conn: psycopg.Connection, box: Box) -> int:
        row = conn.execute(f"SELECT count(*) FROM cim.building WHERE {self._where()}", box)
        got = row.fetchone()
        return int(got[0]) if got else 0

    def content(self, conn: psycopg.Connection, box: Box, tolerance_m: float) -> TileContent | None:
        rows = conn.execute(
            f"SELECT id, building_code, ST_X({self._anchor}), ST_Y({self._anchor}), "
            "sqrt(ST_Area(footprint)) / 2, coalesce(base_elevation_m, 0), height_m "
            f"FROM cim.building WHERE {self._where()} ORDER BY id",
            box,
        ).fetchall()
        if not rows:
            return None
        meshes = [box_mesh(r[2], r[3], r[4], r[5], r[5] + r[6], i) for i, r in enumerate(rows)]
        features = FeatureTable(
            "building",
            [r[0] for r in rows],
            [
                Property("code", "STRING", [r[1] for r in rows]),
                Property("height", "FLOAT64", [r[6] for r in rows]),
            ],
        )
        # a parent would simplify; this stand-in shows full detail everywhere (error 0)
        return TileContent(Mesh.concat(meshes), features, 0.0)

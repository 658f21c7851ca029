"""Underground structures (metro stations and tunnels, passages, utility tunnels) as closed
volumes: the footprint extruded from ``bottom_elevation_m`` to ``top_elevation_m`` (1985
heights) with floor, walls and ceiling, since they are looked at from below and around.
Triangles face outward like every solid; a viewer inside one needs the writer's double-sided
material to see its walls. Anchored at ``ST_PointOnSurface(footprint)``; far views follow
:func:`cimtwin.tiles.threed.extrusion.choose` like buildings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg
import shapely

from cimtwin.spatial.base import SRID
from cimtwin.spatial.sql_toolkit import T
from cimtwin.tiles.threed.colors import underground_color
from cimtwin.tiles.threed.extrusion import Part, Solid, choose, solids_mesh
from cimtwin.tiles.threed.mesh import FeatureTable, Property, TileContent
from cimtwin.tiles.threed.sources.base import Bounds, Box, PropertySpec

_IN_BOX = f"""
FROM {T.underground_structure} AS u
CROSS JOIN LATERAL ST_PointOnSurface(u.footprint) AS a(pt)
WHERE u.footprint && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, {SRID})
  AND ST_X(a.pt) >= %(x0)s AND ST_X(a.pt) < %(x1)s
  AND ST_Y(a.pt) >= %(y0)s AND ST_Y(a.pt) < %(y1)s
"""


@dataclass(frozen=True)
class UndergroundRow:
    id: int
    code: str
    kind: str
    name: str
    top_elevation_m: float
    bottom_elevation_m: float
    footprint: shapely.Geometry

    def solid(self) -> Solid:
        part = Part(
            self.bottom_elevation_m,
            self.top_elevation_m,
            underground_color(self.kind),
            roof=True,
            floor=True,
        )
        return Solid(self.footprint, [part])


class UndergroundSource:
    """The ``underground`` tileset: ids of the ``underground`` collection."""

    id = "underground"
    title = "Underground structures"
    layer = "underground"
    #: the import kinds whose batches can change it (``build-3d --changed``)
    import_kinds = ("buildings",)
    class_name = "underground_structure"
    properties = (
        PropertySpec("code", "STRING", "structure code"),
        PropertySpec("kind", "STRING", "metro_station, metro_tunnel, underground_passage, ..."),
        PropertySpec("name", "STRING", "name"),
        PropertySpec("top_elevation", "FLOAT64", "top (ceiling) elevation, m, 1985"),
        PropertySpec("bottom_elevation", "FLOAT64", "bottom (floor) elevation, m, 1985"),
    )
    max_features_per_tile = 500

    def bounds(self, conn: psycopg.Connection) -> Bounds | None:
        row = conn.execute(
            f"""SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e), lo, hi FROM (
                  SELECT ST_Extent(footprint) AS e, min(bottom_elevation_m) AS lo,
                         max(top_elevation_m) AS hi
                  FROM {T.underground_structure}) AS s"""
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return Bounds((row[0], row[1], row[2], row[3]), float(row[4]), float(row[5]))

    def count(self, conn: psycopg.Connection, box: Box) -> int:
        params = {"x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]}
        row = conn.execute(f"SELECT count(*) {_IN_BOX}", params).fetchone()
        return int(row[0]) if row else 0

    def rows(self, conn: psycopg.Connection, box: Box) -> list[UndergroundRow]:
        """The structures anchored in ``box``, by id."""
        params = {"x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]}
        cur = conn.execute(
            f"""SELECT u.id, u.code, u.kind, u.name, u.top_elevation_m, u.bottom_elevation_m,
                       ST_AsBinary(u.footprint)
                {_IN_BOX} ORDER BY u.id""",
            params,
        )
        return [
            UndergroundRow(r[0], r[1], r[2], r[3], r[4], r[5], shapely.from_wkb(r[6]))
            for r in cur.fetchall()
        ]

    def content(self, conn: psycopg.Connection, box: Box, tolerance_m: float) -> TileContent | None:
        rows = self.rows(conn, box)
        if not rows:
            return None
        solids = [r.solid() for r in rows]
        choice = choose(solids, tolerance_m, self.max_features_per_tile)
        kept = [rows[i] for i in choice.kept]
        specs = {s.name: s.description for s in self.properties}
        features = FeatureTable(
            self.class_name,
            np.array([r.id for r in kept], dtype=np.int64),
            [
                Property("code", "STRING", [r.code for r in kept], specs["code"]),
                Property("kind", "STRING", [r.kind for r in kept], specs["kind"]),
                Property("name", "STRING", [r.name for r in kept], specs["name"]),
                Property(
                    "top_elevation",
                    "FLOAT64",
                    [r.top_elevation_m for r in kept],
                    specs["top_elevation"],
                ),
                Property(
                    "bottom_elevation",
                    "FLOAT64",
                    [r.bottom_elevation_m for r in kept],
                    specs["bottom_elevation"],
                ),
            ],
        )
        return TileContent(solids_mesh(solids, choice), features, choice.error_m)

"""单体化: building footprints baked into the photo mesh as EXT_mesh_features ids.

The footprints of ``cim.building`` meeting the production are read once per import (one
query for the production's extent in the storage CRS) into an STRtree; each tile's
triangles are then labelled with shapely's vectorised ``contains_xy`` on their centroids.

Per triangle, not per vertex: CesiumJS interpolates the feature-id attribute across a
triangle, so a triangle whose corners carry different ids (one inside a footprint, one
outside) would pick arbitrary ids in between along its face. Each triangle therefore gets
one building (the one containing its centroid, the lowest id where footprints overlap) and
the vertices it shares with triangles of another building (or of none) are duplicated, so
every vertex of a triangle carries the triangle's id. The cut follows the mesh's own edges
(at the finest level about half a metre); the mesh and its textures are not re-triangulated.

Triangles outside every footprint carry the glb's ``nullFeatureId``: they pick nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg
import shapely

from cimtwin.spatial.base import SRID
from cimtwin.spatial.sql_toolkit import T
from cimtwin.tiles.threed.glb import SchemaProperty
from cimtwin.tiles.threed.mesh import NO_FEATURE, FeatureTable, Mesh, Property
from cimtwin.tiles.threed.sources.buildings import ogc_id_column

CLASS = "building"
#: the building properties each tile's table carries (the viewer fetches the rest by id)
PROPERTIES = (
    SchemaProperty("code", "STRING", "building code (building_code)"),
    SchemaProperty("name", "STRING", "name"),
    SchemaProperty("use", "STRING", "use (residential, office, ...)"),
    SchemaProperty("height", "FLOAT64", "recorded height above the base, m"),
    SchemaProperty("floors", "INT64", "floors above ground"),
    SchemaProperty("grid", "STRING", "work grid code (grid_code)"),
)
#: rows read at most for one production (a 20 000-building base map fits many times over)
MAX_BUILDINGS = 500_000
_ID = ogc_id_column("buildings")


@dataclass
class Footprints:
    """The buildings meeting a production: ids (the ``buildings`` collection's), their
    properties and footprints, an STRtree over the footprints."""

    ids: np.ndarray
    rows: list[tuple]  # code, name, use, height, floors, grid
    geoms: np.ndarray

    def __post_init__(self) -> None:
        self.tree = shapely.STRtree(self.geoms)
        for g in self.geoms:
            shapely.prepare(g)

    @classmethod
    def empty(cls) -> Footprints:
        return cls(np.empty(0, dtype=np.int64), [], np.empty(0, dtype=object))

    @classmethod
    def read(cls, conn: psycopg.Connection, bbox: tuple[float, float, float, float]) -> Footprints:
        """The footprints meeting ``bbox`` (storage CRS), by id."""
        cur = conn.execute(
            f"""SELECT b.{_ID}, b.building_code, b.name, b.use, b.height_m, b.floors,
                       b.grid_code, ST_AsBinary(b.footprint)
                FROM {T.building} AS b
                WHERE b.footprint && ST_MakeEnvelope(%s, %s, %s, %s, {SRID})
                ORDER BY b.{_ID} LIMIT %s""",
            (*bbox, MAX_BUILDINGS + 1),
        )
        got = cur.fetchall()
        if len(got) > MAX_BUILDINGS:
            raise ValueError(
                f"more than {MAX_BUILDINGS} buildings meet the production: split it into "
                "several imports"
            )
        ids = np.array([r[0] for r in got], dtype=np.int64)
        geoms = np.array([shapely.from_wkb(r[7]) for r in got], dtype=object)
        return cls(ids, [tuple(r[1:7]) for r in got], geoms)

    def __len__(self) -> int:
        return len(self.ids)

    def label(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per point, the index (into :attr:`ids`) of the footprint containing it, -1 for
        none; where footprints overlap, the lowest id."""
        out = np.full(len(x), -1, dtype=np.int64)
        if not len(self) or not len(x):
            return out
        box = shapely.box(float(x.min()), float(y.min()), float(x.max()), float(y.max()))
        # the points sorted by x: a footprint's x range is a slice (two binary searches),
        # so each candidate costs its own points, not the tile's
        order = np.argsort(x, kind="stable")
        xs, ys = x[order], y[order]
        # ids are sorted, so the candidates in descending order let the lowest id write last
        for i in sorted(self.tree.query(box).tolist(), reverse=True):
            x0, y0, x1, y1 = shapely.bounds(self.geoms[i])
            lo, hi = int(np.searchsorted(xs, x0, "left")), int(np.searchsorted(xs, x1, "right"))
            band = np.arange(lo, hi)[(ys[lo:hi] >= y0) & (ys[lo:hi] <= y1)]
            if len(band):
                inside = shapely.contains_xy(self.geoms[i], xs[band], ys[band])
                out[order[band[inside]]] = i
        return out

    def bake(self, mesh: Mesh) -> tuple[Mesh, FeatureTable, list[int]]:
        """The mesh with each triangle's building as its vertices' feature (module
        docstring), the tile's table of those buildings, and their ids."""
        tri = mesh.triangles
        centroid = mesh.positions[tri].mean(axis=1)
        building = self.label(centroid[:, 0], centroid[:, 1])
        touched = np.unique(building[building >= 0])
        row_of = np.zeros(len(self) + 1, dtype=np.int64)  # [-1]: outside, masked below
        row_of[touched] = np.arange(len(touched))
        k = len(touched)
        corner_row = np.repeat(np.where(building >= 0, row_of[building], k), 3)  # k: none
        corner_vertex = tri.reshape(-1).astype(np.int64)
        # each vertex keeps its place and takes the row of the first triangle using it (an
        # unused vertex: none); a corner of another row gets a copy of its vertex, appended
        n = len(mesh.positions)
        primary = np.full(n, k, dtype=np.int64)
        used, first = np.unique(corner_vertex, return_index=True)
        primary[used] = corner_row[first]
        other = corner_row != primary[corner_vertex]
        key = corner_vertex[other] * (k + 1) + corner_row[other]
        extra, slot = np.unique(key, return_inverse=True)
        old = np.concatenate([np.arange(n), extra // (k + 1)])
        rows = np.concatenate([primary, extra % (k + 1)])
        corners = corner_vertex.copy()
        corners[other] = n + slot
        baked = Mesh(
            mesh.positions[old],
            corners.reshape(-1, 3),
            np.where(rows == k, NO_FEATURE, rows),
            mesh.colors[old],
            None if mesh.uvs is None else mesh.uvs[old],
            mesh.textures,
        )
        picked = [self.rows[i] for i in touched.tolist()]
        table = FeatureTable(
            CLASS,
            self.ids[touched],
            [
                Property(p.name, p.type, [r[j] for r in picked], p.description)
                for j, p in enumerate(PROPERTIES)
            ],
        )
        return baked, table, [int(v) for v in self.ids[touched]]

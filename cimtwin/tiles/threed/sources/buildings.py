"""Buildings as LOD1 solids: footprint extruded from the ground (base elevation, 1985 height) to
base + height, with the underground floors as a second, darker prism below the base.

Heights: ``height_m``, else ``floors`` x :data:`DEFAULT_STOREY_M`, else one storey. The
underground part is ``underground_floors`` storeys deep; the storey is the building's own mean
storey (``height_m / floors``), clamped to :data:`MIN_STOREY_M`..:data:`MAX_STOREY_M` (a basement
is a storey like the others, but a station hall's 15 m mean storey is not a basement's), and
:data:`DEFAULT_STOREY_M` when either is unknown. A building without a base elevation has no
known ground and is left out (counted nowhere).

A building with a BIM model (``bim_model.building_id``) is left out: its model's own
tileset (:mod:`.bim`) draws it, element by element; re-importing or deleting the model is an
``ifc`` batch, so ``build-3d --changed`` rebuilds the building's tile.

The above-ground prism has walls and a roof, and a floor only when there is no underground part
(then its underside is the bottom a viewer sees from below ground); the underground prism has
walls and a floor (its top is hidden by the building standing on it). Every feature is anchored
at ``ST_PointOnSurface(footprint)``; the level of detail for far views is
:func:`cimtwin.tiles.threed.extrusion.choose` (small buildings left out, footprints simplified,
error measured).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg
import shapely

from cimtwin.spatial.base import SRID
from cimtwin.spatial.catalogue import get_collection
from cimtwin.spatial.sql_toolkit import T
from cimtwin.tiles.threed.colors import building_color, shade
from cimtwin.tiles.threed.extrusion import Part, Solid, choose, solids_mesh
from cimtwin.tiles.threed.mesh import FeatureTable, Property, TileContent
from cimtwin.tiles.threed.sources.base import Bounds, Box, PropertySpec

#: storey height (m) when a building's own is unknown: the residential storey of GB 50096
#: (2.8 to 3.0 m) rounded up, and the sample generator's residential storey
DEFAULT_STOREY_M = 3.0
MIN_STOREY_M = 3.0
MAX_STOREY_M = 5.0


def storey_m(height_m: float | None, floors: int | None) -> float:
    """The storey height used for a building's underground floors (module docstring)."""
    if height_m and floors:
        return min(max(height_m / floors, MIN_STOREY_M), MAX_STOREY_M)
    return DEFAULT_STOREY_M


def drawn_height_m(height_m: float | None, floors: int | None) -> float:
    """The height drawn: the recorded one, else floors x the default storey, else one storey."""
    if height_m:
        return float(height_m)
    if floors:
        return floors * DEFAULT_STOREY_M
    return DEFAULT_STOREY_M


def ogc_id_column(layer_id: str) -> str:
    """The quoted id column of an OGC API Features collection (the catalogue's allow-list):
    the feature ids of a 3D tileset are that collection's ids."""
    layer = get_collection(layer_id)
    if layer is None:
        raise RuntimeError(f"no OGC API Features collection {layer_id!r} in the catalogue")
    return '"' + layer.id_column.replace('"', '""') + '"'


_ID = ogc_id_column("buildings")

# the same rules in SQL, for the extent without fetching every building
_STOREY_SQL = (
    f"LEAST(GREATEST(COALESCE(b.height_m / NULLIF(b.floors, 0), {DEFAULT_STOREY_M}),"
    f" {MIN_STOREY_M}), {MAX_STOREY_M})"
)
_HEIGHT_SQL = f"COALESCE(b.height_m, NULLIF(b.floors, 0) * {DEFAULT_STOREY_M}, {DEFAULT_STOREY_M})"
_DEPTH_SQL = f"COALESCE(b.underground_floors, 0) * {_STOREY_SQL}"
_SIZE_SQL = (
    f"GREATEST(2 * (ST_MinimumBoundingRadius(b.footprint)).radius, {_HEIGHT_SQL} + {_DEPTH_SQL})"
)

# anchored in the half-open box; the && lets the footprint index narrow the search first
_IN_BOX = f"""
FROM {T.building} AS b
CROSS JOIN LATERAL ST_PointOnSurface(b.footprint) AS a(pt)
WHERE b.footprint && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, {SRID})
  AND b.base_elevation_m IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM {T.bim_model} AS m WHERE m.building_id = b.{_ID})
  AND ST_X(a.pt) >= %(x0)s AND ST_X(a.pt) < %(x1)s
  AND ST_Y(a.pt) >= %(y0)s AND ST_Y(a.pt) < %(y1)s
"""


def _box(box: Box) -> dict[str, float]:
    return {"x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3]}


@dataclass(frozen=True)
class BuildingRow:
    id: int
    code: str | None
    name: str | None
    use: str | None
    height_m: float | None
    floors: int | None
    underground_floors: int
    base_elevation_m: float
    grid_code: str | None
    footprint: shapely.Geometry

    def solid(self) -> Solid:
        """The building's prisms (module docstring)."""
        color = building_color(self.use)
        base = self.base_elevation_m
        top = base + drawn_height_m(self.height_m, self.floors)
        depth = self.underground_floors * storey_m(self.height_m, self.floors)
        parts = [Part(base, top, color, roof=True, floor=depth <= 0)]
        if depth > 0:
            parts.append(Part(base - depth, base, shade(color), roof=False, floor=True))
        return Solid(self.footprint, parts)


class BuildingsSource:
    """The ``buildings`` tileset: one feature per building, ids of the ``buildings`` collection."""

    id = "buildings"
    title = "Buildings (LOD1)"
    layer = "buildings"
    #: the import kinds whose batches can change it (``build-3d --changed``): an IFC model
    #: replaces its building's LOD1 solid (the BIM tileset draws it)
    import_kinds = ("buildings", "ifc")
    class_name = "building"
    properties = (
        PropertySpec("code", "STRING", "building code (building_code)"),
        PropertySpec("name", "STRING", "name"),
        PropertySpec("use", "STRING", "use (residential, office, ...)"),
        PropertySpec("height", "FLOAT64", "recorded height above the base, m"),
        PropertySpec("floors", "INT64", "floors above ground"),
        PropertySpec("underground_floors", "INT64", "floors below ground"),
        PropertySpec("base_elevation", "FLOAT64", "ground elevation at the building, m, 1985"),
        PropertySpec("grid", "STRING", "work grid code (grid_code)"),
    )
    #: measured on the sample: 1.6 kB of glb per building (mostly rectangles with underground
    #: floors, 40 vertices); 300 make about 0.5 MB, room for footprints twice as detailed
    #: under the 1 MB target. A parent keeps this many too (extrusion.choose).
    max_features_per_tile = 300

    def bounds(self, conn: psycopg.Connection) -> Bounds | None:
        row = conn.execute(
            f"""SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e), lo, hi FROM (
                  SELECT ST_Extent(b.footprint) AS e,
                         min(b.base_elevation_m - {_DEPTH_SQL})
                           AS lo,
                         max(b.base_elevation_m + {_HEIGHT_SQL}) AS hi
                  FROM {T.building} AS b WHERE b.base_elevation_m IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM {T.bim_model} AS m
                                    WHERE m.building_id = b.{_ID})) AS s"""
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return Bounds((row[0], row[1], row[2], row[3]), float(row[4]), float(row[5]))

    def count(self, conn: psycopg.Connection, box: Box) -> int:
        row = conn.execute(f"SELECT count(*) {_IN_BOX}", _box(box)).fetchone()
        return int(row[0]) if row else 0

    def rows(
        self, conn: psycopg.Connection, box: Box, largest: int | None = None
    ) -> list[BuildingRow]:
        """The buildings anchored in ``box``, by id; with ``largest``, only that many, the
        largest by :attr:`~cimtwin.tiles.threed.extrusion.Solid.size` (computed in SQL by the
        same rules), so a parent over a large box reads a bounded number of rows."""
        order, params = f"b.{_ID}", _box(box)
        if largest is not None:
            order, params["largest"] = f"{_SIZE_SQL} DESC, b.{_ID} LIMIT %(largest)s", largest
        cur = conn.execute(
            f"""SELECT b.{_ID}, b.building_code, b.name, b.use, b.height_m, b.floors,
                       COALESCE(b.underground_floors, 0), b.base_elevation_m, b.grid_code,
                       ST_AsBinary(b.footprint)
                {_IN_BOX} ORDER BY {order}""",
            params,
        )
        return [
            BuildingRow(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], shapely.from_wkb(r[9])
            )
            for r in cur.fetchall()
        ]

    def content(self, conn: psycopg.Connection, box: Box, tolerance_m: float) -> TileContent | None:
        # a parent keeps at most the budget's largest buildings, and its error is the size of
        # the largest one it leaves out: the budget + 1 largest decide both (extrusion.choose)
        budget = self.max_features_per_tile
        rows = self.rows(conn, box, budget + 1 if tolerance_m > 0 else None)
        if not rows:
            return None
        solids = [r.solid() for r in rows]
        choice = choose(solids, tolerance_m, budget)
        kept = [rows[i] for i in choice.kept]
        features = FeatureTable(
            self.class_name,
            np.array([r.id for r in kept], dtype=np.int64),
            [
                Property("code", "STRING", [r.code for r in kept]),
                Property("name", "STRING", [r.name for r in kept]),
                Property("use", "STRING", [r.use for r in kept]),
                Property("height", "FLOAT64", [r.height_m for r in kept]),
                Property("floors", "INT64", [r.floors for r in kept]),
                Property("underground_floors", "INT64", [r.underground_floors for r in kept]),
                Property("base_elevation", "FLOAT64", [r.base_elevation_m for r in kept]),
                Property("grid", "STRING", [r.grid_code for r in kept]),
            ],
        )
        for p, spec in zip(features.properties, self.properties, strict=True):
            p.description = spec.description
        return TileContent(solids_mesh(solids, choice), features, choice.error_m)

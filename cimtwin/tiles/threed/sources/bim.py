"""BIM models as 3D Tiles: one tileset per imported IFC model (``bim-<name>``), one feature per
IFC element, feature ids = ``bim_elements`` collection ids (``bim_element.id``).

The triangles are the ones the importer stored (``bim_element.geom``, a TIN Z in the storage
CRS with 1985 heights, float64 from IfcOpenShell): read back as the TIN's points (four per
triangle, the ring closed) so no re-triangulation happens here, and placed on the globe by the
one placement path like every other source. Each element keeps its own vertices (the writer
computes flat normals per triangle from them, walls and slabs stay sharp).

Spaces (IfcSpace, the rooms) are not drawn: they are volumes around everything else in a room,
drawn they would hide the walls and furniture inside them (or make every tile translucent);
rooms are answered by the indoor API and the ``rooms`` collection instead. Elements are
anchored at the centre of their 2D bounding box; a parent tile (far views) keeps the
elements at least as large as its tolerance, largest first, up to the tile budget of them and
:data:`PARENT_TRIANGLES` triangles, and its error is the size of the largest element it
leaves out.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import psycopg
import shapely

from cimtwin.spatial.base import SRID
from cimtwin.spatial.sql_toolkit import T
from cimtwin.tiles.threed.mesh import FeatureTable, Mesh, Property, TileContent
from cimtwin.tiles.threed.sources.base import Bounds, Box, PropertySpec

#: classes left out of the model's tileset (module docstring)
NOT_DRAWN = ("IfcSpace", "IfcOpeningElement")
#: a parent (far view) holds at most this many triangles, the largest elements first: about
#: 0.7 MB of glb, so a tile split for its bytes gets a parent lighter than its children
PARENT_TRIANGLES = 12_000
#: vertices of one element closer than this (m), on faces of the same orientation, are one
WELD_M = 1e-4
#: an element without a colour of its own (IFC allows it): a light grey
DEFAULT_RGBA = (200, 200, 200, 255)
FAMILY = "bim"
#: the common property-set values every feature carries (besides guid, class, name ...)
COMMON_PROPERTIES = {
    "is_external": "IsExternal",
    "load_bearing": "LoadBearing",
    "fire_rating": "FireRating",
}

_ANCHOR = "ST_Centroid(ST_Envelope(e.geom))"
_SIZE = (
    "sqrt(power(ST_XMax(e.geom) - ST_XMin(e.geom), 2) + power(ST_YMax(e.geom) - ST_YMin(e.geom), 2)"
    " + power(ST_ZMax(e.geom) - ST_ZMin(e.geom), 2))"
)
_DRAWN = "e.geom IS NOT NULL AND NOT (e.ifc_class = ANY(%(skip)s))"
_IN_BOX = f"""
FROM {T.bim_element} AS e
CROSS JOIN LATERAL {_ANCHOR} AS a(pt)
WHERE e.model_id = %(model)s AND {_DRAWN}
  AND e.geom && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, {SRID})
  AND ST_X(a.pt) >= %(x0)s AND ST_X(a.pt) < %(x1)s
  AND ST_Y(a.pt) >= %(y0)s AND ST_Y(a.pt) < %(y1)s
"""


def _common(key: str) -> str:
    # the first property set holding ``key`` (Pset_WallCommon.IsExternal, Pset_DoorCommon ...)
    return (
        "(SELECT q.value #>> '{}' FROM jsonb_each(e.properties) AS p(k, v), "
        f"jsonb_each(CASE WHEN jsonb_typeof(p.v) = 'object' THEN p.v ELSE '{{}}' END) AS q "
        f"WHERE q.key = '{key}' ORDER BY p.k LIMIT 1)"
    )


def tileset_id(name: str, dataset: str) -> str:
    """The folder (and /3dtiles id) of a model's tileset: readable and stable across
    re-imports of the same dataset (``bim-duplex_a_20110907-1a2b3c``)."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40] or "model"
    tag = hashlib.sha256(dataset.encode()).hexdigest()[:6]
    return f"{FAMILY}-{slug}-{tag}"


def model_tilesets(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(tileset id, source target) of every imported model, by name."""
    rows = conn.execute(f"SELECT name, dataset FROM {T.bim_model} ORDER BY name, id").fetchall()
    return [(tileset_id(r[0], r[1]), f"{__name__}:BimSource#{r[1]}") for r in rows]


def model_title(model: str, building: str | None, code: str | None) -> str:
    """The title the layer list shows: the building the model is of, then the model's name
    (``BIM 天悦广场 JZ4403090000180 · sample:north_station:ifc``)."""
    named = " ".join(v for v in (building, code) if v)
    return f"BIM {named} · {model}" if named else f"BIM {model}"


def rgba(color: str | None) -> tuple[int, int, int, int]:
    """``#rrggbb`` / ``#rrggbbaa`` -> RGBA; the default grey when absent or malformed."""
    v = (color or "").lstrip("#")
    if not re.fullmatch(r"[0-9a-fA-F]{6}([0-9a-fA-F]{2})?", v):
        return DEFAULT_RGBA
    return (int(v[0:2], 16), int(v[2:4], 16), int(v[4:6], 16), int(v[6:8], 16) if v[6:] else 255)


def tin_triangles(points_wkb: bytes) -> np.ndarray:
    """(n, 3, 3) triangles of a TIN Z from the WKB of its ``ST_Points`` (four points a
    triangle: the closing point is dropped)."""
    coords = shapely.get_coordinates(shapely.from_wkb(points_wkb), include_z=True)
    if len(coords) % 4:
        raise ValueError(f"a TIN's points come in fours, not {len(coords)}")
    return coords.reshape(-1, 4, 3)[:, :3, :]


@dataclass(frozen=True)
class ElementRow:
    id: int
    guid: str
    ifc_class: str
    name: str | None
    ifc_type: str | None
    storey: str | None
    storey_elevation: float | None
    color: str | None
    common: tuple[str | None, ...]
    size: float
    triangles: np.ndarray


class BimSource:
    """One model's tileset; ``dataset`` is the ``bim_model.dataset`` it draws."""

    layer = "bim_elements"
    import_kinds = ("ifc",)
    class_name = "bim_element"
    properties = (
        PropertySpec("guid", "STRING", "IFC GlobalId"),
        PropertySpec("ifc_class", "STRING", "IFC entity (IfcWall, IfcDoor ...)"),
        PropertySpec("name", "STRING", "IFC Name"),
        PropertySpec("type", "STRING", "type object name, else ObjectType"),
        PropertySpec("storey", "STRING", "building storey"),
        PropertySpec("storey_elevation", "FLOAT64", "storey elevation, m, 1985"),
        PropertySpec("model", "STRING", "the model (bim_model.name)"),
        PropertySpec("is_external", "STRING", "Pset_*Common.IsExternal"),
        PropertySpec("load_bearing", "STRING", "Pset_*Common.LoadBearing"),
        PropertySpec("fire_rating", "STRING", "Pset_*Common.FireRating"),
    )
    #: measured on the Duplex: 215 elements, 26 000 triangles, 1.5 MB of glb (7 kB an
    #: element; stairs and furniture are the heavy ones): 120 keep a leaf under 1 MB; heavier
    #: leaves are split by the builder's byte budget
    max_features_per_tile = 120
    #: a model is a building, not a district: 64 m level-0 tiles (8 m at level 3), so a
    #: house is one to four tiles and a station's model splits where it is dense
    root_tile_m = 64.0

    def __init__(self, dataset: str = "") -> None:
        self.dataset = dataset
        self.id = FAMILY
        self.title = "BIM model"
        self._model: tuple[int, str] | None = None

    def _model_row(self, conn: psycopg.Connection) -> tuple[int, str] | None:
        if self._model is None:
            row = conn.execute(
                f"""SELECT m.id, m.name, b.name, b.building_code FROM {T.bim_model} AS m
                    LEFT JOIN {T.building} AS b
                        ON (b.county_code, b.id) = (m.county_code, m.building_id)
                    WHERE m.dataset = %s""",
                (self.dataset,),
            ).fetchone()
            if row is None:
                return None
            self._model = (int(row[0]), str(row[1]))
            self.id = tileset_id(self._model[1], self.dataset)
            self.title = model_title(row[1], row[2], row[3])
        return self._model

    def _params(self, conn: psycopg.Connection, box: Box) -> dict | None:
        model = self._model_row(conn)
        if model is None:
            return None
        return {
            "model": model[0],
            "skip": list(NOT_DRAWN),
            "x0": box[0],
            "y0": box[1],
            "x1": box[2],
            "y1": box[3],
        }

    def bounds(self, conn: psycopg.Connection) -> Bounds | None:
        model = self._model_row(conn)
        if model is None:
            return None
        row = conn.execute(
            f"""SELECT ST_XMin(x), ST_YMin(x), ST_XMax(x), ST_YMax(x), ST_ZMin(x), ST_ZMax(x)
                FROM (SELECT ST_3DExtent(e.geom) AS x FROM {T.bim_element} AS e
                      WHERE e.model_id = %(model)s AND {_DRAWN}) AS s""",
            {"model": model[0], "skip": list(NOT_DRAWN)},
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return Bounds((row[0], row[1], row[2], row[3]), float(row[4]), float(row[5]))

    def count(self, conn: psycopg.Connection, box: Box) -> int:
        params = self._params(conn, box)
        if params is None:
            return 0
        row = conn.execute(f"SELECT count(*) {_IN_BOX}", params).fetchone()
        return int(row[0]) if row else 0

    def rows(
        self, conn: psycopg.Connection, box: Box, min_size: float = 0.0, largest: int | None = None
    ) -> list[ElementRow]:
        """The elements anchored in ``box`` at least ``min_size`` m across, by id; with
        ``largest``, only that many of them, the largest first (then by id)."""
        params = self._params(conn, box)
        if params is None:
            return []
        params["min_size"] = min_size
        order = "e.id"
        if largest is not None:
            order, params["largest"] = f"{_SIZE} DESC, e.id LIMIT %(largest)s", largest
        common = ", ".join(_common(k) for k in COMMON_PROPERTIES.values())
        cur = conn.execute(
            f"""SELECT e.id, e.ifc_guid, e.ifc_class, e.name, e.ifc_type, e.storey,
                       e.storey_elevation_m, e.material_color, {common}, {_SIZE},
                       ST_AsBinary(ST_Points(e.geom))
                {_IN_BOX} AND {_SIZE} >= %(min_size)s ORDER BY {order}""",
            params,
        )
        n = len(COMMON_PROPERTIES)
        return [
            ElementRow(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                tuple(r[8 : 8 + n]),
                float(r[8 + n]),
                tin_triangles(r[9 + n]),
            )  # fmt: skip
            for r in cur.fetchall()
        ]

    def content(self, conn: psycopg.Connection, box: Box, tolerance_m: float) -> TileContent | None:
        budget = self.max_features_per_tile
        if tolerance_m <= 0:
            rows, error = self.rows(conn, box), 0.0
        else:
            rows = self.rows(conn, box, largest=budget + 1)
            kept: list[ElementRow] = []
            triangles = 0
            for r in rows:  # largest first
                if r.size < tolerance_m or len(kept) == budget:
                    break
                if kept and triangles + len(r.triangles) > PARENT_TRIANGLES:
                    break
                kept.append(r)
                triangles += len(r.triangles)
            # what is left out is missing by its whole size; beyond the budget + 1 largest,
            # every element is smaller than the largest of those
            error = max((r.size for r in rows[len(kept) :]), default=0.0)
            rows = kept
        rows = [r for r in rows if len(r.triangles)]
        if not rows:
            return None
        model = self._model[1] if self._model else ""
        mesh = Mesh.concat([self._mesh(i, r) for i, r in enumerate(rows)])
        features = FeatureTable(
            self.class_name,
            np.array([r.id for r in rows], dtype=np.int64),
            [
                Property("guid", "STRING", [r.guid for r in rows]),
                Property("ifc_class", "STRING", [r.ifc_class for r in rows]),
                Property("name", "STRING", [r.name for r in rows]),
                Property("type", "STRING", [r.ifc_type for r in rows]),
                Property("storey", "STRING", [r.storey for r in rows]),
                Property("storey_elevation", "FLOAT64", [r.storey_elevation for r in rows]),
                Property("model", "STRING", [model for _ in rows]),
                *(
                    Property(name, "STRING", [r.common[k] for r in rows])
                    for k, name in enumerate(COMMON_PROPERTIES)
                ),
            ],
        )
        for p, spec in zip(features.properties, self.properties, strict=True):
            p.description = spec.description
        return TileContent(mesh, features, error)

    @staticmethod
    def _mesh(row: int, element: ElementRow) -> Mesh:
        positions, triangles = welded(element.triangles)
        # glTF colours are opaque here: a translucent element (glass) would make the whole
        # tile's material blended; its alpha is kept at 255 and glass reads by its colour
        color = (*rgba(element.color)[:3], 255)
        return Mesh(
            positions,
            triangles,
            np.full(len(positions), row, dtype=np.uint32),
            np.array(color, dtype=np.uint8),
        )


def welded(triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One element's triangles (n, 3, 3) as shared vertices and indices, a vertex shared only
    by triangles of the same plane orientation (same point to 0.1 mm, same normal to about
    0.06 degrees): the writer's normals stay the faces' own (sharp edges), and a box is 24
    vertices instead of 36, a wall split into many coplanar triangles far fewer."""
    if not len(triangles):
        return np.empty((0, 3)), np.empty((0, 3), dtype=np.int64)
    normal = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    normal = np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    corners = triangles.reshape(-1, 3)
    key = np.column_stack(
        [np.round(corners / WELD_M), np.repeat(np.round(normal * 1000.0), 3, axis=0)]
    ).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return corners[first], inverse.reshape(-1, 3)

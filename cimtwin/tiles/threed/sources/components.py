"""The ``components`` tileset: city components (城市部件) as simple class shapes standing on
the ground, feature ids of the OGC collection ``components``.

Shapes by class (:data:`SHAPES`, a default for the rest): discs for manhole covers, poles for
lamps, bollards and cameras, poles with a board for signs, boxes for kiosks, cabinets and
shelters, trunk and crown for trees. Lines (railings, walls) are low boxes along the line,
polygons (green areas) thin slabs.

Merged per tile rather than EXT_mesh_gpu_instancing: the shapes are a few dozen triangles, so
merging costs little, one primitive keeps one feature-id attribute and one property table as
every other tileset has (instancing would put feature ids on the instances, a second path in
the writer and the viewer), and the merged glb goes through the same validator path.

Ground: the component's recorded elevation, else the DEM (what the terrain tileset draws),
else the nearest survey point's ground (:mod:`.ground`).
Parents (far views) keep the largest components, at most a quarter of a leaf's worth (so all
parents together stay a small part of the leaves' bytes), and count the
dropped ones at their size (largest extent): street lights and kiosks stay, covers go.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import psycopg
import shapely

from cimtwin.reference import component_classes
from cimtwin.spatial.sql_toolkit import T
from cimtwin.tiles.threed import solids
from cimtwin.tiles.threed.mesh import FeatureTable, Mesh, Property, TileContent
from cimtwin.tiles.threed.sources.base import Bounds, Box, PropertySpec
from cimtwin.tiles.threed.sources.ground import ground_heights
from cimtwin.tiles.threed.sources.pipelines import anchored, box_params


@dataclass(frozen=True)
class Shape:
    """``kind``: disc (r, thickness), box (dx, dy, dz), pole (r, height), sign (r, height,
    board dx, dz), tree (trunk r, trunk height, crown r), fence (width, height: lines)."""

    kind: str
    dims: tuple[float, ...]

    @property
    def size(self) -> float:
        """Largest extent (m): what a far view loses when the component is dropped."""
        d, kind = self.dims, self.kind
        if kind == "disc":
            return 2 * d[0]
        if kind == "pole":
            return max(d[1], 2 * d[0])
        if kind == "sign":
            return max(d[1], d[2])
        if kind == "tree":
            return max(d[1] + 1.8 * d[2], 2 * d[2])
        if kind == "fence":
            return d[1]
        return max(d)


def _many(codes: str, shape: Shape) -> dict[str, Shape]:
    return dict.fromkeys(codes.split(), shape)


COVER = Shape("disc", (0.35, 0.05))
KIOSK = Shape("box", (2.5, 1.8, 2.6))
SIGN = Shape("sign", (0.06, 2.8, 1.0, 0.6))
SHAPES: dict[str, Shape] = {
    **_many("0101 0102 0103 0105 0106 0107 0108 0109 0110 0111 0112 0114", COVER),
    **_many("0127 0128 0129 0130 0140 0297 0302", COVER),
    "0104": Shape("box", (0.75, 0.45, 0.05)),
    "0113": Shape("pole", (0.15, 0.9)),
    "0115": Shape("box", (1.0, 0.4, 1.3)),
    "0116": Shape("box", (1.5, 0.8, 1.6)),
    **_many("0117 0144", Shape("pole", (0.12, 8.0))),
    **_many("0118 0141", Shape("sign", (0.1, 8.0, 0.6, 0.2))),
    "0119": Shape("box", (0.3, 0.3, 0.1)),
    "0120": Shape("pole", (0.08, 3.5)),
    **_many("0121 0137", KIOSK),
    **_many("0122 0143", Shape("box", (1.0, 1.0, 2.3))),
    "0123": Shape("pole", (0.3, 1.2)),
    **_many("0124 2106", Shape("box", (1.2, 0.8, 2.0))),
    "0125": Shape("box", (1.0, 0.8, 1.9)),
    "0126": Shape("box", (2.0, 1.0, 1.5)),
    "0132": Shape("pole", (0.15, 1.0)),
    **_many("0133 0139", Shape("pole", (0.6, 30.0))),
    **_many("0134 2102", Shape("box", (2.0, 1.5, 2.0))),
    **_many("0135 2104", Shape("box", (1.2, 0.6, 1.5))),
    "0136": Shape("pole", (0.1, 6.0)),
    **_many("0138 0217 0219", Shape("box", (2.0, 2.0, 2.6))),
    "0201": Shape("box", (5.0, 2.5, 0.02)),
    "0202": Shape("pole", (0.1, 1.4)),
    "0203": Shape("box", (8.0, 1.8, 2.7)),
    **_many("0204 0303 2112 2121", SIGN),
    "0209": Shape("sign", (0.08, 3.5, 1.0, 1.0)),
    **_many("0210 0214", Shape("sign", (0.15, 6.0, 0.4, 1.2))),
    "0212": Shape("box", (2.0, 0.6, 0.8)),
    "0213": Shape("sign", (0.06, 2.8, 1.2, 0.3)),
    "0215": Shape("sign", (0.2, 6.0, 4.0, 2.0)),
    **_many("0216 0218", Shape("box", (4.0, 0.2, 3.0))),
    **_many("0292 0294 0295 0296", Shape("pole", (0.1, 0.8))),
    **_many("0301 2125", Shape("box", (6.0, 4.0, 3.2))),
    **_many("0304 0311 0313 0314 0316 2118", Shape("box", (4.0, 3.0, 3.0))),
    **_many("0305 0315", Shape("box", (0.5, 0.5, 1.0))),
    "0306": Shape("box", (1.5, 0.3, 2.0)),
    "0307": Shape("sign", (0.2, 5.0, 4.0, 2.0)),
    **_many("0308 0309 0310 0312", Shape("box", (2.0, 2.0, 2.5))),
    "0317": Shape("box", (1.2, 1.2, 2.3)),
    "0401": Shape("tree", (0.4, 4.0, 4.0)),
    "0402": Shape("tree", (0.15, 3.0, 2.0)),
    "0403": Shape("box", (1.5, 1.5, 0.05)),
    **_many("0404 0409", Shape("box", (1.0, 1.0, 1.0))),
    "0406": Shape("box", (2.0, 2.0, 4.0)),
    "0407": Shape("box", (1.8, 0.5, 0.45)),
    "0410": Shape("disc", (3.0, 0.5)),
    "0501": Shape("box", (2.5, 0.3, 2.2)),
    "0502": Shape("box", (3.0, 3.0, 2.5)),
    "2113": Shape("box", (4.0, 3.0, 3.0)),
    "2114": Shape("box", (4.0, 8.0, 3.2)),
    "2126": Shape("pole", (0.08, 2.5)),
    # lines
    **_many("0211 0408 0604", Shape("fence", (0.1, 1.0))),
    "2117": Shape("fence", (0.3, 2.0)),
    "0606": Shape("fence", (0.5, 2.0)),
}
DEFAULT_POINT = Shape("box", (0.5, 0.5, 0.5))
DEFAULT_LINE = Shape("fence", (0.2, 0.5))
#: polygons (green areas, sites) are slabs this thick, standing on the ground
SLAB_M = 0.1
#: display colour per major class (01 utilities, 02 traffic, 03 environment, 04 greenery ...)
MAJOR_COLORS = {
    "01": (120, 130, 140),
    "02": (235, 195, 60),
    "03": (150, 110, 80),
    "04": (70, 160, 70),
    "05": (230, 130, 60),
}
OTHER_COLOR = (160, 160, 160)
TRUNK, CROWN, FIRE = (110, 80, 50), (60, 150, 60), (227, 26, 28)
SIDES = 6


LINE_TYPES = (1, 5)  # shapely type ids of LineString, MultiLineString


def shape_of(class_code: str, type_id: int) -> Shape:
    """The class's shape; a line's default is a low fence, a point's a half-metre box."""
    shape = SHAPES.get(class_code)
    if type_id in LINE_TYPES:
        return shape if shape is not None and shape.kind == "fence" else DEFAULT_LINE
    if shape is None or shape.kind == "fence":
        return DEFAULT_POINT
    return shape


def color_of(class_code: str) -> tuple[int, int, int]:
    if class_code == "0113":
        return FIRE
    return MAJOR_COLORS.get(class_code[:2], OTHER_COLOR)


def _point_solids(shape: Shape, x: np.ndarray, y: np.ndarray, g: np.ndarray, rgb) -> list:
    """(solid, rgb) parts of points of one shape, item i being point i."""
    d, n = shape.dims, len(x)
    if shape.kind == "disc":
        return [(solids.vertical_cylinders(x, y, g, g + d[1], d[0], 8), rgb)]
    if shape.kind == "box":
        centre = np.column_stack([x, y, g + d[2] / 2])
        return [(solids.boxes(centre, np.broadcast_to(d, (n, 3))), rgb)]
    pole = (solids.vertical_cylinders(x, y, g, g + d[1], d[0], SIDES), rgb)
    if shape.kind == "pole":
        return [pole]
    if shape.kind == "sign":
        centre = np.column_stack([x, y, g + d[1] - d[3] / 2])
        board = solids.boxes(centre, np.broadcast_to((d[2], 0.05, d[3]), (n, 3)))
        return [pole, (board, rgb)]
    trunk = (solids.vertical_cylinders(x, y, g, g + d[1], d[0], SIDES), TRUNK)
    crown = solids.octahedra(np.column_stack([x, y, g + d[1] + d[2] * 0.8]), d[2])
    return [trunk, (crown, CROWN)]


class ComponentsSource:
    """City components, one feature each."""

    id = "components"
    title = "City components (城市部件)"
    layer: str | None = "components"
    class_name = "component"
    properties = (
        PropertySpec("component_id", "STRING", "16-digit component id"),
        PropertySpec("class_code", "STRING", "component class (小类) code"),
        PropertySpec("class_name", "STRING", "component class name"),
        PropertySpec("name", "STRING", "name"),
        PropertySpec("status", "STRING", "完好, 破损, 丢失 ..."),
        PropertySpec("dept_authority", "STRING", "主管部门"),
        PropertySpec("dept_owner", "STRING", "权属单位"),
        PropertySpec("dept_maintainer", "STRING", "养护单位"),
    )
    #: the import kinds whose batches can change this tileset (``build-3d --changed``)
    import_kinds = ("components", "dem", "pipelines")  # the ground: DEM, else survey points
    #: boxes, discs and poles are 0.9 to 1.8 kB of glb each: 500 keep a leaf under 1 MB
    max_features_per_tile = 500
    #: a parent shows the largest of its features, this many at most
    max_features_per_parent = 125

    ANCHOR = "ST_PointOnSurface(c.geom)"

    def bounds(self, conn: psycopg.Connection) -> Bounds | None:
        row = conn.execute(
            f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM"
            f" (SELECT ST_Extent(c.geom) e FROM {T.city_component} c) t"
        ).fetchone()
        if row is None or row[0] is None:
            return None
        ground = conn.execute(
            f"SELECT min(v), max(v) FROM (SELECT c.elevation_m v FROM {T.city_component} c"
            f" UNION ALL SELECT n.ground_elevation_m FROM {T.pipeline_node} n"
            f" UNION ALL SELECT d.min_height_m FROM {T.terrain_dem} d"
            f" UNION ALL SELECT d.max_height_m FROM {T.terrain_dem} d) t"
        ).fetchone()
        lo = float(ground[0]) if ground and ground[0] is not None else 0.0
        hi = float(ground[1]) if ground and ground[1] is not None else 0.0
        tallest = max(s.size for s in SHAPES.values())
        return Bounds((row[0], row[1], row[2] + 1e-6, row[3] + 1e-6), lo, hi + tallest)

    def count(self, conn: psycopg.Connection, box: Box) -> int:
        row = conn.execute(
            f"SELECT count(*) FROM {T.city_component} c WHERE {anchored(self.ANCHOR, 'c.geom')}",
            box_params(box),
        ).fetchone()
        return int(row[0]) if row else 0

    def rows(self, conn: psycopg.Connection, box: Box, limit: int | None = None) -> list[tuple]:
        """(id, component id, class, name, status, three departments, ground, wkb (None for
        a point), anchor x, y, size) in ``box``; the ground is the recorded elevation, else
        :func:`.ground.ground_heights` at the anchor. With ``limit``: the largest ones only,
        ranked in SQL by :func:`size_sql`, so a parent does not read every component under it."""
        order = "size DESC, c.id LIMIT %(limit)s" if limit is not None else "c.id"
        rows = conn.execute(
            f"SELECT c.id, c.component_id, c.class_code, c.name, c.status, c.dept_authority,"
            f" c.dept_owner, c.dept_maintainer, c.elevation_m,"
            f" CASE WHEN GeometryType(c.geom) <> 'POINT' THEN ST_AsBinary(c.geom) END,"
            f" ST_X({self.ANCHOR}), ST_Y({self.ANCHOR}), {size_sql()} AS size"
            f" FROM {T.city_component} c LEFT JOIN unnest(%(codes)s::text[],"
            f" %(point)s::float8[], %(line)s::float8[]) AS sz(code, point, line)"
            f" ON sz.code = c.class_code"
            f" WHERE {anchored(self.ANCHOR, 'c.geom')} ORDER BY {order}",
            {**box_params(box), **size_params(), "limit": limit},
        ).fetchall()
        lacking = [i for i, r in enumerate(rows) if r[8] is None]
        heights = ground_heights(
            conn, np.array([rows[i][10] for i in lacking]), np.array([rows[i][11] for i in lacking])
        )
        ground = {i: float(h) for i, h in zip(lacking, heights, strict=True)}
        return [(*r[:8], ground.get(i, r[8]), *r[9:]) for i, r in enumerate(rows)]

    def content(self, conn: psycopg.Connection, box: Box, tolerance_m: float) -> TileContent | None:
        budget = self.max_features_per_parent
        rows = self.rows(conn, box, budget + 1 if tolerance_m > 0 else None)
        error = 0.0
        if len(rows) > budget and tolerance_m > 0:  # a parent: the largest, the rest dropped
            error = float(rows[budget][12])  # the largest dropped one's size
            rows = rows[:budget]
        if not rows:
            return None
        geoms = shapely.points(np.array([(r[10], r[11]) for r in rows], dtype=np.float64))
        lines = [i for i, r in enumerate(rows) if r[9] is not None]
        if lines:
            geoms[lines] = shapely.from_wkb([rows[i][9] for i in lines])
        types = shapely.get_type_id(geoms)
        shapes = [shape_of(r[2], int(t)) for r, t in zip(rows, types, strict=True)]
        kept = rows
        solid, colors = component_solids(
            shapes, geoms, np.array([float(r[8]) for r in kept]), [r[2] for r in kept]
        )
        mesh = Mesh(solid.positions, solid.triangles, solid.item, colors)
        classes = component_classes()
        table = FeatureTable(
            self.class_name,
            np.array([r[0] for r in kept]),
            [
                Property("component_id", "STRING", [r[1] for r in kept]),
                Property("class_code", "STRING", [r[2] for r in kept]),
                Property("class_name", "STRING", [_class_name(classes, r[2]) for r in kept]),
                Property("name", "STRING", [r[3] for r in kept]),
                Property("status", "STRING", [r[4] for r in kept]),
                Property("dept_authority", "STRING", [r[5] for r in kept]),
                Property("dept_owner", "STRING", [r[6] for r in kept]),
                Property("dept_maintainer", "STRING", [r[7] for r in kept]),
            ],
        )
        return TileContent(mesh, table, error)


def size_params() -> dict[str, list]:
    """The class sizes :func:`size_sql` joins: per class, as a point (or area) and as a line."""
    codes = sorted(SHAPES)
    return {
        "codes": codes,
        "point": [shape_of(c, 0).size for c in codes],
        "line": [shape_of(c, LINE_TYPES[0]).size for c in codes],
    }


def size_sql() -> str:
    """A component's size (m, largest extent as drawn) in SQL, the same rule as
    :attr:`Shape.size` plus a line's or area's own extent: what a parent ranks by."""
    extent = "greatest(ST_XMax(c.geom) - ST_XMin(c.geom), ST_YMax(c.geom) - ST_YMin(c.geom))"
    return (
        f"CASE WHEN GeometryType(c.geom) = 'POINT' THEN coalesce(sz.point, {DEFAULT_POINT.size})"
        f" WHEN GeometryType(c.geom) IN ('LINESTRING', 'MULTILINESTRING')"
        f" THEN greatest(coalesce(sz.line, {DEFAULT_LINE.size}), {extent})"
        f" ELSE greatest(coalesce(sz.point, {DEFAULT_POINT.size}), {extent}) END"
    )


def _class_name(classes: dict, code: str) -> str | None:
    c = classes.get(code)
    return c.name if c is not None else None


def component_solids(
    shapes: list[Shape], geoms: np.ndarray, ground: np.ndarray, codes: list[str]
) -> tuple[solids.Solid, np.ndarray]:
    """All components' solids, item i being component i, and each vertex's RGBA (a tree's
    trunk and crown are two parts of one component in two colours)."""
    parts: list[solids.Solid] = []
    part_rgb: list[tuple[int, int, int]] = []
    by_shape: dict[tuple[Shape, tuple[int, int, int]], list[int]] = defaultdict(list)
    types = shapely.get_type_id(geoms)
    for i, (shape, t) in enumerate(zip(shapes, types, strict=True)):
        if t == 0:  # points: one batch per shape and colour
            by_shape[(shape, color_of(codes[i]))].append(i)
            continue
        rgb = color_of(codes[i])
        if t in LINE_TYPES:  # lines: a box along each part, its middle at half its height
            for line in shapely.get_parts(geoms[i]):
                xy = shapely.get_coordinates(line)
                pts = np.column_stack([xy, np.full(len(xy), ground[i] + shape.dims[1] / 2)])
                s = solids.box_along(pts, shape.dims[0], shape.dims[1])
                s.item[:] = i
                parts.append(s)
                part_rgb.append(rgb)
        else:  # areas: a slab on the ground
            s = solids.slab(geoms[i], ground[i], ground[i] + SLAB_M)
            s.item[:] = i
            parts.append(s)
            part_rgb.append(rgb)
    for (shape, color), idx in by_shape.items():
        ix = np.asarray(idx)
        xy = shapely.get_coordinates(geoms[ix])
        for s, rgb in _point_solids(shape, xy[:, 0], xy[:, 1], ground[ix], color):
            s.item = ix[s.item]
            parts.append(s)
            part_rgb.append(rgb)
    vertex_rgb = [
        np.tile((*rgb, 255), (len(p.positions), 1)) for p, rgb in zip(parts, part_rgb, strict=True)
    ]
    if not parts:
        return solids.Solid.empty(), np.empty((0, 4), np.uint8)
    return solids.Solid.concat(parts), np.concatenate(vertex_rgb).astype(np.uint8)

"""The ``pipeline_points`` tileset: survey points that are objects of their own, drawn where
they are, with feature ids of the OGC collection ``pipeline_points`` (see
:mod:`.pipelines` for why points and pipes are two tilesets).

* wells and chambers (检查井, 污水井, 雨水井, 电力井, 通信井 ...; any appurtenance named ...井):
  plumb cylinders from the ground down to the recorded well depth, or further down to the
  bottom of the deepest pipe meeting the point when one goes deeper (a pipe never pokes out
  under its well); without a recorded depth, to that deepest pipe bottom;
* valves (阀门): octahedra on the pipe axis at the point, red when recorded closed;
* hydrants (消防栓): red posts from the pipe axis up to 0.8 m above the ground;
* outfalls (出水口): octahedra on the pipe axis.

Plain feature points (三通, 直线点, 变径 ...) are joints of the pipes, not objects: not drawn.
Parents keep the largest points, at most a quarter of a leaf's worth, and count the dropped
ones at their
size (their largest extent), the most a far view can be missing.
"""

from __future__ import annotations

import numpy as np
import psycopg

from cimtwin.spatial.pipeline_network import pipe_size_mm_sql
from cimtwin.spatial.sql_toolkit import T
from cimtwin.tiles.threed import solids
from cimtwin.tiles.threed.mesh import FeatureTable, Property, TileContent
from cimtwin.tiles.threed.sources.base import Bounds, Box, PropertySpec
from cimtwin.tiles.threed.sources.pipelines import (
    DEFAULT_DIAMETER_MM,
    GREY,
    anchored,
    box_params,
    network_colors,
    rgba,
)

#: inner diameter of a well (m): 1000 mm manholes for drainage, 800 mm chambers otherwise
WELL_DIAMETER_M = {"PS": 1.0}
DEFAULT_WELL_DIAMETER_M = 0.8
#: a point without pipes: its marker this far under the ground (m)
DEFAULT_AXIS_DEPTH_M = 1.0
HYDRANT_ABOVE_M = 0.8
HYDRANT_RADIUS_M = 0.1
VALVE_MIN_RADIUS_M = 0.25
CLOSED_RED = (214, 39, 40)
HYDRANT_RED = (227, 26, 28)
SIDES = 8

KIND_SQL = (
    "CASE WHEN n.appurtenance LIKE '%%井' THEN 'well'"
    " WHEN n.appurtenance = '阀门' THEN 'valve'"
    " WHEN n.appurtenance = '消防栓' THEN 'hydrant'"
    " WHEN n.appurtenance = '出水口' THEN 'outfall' END"
)
#: a pipe's size (m) at its ends, the default diameter when never surveyed (as drawn)
_H = f"coalesce({pipe_size_mm_sql('s')}, {DEFAULT_DIAMETER_MM}) / 1000.0"
#: the pipe ends at each point: axis height and bottom of the pipes meeting it
_ENDS = (
    "LEFT JOIN LATERAL (SELECT avg(e.z) AS axis, min(e.z - e.h / 2.0) AS bottom,"
    " max(e.h) AS size FROM ("
    f"  SELECT ST_Z(ST_StartPoint(s.geom)) AS z, {_H} AS h"
    f"  FROM {T.pipeline_segment} s WHERE s.from_node_id = n.id"
    "  UNION ALL"
    f"  SELECT ST_Z(ST_EndPoint(s.geom)), {_H}"
    f"  FROM {T.pipeline_segment} s WHERE s.to_node_id = n.id) e) p ON true"
)

GROUND_SQL = "coalesce(n.ground_elevation_m, ST_Z(n.geom))"
_WELL_D = (
    "CASE "
    + " ".join(f"WHEN n.network = '{k}' THEN {v}" for k, v in WELL_DIAMETER_M.items())
    + f" ELSE {DEFAULT_WELL_DIAMETER_M} END"
)
_WELL_BOTTOM = (
    f"CASE WHEN n.well_depth_m IS NULL AND p.bottom IS NULL THEN {GROUND_SQL} - "
    f"{DEFAULT_AXIS_DEPTH_M} ELSE least({GROUND_SQL} - n.well_depth_m, p.bottom) END"
)
#: a point's size (m, its largest extent as :func:`point_shapes` draws it), for ranking
SIZE_SQL = (
    f"CASE {KIND_SQL} WHEN 'well' THEN greatest({_WELL_D}, {GROUND_SQL} - {_WELL_BOTTOM})"
    f" WHEN 'hydrant' THEN {GROUND_SQL} + {HYDRANT_ABOVE_M}"
    f" - coalesce(p.axis, {GROUND_SQL} - {DEFAULT_AXIS_DEPTH_M})"
    f" ELSE 2 * greatest({VALVE_MIN_RADIUS_M}, 0.75 * coalesce(p.size, 0)) END"
)


class PipelinePointsSource:
    """Wells, valves, hydrants and outfalls."""

    id = "pipeline_points"
    title = "Pipeline points (管线点: wells, valves, hydrants)"
    layer: str | None = "pipeline_points"
    class_name = "pipeline_point"
    properties = (
        PropertySpec("point_no", "STRING", "物探点号"),
        PropertySpec("kind", "STRING", "well, valve, hydrant or outfall"),
        PropertySpec("network", "STRING", "CJJ 61 major network code"),
        PropertySpec("subtype", "STRING", "CJJ 61 minor code"),
        PropertySpec("appurtenance", "STRING", "附属物: 阀门, 消防栓, 污水井 ..."),
        PropertySpec("ground_elevation_m", "FLOAT64", "ground at the point (1985 heights)"),
        PropertySpec("well_depth_m", "FLOAT64", "井深 (m)"),
        PropertySpec("valve_state", "STRING", "open or closed, for valves"),
    )
    #: the import kinds whose batches can change this tileset (``build-3d --changed``)
    import_kinds = ("pipelines",)
    max_features_per_tile = 600
    #: a parent shows the largest of its points, this many at most
    max_features_per_parent = 150

    def _where(self) -> str:
        return f"{KIND_SQL} IS NOT NULL AND {anchored('n.geom', 'n.geom')}"

    def bounds(self, conn: psycopg.Connection) -> Bounds | None:
        row = conn.execute(
            f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e), z0, z1 FROM ("
            f" SELECT ST_Extent(n.geom) e, min(least(ST_Z(n.geom) - coalesce(n.well_depth_m, 0),"
            f" p.bottom)) z0, max(ST_Z(n.geom)) + {HYDRANT_ABOVE_M} z1"
            f" FROM {T.pipeline_node} n {_ENDS} WHERE {KIND_SQL} IS NOT NULL) t"
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return Bounds((row[0], row[1], row[2] + 1e-6, row[3] + 1e-6), row[4], row[5])

    def count(self, conn: psycopg.Connection, box: Box) -> int:
        row = conn.execute(
            f"SELECT count(*) FROM {T.pipeline_node} n WHERE {self._where()}", box_params(box)
        ).fetchone()
        return int(row[0]) if row else 0

    def rows(self, conn: psycopg.Connection, box: Box, limit: int | None = None) -> list[tuple]:
        """(id, kind, point_no, network, subtype, appurtenance, ground, well depth, valve
        state, x, y, pipe axis, deepest pipe bottom, widest pipe, size) of the points in
        ``box``; with ``limit``, the largest only (ranked in SQL by :data:`SIZE_SQL`)."""
        order = "point_size DESC, n.id LIMIT %(limit)s" if limit is not None else "n.id"
        return conn.execute(
            f"SELECT n.id, {KIND_SQL}, n.point_no, n.network, n.subtype, n.appurtenance,"
            f" {GROUND_SQL}, n.well_depth_m, n.valve_state,"
            f" ST_X(n.geom), ST_Y(n.geom), p.axis, p.bottom, p.size, {SIZE_SQL} AS point_size"
            f" FROM {T.pipeline_node} n {_ENDS} WHERE {self._where()} ORDER BY {order}",
            {**box_params(box), "limit": limit},
        ).fetchall()

    def content(self, conn: psycopg.Connection, box: Box, tolerance_m: float) -> TileContent | None:
        budget = self.max_features_per_parent
        rows = self.rows(conn, box, budget + 1 if tolerance_m > 0 else None)
        error = 0.0
        if tolerance_m > 0 and len(rows) > budget:  # a parent: the largest, the rest dropped
            error = float(rows[budget][14])
            rows = rows[:budget]
        if not rows:
            return None
        solid, _ = point_shapes(rows)
        colors = network_colors()
        kept = rows
        mesh = solid.mesh(np.arange(len(kept)), np.array([point_color(r, colors) for r in kept]))
        table = FeatureTable(
            self.class_name,
            np.array([r[0] for r in kept]),
            [
                Property("point_no", "STRING", [r[2] for r in kept]),
                Property("kind", "STRING", [r[1] for r in kept]),
                Property("network", "STRING", [r[3] for r in kept]),
                Property("subtype", "STRING", [r[4] for r in kept]),
                Property("appurtenance", "STRING", [r[5] for r in kept]),
                Property("ground_elevation_m", "FLOAT64", [r[6] for r in kept]),
                Property("well_depth_m", "FLOAT64", [r[7] for r in kept]),
                Property("valve_state", "STRING", [r[8] for r in kept]),
            ],
        )
        return TileContent(mesh, table, error)


def well_span(ground: float, well_depth: float | None, pipe_bottom: float | None) -> tuple:
    """(bottom, top) of a well: the ground down to its depth, or to the deepest pipe's bottom
    when that is deeper (or when no depth was recorded)."""
    recorded = ground - well_depth if well_depth is not None else None
    bottoms = [b for b in (recorded, pipe_bottom) if b is not None]
    bottom = min(bottoms) if bottoms else ground - DEFAULT_AXIS_DEPTH_M
    return bottom, ground


def point_shapes(rows: list[tuple]) -> tuple[solids.Solid, np.ndarray]:
    """The solids of point rows (see :meth:`PipelinePointsSource.rows`), item i being row i,
    and each one's size (largest extent, m): one vectorised batch per kind."""
    n = len(rows)
    kind = np.array([r[1] for r in rows], dtype=object)
    ground = np.array([float(r[6]) for r in rows])
    x = np.array([float(r[9]) for r in rows])
    y = np.array([float(r[10]) for r in rows])
    axis = np.array([ground[i] - DEFAULT_AXIS_DEPTH_M if r[11] is None else r[11] for i, r in
                     enumerate(rows)], dtype=np.float64)  # fmt: skip
    size = np.zeros(n)
    parts: list[solids.Solid] = []

    def add(solid: solids.Solid, rows_of_items: np.ndarray) -> None:
        solid.item = rows_of_items[solid.item]
        parts.append(solid)

    wells = np.flatnonzero(kind == "well")
    if len(wells):
        span = np.array([well_span(ground[i], rows[i][7], rows[i][12]) for i in wells])
        d = np.array([WELL_DIAMETER_M.get(rows[i][3], DEFAULT_WELL_DIAMETER_M) for i in wells])
        add(solids.vertical_cylinders(x[wells], y[wells], span[:, 0], span[:, 1], d / 2, SIDES),
            wells)  # fmt: skip
        size[wells] = np.maximum(d, span[:, 1] - span[:, 0])
    hydrants = np.flatnonzero(kind == "hydrant")
    if len(hydrants):
        top = ground[hydrants] + HYDRANT_ABOVE_M
        add(
            solids.vertical_cylinders(
                x[hydrants], y[hydrants], axis[hydrants], top, HYDRANT_RADIUS_M, SIDES
            ),
            hydrants,
        )
        size[hydrants] = top - axis[hydrants]
    marks = np.flatnonzero((kind != "well") & (kind != "hydrant"))
    if len(marks):
        widest = np.array([float(rows[i][13] or 0) for i in marks])
        radius = np.maximum(VALVE_MIN_RADIUS_M, widest * 0.75)
        add(solids.octahedra(np.column_stack([x[marks], y[marks], axis[marks]]), radius), marks)
        size[marks] = 2 * radius
    return solids.Solid.concat(parts), size


def point_color(r: tuple, colors: dict[str, tuple[int, int, int]]) -> tuple[int, int, int, int]:
    """Wells a lighter tone of their network's CJJ 61 colour (pipes stay distinct), hydrants
    red, closed valves red, other markers in the network colour."""
    base = colors.get(r[3], GREY)
    if r[1] == "hydrant":
        return rgba(HYDRANT_RED)
    if r[1] == "valve" and r[8] == "closed":
        return rgba(CLOSED_RED)
    if r[1] == "well":
        light = tuple(int(round(c + (255 - c) * 0.45)) for c in base)
        return rgba(light)  # type: ignore[arg-type]
    return rgba(base)

"""Pipelines in 3D: every pipe a tube (or a box section) with its real size at its true depth,
and the survey points that are objects of their own (wells, valves, hydrants, outfalls).

Two tilesets, not one: ``pipelines`` holds pipes, whose feature ids are ids of the OGC
collection ``pipelines``; ``pipeline_points`` holds wells and markers, ids of the collection
``pipeline_points``. Segment and node ids come from two sequences and overlap, so one tileset
would need a second key beside ``id`` that every client would have to know; with a tileset per
collection the tileset itself says which collection its ids belong to (:attr:`layer`), the
schema stays one class per tileset, and a viewer can show wells without the pipes or the
other way round.

Why the tube follows the stored line as it is: the importer (:mod:`cimtwin.importers.pipelines`,
``_geometry``) already stores the pipe's AXIS, not the surveyed reference: for a top-referenced
pipe (pressure, cable) the line's Z is ``ground - depth - h/2``, for an invert-referenced one
(gravity drainage) ``ground - depth + h/2``, h being ``pipe_size_mm_sql`` (the diameter, else
the section height). Shifting it again here would put every pipe half its size off.

Level of detail (parents): pipes are merged per network, subtype and size, as the overview of
the vector tiles merges them per network (:func:`cimtwin.tiles.mvt.aggregate_statement`), and
simplified to the tile's tolerance, with fewer sides; the widest groups are kept while the
parent's vertex budget lasts (far views show the trunk mains), the narrower ones dropped.
A parent's ``error_m`` is measured: the largest 3D distance from a vertex of a full pipe to
the simplified line standing for it (a Hausdorff distance, the simplified line's vertices
being vertices of the full ones; 2D merging can lose a step in height at a well, which this
counts), plus the section's chord error at the parent's sides; a dropped pipe counts with its
whole width across (the whole section goes missing), not a fraction of it.

A merged parent feature stands for a group: its ``id`` is the group's smallest pipe id (a real
``pipelines`` item) and its ``pipes`` property says how many pipes it stands for (1 in leaves);
it carries the group's network, subtype and size, not one pipe's material or owner.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import psycopg
import shapely

from cimtwin.reference import pipeline_types
from cimtwin.spatial.base import SRID
from cimtwin.spatial.pipeline_network import pipe_size_mm_sql
from cimtwin.spatial.sql_toolkit import T
from cimtwin.tiles.threed import solids
from cimtwin.tiles.threed.mesh import FeatureTable, Property, TileContent
from cimtwin.tiles.threed.sources.base import Bounds, Box, PropertySpec

#: a pipe whose size was never surveyed still exists: drawn this thin, its size left empty
DEFAULT_DIAMETER_MM = 100.0
#: sides of a full-detail tube section (chord error 7.6 % of the radius)
LEAF_SIDES = 8
#: vertices a parent may hold (about 0.35 MB of glb at 36 bytes a vertex: parents together
#: stay a small part of the leaves' bytes)
PARENT_VERTEX_BUDGET = 10_000
GREY = (128, 128, 128)


def network_colors() -> dict[str, tuple[int, int, int]]:
    """CJJ 61 display colour per major network code (JS -> sky blue ...)."""
    out: dict[str, tuple[int, int, int]] = {}
    for t in pipeline_types():
        out.setdefault(t.major_code, t.color_rgb)
    return out


def rgba(rgb: tuple[int, int, int], alpha: int = 255) -> tuple[int, int, int, int]:
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]), alpha)


def anchored(anchor: str, geom: str) -> str:
    """The WHERE clause for "anchored in the half-open box": the index filter on the
    geometry, then the anchor point's exact test (parameters x0, y0, x1, y1)."""
    return (
        f"{geom} && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, {SRID})"
        f" AND ST_X({anchor}) >= %(x0)s AND ST_X({anchor}) < %(x1)s"
        f" AND ST_Y({anchor}) >= %(y0)s AND ST_Y({anchor}) < %(y1)s"
    )


def box_params(box: Box) -> dict[str, float]:
    return dict(zip(("x0", "y0", "x1", "y1"), (float(v) for v in box), strict=True))


SEG_ANCHOR = "ST_LineInterpolatePoint(ST_Force2D(s.geom), 0.5)"
SEG_SIZE = pipe_size_mm_sql("s")
#: the width across a pipe (mm): what a far view loses when the pipe is dropped
#: (NULL when nothing was surveyed: the callers put in the default diameter it is drawn with)
SEG_ACROSS = f"nullif(greatest(coalesce(s.diameter_mm, 0), coalesce(s.width_mm, 0), {SEG_SIZE}), 0)"


def size_text(diameter: float | None, width: float | None, height: float | None) -> str | None:
    """DN300 for a round pipe, 1000X800 (宽X高, mm) for a section, None when not surveyed."""
    if diameter is not None and diameter > 0:
        return f"DN{diameter:g}"
    if width is not None and height is not None:
        return f"{width:g}X{height:g}"
    return None


@dataclass
class _Pipe:
    id: int
    network: str
    diameter: float | None
    width: float | None
    height: float | None
    coords: np.ndarray  # (k, 3) centre line

    @property
    def is_box(self) -> bool:
        return not self.diameter and bool(self.width) and bool(self.height)

    @property
    def radius_m(self) -> float:
        return (self.diameter or DEFAULT_DIAMETER_MM) / 2000.0

    def solid(self, sides: int = LEAF_SIDES) -> solids.Solid:
        if self.is_box:
            return solids.box_along(
                self.coords, float(self.width or 0) / 1000, float(self.height or 0) / 1000
            )
        return solids.tube(self.coords, self.radius_m, sides)


class PipelinesSource:
    """The ``pipelines`` tileset: one feature per pipe segment."""

    id = "pipelines"
    title = "Pipelines (管线)"
    layer: str | None = "pipelines"
    class_name = "pipe"
    properties = (
        PropertySpec("network", "STRING", "CJJ 61 major network code (JS, PS, DL ...)"),
        PropertySpec("subtype", "STRING", "CJJ 61 minor code (JP, YS, WS ...)"),
        PropertySpec("size", "STRING", "DN300 (diameter, mm) or 1000X800 (width X height, mm)"),
        PropertySpec("material", "STRING", "CJJ 61 C.0.1 material code"),
        PropertySpec("owner", "STRING", "权属单位"),
        PropertySpec("from_depth_m", "FLOAT64", "burial depth at the from point (m)"),
        PropertySpec("to_depth_m", "FLOAT64", "burial depth at the to point (m)"),
        PropertySpec("depth_ref", "STRING", "what the depth is measured to: top or invert"),
        PropertySpec("pipes", "INT64", "pipes this feature stands for (over 1: a merged overview)"),
    )
    #: the import kinds whose batches can change this tileset (``build-3d --changed``)
    import_kinds = ("pipelines",)
    #: 8-sided tubes are about 1.3 kB of glb a pipe: 600 keep a leaf under 1 MB
    max_features_per_tile = 600

    def bounds(self, conn: psycopg.Connection) -> Bounds | None:
        row = conn.execute(
            f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e), z0, z1 FROM ("
            f" SELECT ST_Extent(s.geom) AS e,"
            f" min(ST_ZMin(s.geom) - coalesce({SEG_ACROSS}, {DEFAULT_DIAMETER_MM}) / 2000.0) z0,"
            f" max(ST_ZMax(s.geom) + coalesce({SEG_ACROSS}, {DEFAULT_DIAMETER_MM}) / 2000.0) z1"
            f" FROM {T.pipeline_segment} s) t"
        ).fetchone()
        if row is None or row[0] is None:
            return None
        # the box holds every anchor; a pipe's body may reach past it, which the tree's
        # bounding volumes take from the content, not from this box
        return Bounds((row[0], row[1], row[2] + 1e-6, row[3] + 1e-6), row[4], row[5])

    def count(self, conn: psycopg.Connection, box: Box) -> int:
        row = conn.execute(
            f"SELECT count(*) FROM {T.pipeline_segment} s WHERE {anchored(SEG_ANCHOR, 's.geom')}",
            box_params(box),
        ).fetchone()
        return int(row[0]) if row else 0

    def _pipes(self, conn: psycopg.Connection, box: Box) -> list[tuple]:
        """(id, network, subtype, diameter, width, height, material, owner, depths, depth
        reference, wkb) of the pipes anchored in ``box``."""
        params = box_params(box)
        return conn.execute(
            f"SELECT s.id, s.network, s.subtype, s.diameter_mm, s.width_mm, s.height_mm,"
            f" s.material, s.owner, s.from_depth_m, s.to_depth_m, s.depth_ref,"
            f" ST_AsBinary(s.geom)"
            f" FROM {T.pipeline_segment} s WHERE {anchored(SEG_ANCHOR, 's.geom')}"
            f" ORDER BY s.id",
            params,
        ).fetchall()

    def content(self, conn: psycopg.Connection, box: Box, tolerance_m: float) -> TileContent | None:
        if tolerance_m > 0:
            return self._overview(conn, box, tolerance_m)
        rows = self._pipes(conn, box)
        if not rows:
            return None
        colors = network_colors()
        pipes = [_Pipe(r[0], r[1], r[3], r[4], r[5], _coords(r[11])) for r in rows]
        solid = pipe_solids(pipes, LEAF_SIDES)
        mesh = solid.mesh(
            np.arange(len(rows)), np.array([rgba(colors.get(r[1], GREY)) for r in rows])
        )
        table = FeatureTable(
            self.class_name,
            np.array([r[0] for r in rows]),
            [
                Property("network", "STRING", [r[1] for r in rows]),
                Property("subtype", "STRING", [r[2] for r in rows]),
                Property("size", "STRING", [size_text(r[3], r[4], r[5]) for r in rows]),
                Property("material", "STRING", [r[6] for r in rows]),
                Property("owner", "STRING", [r[7] for r in rows]),
                Property("from_depth_m", "FLOAT64", [r[8] for r in rows]),
                Property("to_depth_m", "FLOAT64", [r[9] for r in rows]),
                Property("depth_ref", "STRING", [r[10] for r in rows]),
                Property("pipes", "INT64", [1] * len(rows)),
            ],
        )
        return TileContent(mesh, table, 0.0)

    def _overview(self, conn: psycopg.Connection, box: Box, tol: float) -> TileContent | None:
        """Merged, simplified pipes per (network, subtype, size), the widest first while
        the vertex budget lasts; from the first group that does not fit on, the groups are
        dropped, counted at the widest one's width. Only kept groups' lines are read."""
        rows = conn.execute(
            f"SELECT s.id, s.network, coalesce(s.subtype, ''), s.diameter_mm, s.width_mm,"
            f" s.height_mm, coalesce({SEG_ACROSS}, {DEFAULT_DIAMETER_MM})"
            f" FROM {T.pipeline_segment} s WHERE {anchored(SEG_ANCHOR, 's.geom')}",
            box_params(box),
        ).fetchall()
        if not rows:
            return None
        error = 0.0
        groups: dict[tuple, list] = defaultdict(list)
        for r in rows:
            groups[r[1:7]].append(r[0])
        order = sorted(groups, key=lambda k: (-float(k[5]), repr(k)))
        parts, feats, used = [], [], 0
        for key in order:
            ids = groups[key]
            wkb = conn.execute(
                f"SELECT ST_AsBinary(s.geom) FROM {T.pipeline_segment} s WHERE s.id = ANY(%s)",
                (ids,),
            ).fetchall()
            simplified, measured = merge_simplify([shapely.from_wkb(w[0]) for w in wkb], tol / 2)
            first = _Pipe(min(ids), key[0], key[2], key[3], key[4], np.empty((0, 3)))
            sides = solids.sides_for(first.radius_m, tol / 2, lo=4, hi=LEAF_SIDES)
            chord = 0.0 if first.is_box else float(solids.chord_error(first.radius_m, sides))
            pipes = [
                _Pipe(first.id, key[0], key[2], key[3], key[4], _coords(part))
                for part in shapely.get_parts(simplified)
            ]
            solid = pipe_solids(pipes, sides)
            solid.item[:] = 0
            if used + len(solid.positions) > PARENT_VERTEX_BUDGET:
                error = max(error, float(key[5]) / 1000.0)
                break
            used += len(solid.positions)
            error = max(error, measured + chord)
            parts.append(solid)
            feats.append((first.id, key, len(ids)))
        if not parts:  # all dropped: no content, the children carry the pipes
            return None
        colors = network_colors()
        solid = solids.Solid.concat(parts, list(range(len(parts))))
        mesh = solid.mesh(
            np.arange(len(parts)), np.array([rgba(colors.get(f[1][0], GREY)) for f in feats])
        )
        table = FeatureTable(
            self.class_name,
            np.array([f[0] for f in feats]),
            [
                Property("network", "STRING", [f[1][0] for f in feats]),
                Property("subtype", "STRING", [f[1][1] or None for f in feats]),
                Property("size", "STRING", [size_text(f[1][2], f[1][3], f[1][4]) for f in feats]),
                Property("pipes", "INT64", [f[2] for f in feats]),
            ],
        )
        return TileContent(mesh, table, error)


def _coords(geom: bytes | shapely.Geometry) -> np.ndarray:
    g = shapely.from_wkb(geom) if isinstance(geom, bytes | memoryview) else geom
    return shapely.get_coordinates(g, include_z=True)


def pipe_solids(pipes: list[_Pipe], sides: int) -> solids.Solid:
    """The solids of many pipes, item i being pipe i: the straight ones (most survey pipes)
    as vectorised batches of tubes and of box sections, bent ones one by one."""
    straight = np.array([len(p.coords) == 2 for p in pipes], dtype=bool)
    is_box = np.array([p.is_box for p in pipes], dtype=bool)
    parts = []
    for mask, boxy in ((straight & ~is_box, False), (straight & is_box, True)):
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        a = np.array([pipes[i].coords[0] for i in idx])
        b = np.array([pipes[i].coords[1] for i in idx])
        if boxy:
            w = np.array([float(pipes[i].width or 0) for i in idx]) / 1000
            h = np.array([float(pipes[i].height or 0) for i in idx]) / 1000
            batch = solids.boxes_along(a, b, w, h)
        else:
            batch = solids.tubes(a, b, np.array([pipes[i].radius_m for i in idx]), sides)
        batch.item = idx[batch.item]
        parts.append(batch)
    rest = np.flatnonzero(~straight).tolist()
    if rest:
        parts.append(solids.Solid.concat([pipes[i].solid(sides) for i in rest], rest))
    return solids.Solid.concat(parts)


def merge_simplify(lines: list[shapely.Geometry], tol: float) -> tuple[shapely.Geometry, float]:
    """Lines merged where they meet (in plan, as ``ST_LineMerge``) and simplified
    (Douglas-Peucker in plan, Z kept), with the measured largest 3D distance from any vertex
    of the full lines to the result."""
    merged = shapely.line_merge(shapely.multilinestrings(lines))
    simplified = shapely.simplify(merged, tol, preserve_topology=False)
    full = shapely.get_coordinates(np.asarray(lines, dtype=object), include_z=True)
    return simplified, distance_to_lines(full, simplified)


def _segments(geom: shapely.Geometry) -> tuple[np.ndarray, np.ndarray]:
    a, b = [], []
    for part in shapely.get_parts(geom):
        c = shapely.get_coordinates(part, include_z=True)
        if len(c) >= 2:
            a.append(c[:-1])
            b.append(c[1:])
    if not a:
        return np.empty((0, 3)), np.empty((0, 3))
    return np.concatenate(a), np.concatenate(b)


def point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """3D distance from each point p[i] to the segment a[i]-b[i]."""
    d = b - a
    dd = np.einsum("ij,ij->i", d, d)
    t = np.where(dd > 0, np.einsum("ij,ij->i", p - a, d) / np.where(dd > 0, dd, 1), 0.0)
    t = np.clip(t, 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * d), axis=1)


def distance_to_lines(points: np.ndarray, geom: shapely.Geometry) -> float:
    """The largest 3D distance from ``points`` (n, 3) to the nearest segment of ``geom``.

    The 2D nearest segment gives an upper bound d; the 3D nearest is among the segments
    within d in plan (a 3D distance is never below the plan one), found with an STRtree."""
    a, b = _segments(geom)
    if len(points) == 0 or len(a) == 0:
        return 0.0
    segs = shapely.linestrings(np.stack([a[:, :2], b[:, :2]], axis=1))
    tree = shapely.STRtree(segs)
    pts = shapely.points(points[:, :2])
    nearest = tree.nearest(pts)
    bound = point_segment_distance(points, a[nearest], b[nearest])
    pi, si = tree.query(pts, predicate="dwithin", distance=bound + 1e-9)
    d = point_segment_distance(points[pi], a[si], b[si])
    best = np.full(len(points), np.inf)
    np.minimum.at(best, pi, d)
    best = np.minimum(best, bound)
    return float(best.max())

"""The ground as a 3D Tiles mesh tileset (``terrain``), from the imported DEMs.

Why a 3D Tiles mesh and not quantized-mesh (``layer.json`` for CesiumTerrainProvider):

* one path: the tileset tree, the glb writer, the placement (geoid, ENU frames) and the
  validator are the same for every 3D source, so the ground and the buildings standing on it
  and the pipes under it go through the very same height conversion and cannot drift apart;
  quantized-mesh would need a second writer, a second tiling scheme (TMS geographic) and its
  own height conversion, and the 3D Tiles validator does not check it;
* metadata: each tile carries a feature (the DEM) with its dataset and source file, like
  every other tileset; quantized-mesh has no feature table;
* CesiumJS draws a 3D Tiles mesh over its ellipsoid like any tileset (a client wanting the
  globe to clamp to it can still turn the ellipsoid off or show the tileset alone).

Mesh: the DEM's own regular grid (vertices at cell centres, two triangles per cell whose four
corners hold data; nodata cells stay holes). A regular grid and not an adaptive TIN: the DEM
is a grid already, its cell-level mesh is exact at full detail, the error of a coarser grid is
measured cheaply and exactly at every DEM node, and pydelatin/pymartini are not installed.

Features: a DEM block (:data:`~cimtwin.spatial.terrain.BLOCK` cells square) is the unit the
tree anchors (its centre) and counts, weighted by the vertices it has at leaf detail, so a
leaf stays within a vertex budget (about 0.5 MB of glb) however smooth the DEM. In the
content, the blocks of one DEM are one feature: id = the ``terrain_dem`` row id, properties
``dataset`` and ``source_file`` (no OGC collection serves DEMs: ``layer`` is None).

Detail: a leaf takes every ``leaf_stride``-th DEM node, the stride fixed per DEM at import as
the largest power of two keeping the mesh within ``LEAF_TOLERANCE_M`` (1 cm) of every node
(1 for a rough survey DEM, more for a smooth one), so neighbouring leaves share their edge
vertices; its ``error_m`` is the error measured over its own nodes. A parent takes a coarser
power-of-two stride: at least what keeps it within a leaf's vertex budget, more while the
measured error stays within the tolerance; its ``error_m`` is the measured largest vertical
difference between its mesh and the DEM nodes it covers. Tiles of different levels side by
side would show a crack up to their errors: every tile hangs a skirt (a vertical strip
``SKIRT_MIN_M`` + twice its error deep, facing out) under its boundary edges to hide it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import psycopg

from cimtwin.spatial.sql_toolkit import T
from cimtwin.spatial.terrain import BLOCK, Grid, decode, grid_error, sample_rows
from cimtwin.tiles.threed.mesh import FeatureTable, Mesh, Property, TileContent
from cimtwin.tiles.threed.sources.base import Bounds, Box, PropertySpec

#: leaves hold at most this many blocks: 2 x 65 x 65 vertices, about 0.5 MB of glb
MAX_BLOCKS = 2
#: a parent's vertex budget: what a full leaf has
VERTEX_BUDGET = MAX_BLOCKS * (BLOCK + 1) ** 2
#: skirts hang this far (m) below a tile's edges, plus twice the tile's error
SKIRT_MIN_M = 0.5
#: ground colours (sRGB) at the DEM's lowest and highest heights
LOW_RGB, HIGH_RGB = np.array([118, 128, 96]), np.array([178, 166, 138])

_ANCHORED = (
    "b.anchor && ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, ST_SRID(b.anchor)) "
    "AND ST_X(b.anchor) >= %(x0)s AND ST_X(b.anchor) < %(x1)s "
    "AND ST_Y(b.anchor) >= %(y0)s AND ST_Y(b.anchor) < %(y1)s"
)


def _box_params(box: Box) -> dict[str, float]:
    return dict(zip(("x0", "y0", "x1", "y1"), (float(v) for v in box), strict=True))


@dataclass
class Surface:
    """A grid mesh of part of a DEM: ``values`` are nodes from row ``row0``, col ``col0``."""

    grid: Grid
    values: np.ndarray
    row0: int
    col0: int
    leaf_stride: int = 1  # the DEM's: every leaf takes every leaf_stride-th node


def grid_mesh(surface: Surface, ri: np.ndarray, ci: np.ndarray, feature: int) -> Mesh:
    """Triangles of the coarse grid ``ri`` x ``ci`` over the quads whose corners hold data,
    counter-clockwise seen from above; unused nodes are dropped."""
    z = surface.values[np.ix_(ri, ci)].astype(np.float64)
    nr, nc = z.shape
    if nr < 2 or nc < 2:
        return Mesh.concat([])
    idx = np.arange(nr * nc).reshape(nr, nc)
    nw, ne, sw, se = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    ok = np.isfinite(z[:-1, :-1]) & np.isfinite(z[:-1, 1:])
    ok &= np.isfinite(z[1:, :-1]) & np.isfinite(z[1:, 1:])
    tris = np.concatenate(
        [np.stack([sw[ok], se[ok], ne[ok]], 1), np.stack([sw[ok], ne[ok], nw[ok]], 1)]
    )
    used, tris = np.unique(tris, return_inverse=True)
    tris = tris.reshape(-1, 3)
    x = np.broadcast_to(surface.grid.x(surface.col0 + ci)[None, :], (nr, nc)).reshape(-1)
    y = np.broadcast_to(surface.grid.y(surface.row0 + ri)[:, None], (nr, nc)).reshape(-1)
    pos = np.column_stack([x[used], y[used], z.reshape(-1)[used]])
    features = np.full(len(pos), feature, dtype=np.uint32)
    return Mesh(pos, tris, features, np.zeros((len(pos), 4), dtype=np.uint8))


def simplify(surface: Surface, tolerance_m: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Rows, columns and measured error of the grid a tile shows: the DEM's leaf stride at
    tolerance 0, else the coarsest power-of-two stride within the vertex budget and the
    tolerance."""
    nr, nc = surface.values.shape
    stride = surface.leaf_stride
    if tolerance_m <= 0:
        ri, ci = sample_rows(nr, stride), sample_rows(nc, stride)
        return ri, ci, grid_error(surface.values, ri, ci) if stride > 1 else 0.0
    while len(sample_rows(nr, stride)) * len(sample_rows(nc, stride)) > VERTEX_BUDGET:
        stride *= 2
    ri, ci = sample_rows(nr, stride), sample_rows(nc, stride)
    error = grid_error(surface.values, ri, ci) if stride > 1 else 0.0
    while 2 * stride < max(nr, nc):
        ri2, ci2 = sample_rows(nr, 2 * stride), sample_rows(nc, 2 * stride)
        error2 = grid_error(surface.values, ri2, ci2)
        if error2 > tolerance_m:
            break
        stride, ri, ci, error = 2 * stride, ri2, ci2, error2
    return ri, ci, error


def add_skirts(mesh: Mesh, depth_m: float) -> Mesh:
    """The mesh with a vertical strip ``depth_m`` deep under each boundary edge (tile edges,
    DEM edges, holes), facing outwards: it hides the crack between neighbouring tiles shown at
    different levels (each off the DEM by up to its error) without changing the surface."""
    t = mesh.triangles.astype(np.int64)
    edges = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    key = np.sort(edges, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    boundary = edges[counts[inverse.reshape(-1)] == 1]  # oriented as in their triangle
    if not len(boundary):
        return mesh
    n = len(mesh.positions)
    used, local = np.unique(boundary, return_inverse=True)
    local = local.reshape(-1, 2)
    # the skirt's own copies of the edge vertices: the writer's normals of the surface stay
    # the surface's (a face with its own vertices has its own normals)
    low = mesh.positions[used].copy()
    low[:, 2] -= depth_m
    top_a, top_b = n + local[:, 0], n + local[:, 1]
    low_a, low_b = n + len(used) + local[:, 0], n + len(used) + local[:, 1]
    # the interior lies left of a -> b seen from above: (a, a', b') and (a, b', b) face out
    skirt = np.concatenate([np.stack([top_a, low_a, low_b], 1), np.stack([top_a, low_b, top_b], 1)])
    return Mesh(
        np.concatenate([mesh.positions, mesh.positions[used], low]),
        np.concatenate([t, skirt]),
        np.concatenate([mesh.features, mesh.features[used], mesh.features[used]]),
        np.concatenate([mesh.colors, mesh.colors[used], mesh.colors[used]]),
    )


def _colour(mesh: Mesh, hmin: float, hmax: float) -> None:
    t = np.clip((mesh.positions[:, 2] - hmin) / max(hmax - hmin, 1e-6), 0, 1)[:, None]
    rgb = np.rint(LOW_RGB + t * (HIGH_RGB - LOW_RGB)).astype(np.uint8)
    mesh.colors = np.column_stack([rgb, np.full(len(rgb), 255, np.uint8)])


class TerrainSource:
    """The ``terrain`` tileset: every DEM in ``terrain_dem``."""

    id = "terrain"
    title = "Terrain (DEM)"
    layer: str | None = None
    class_name = "terrain"
    properties = (
        PropertySpec("dataset", "STRING", "the DEM's dataset (its import replace key)"),
        PropertySpec("source_file", "STRING", "the raster the DEM was imported from"),
    )
    max_features_per_tile = MAX_BLOCKS
    #: only DEM imports change this tileset (``build-3d --changed``)
    import_kinds = ("dem",)

    def bounds(self, conn: psycopg.Connection) -> Bounds | None:
        row = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e), lo, hi FROM (SELECT "
            "ST_Extent(extent) AS e, min(min_height_m) AS lo, max(max_height_m) AS hi "
            f"FROM {T.terrain_dem_block}) s"
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return Bounds((row[0], row[1], row[2], row[3]), float(row[4]), float(row[5]))

    def count(self, conn: psycopg.Connection, box: Box) -> int:
        """The blocks anchored in ``box``, in units of a full-detail block: a block counts as
        the vertices its leaf mesh has (at the DEM's leaf stride) over (BLOCK + 1)^2, so a
        leaf's content stays within the vertex budget whether the DEM is rough (stride 1:
        MAX_BLOCKS blocks a leaf) or smooth (many blocks a leaf, few vertices each)."""
        row = conn.execute(
            "SELECT count(*), sum(((b.rows + d.leaf_stride - 2) / d.leaf_stride + 1)::float8 "
            "* ((b.cols + d.leaf_stride - 2) / d.leaf_stride + 1)) "
            f"FROM {T.terrain_dem_block} b JOIN {T.terrain_dem} d ON d.id = b.dem_id "
            f"WHERE {_ANCHORED}",
            _box_params(box),
        ).fetchone()
        if not row or not row[0]:
            return 0
        return max(1, math.ceil(row[1] / (BLOCK + 1) ** 2 - 1e-9))

    def surfaces(self, conn: psycopg.Connection, box: Box) -> list[tuple[tuple, Surface]]:
        """Per DEM with blocks anchored in ``box``: (its id, dataset, source file, lowest and
        highest height) and its blocks mosaicked (missing blocks are NaN)."""
        rows = conn.execute(
            "SELECT d.id, d.dataset, d.source_file, d.min_height_m, d.max_height_m, d.origin_x, "
            "d.origin_y, d.cell_x, d.cell_y, d.block_size, b.block_row, b.block_col, b.rows, "
            f"b.cols, b.data, d.leaf_stride FROM {T.terrain_dem_block} b JOIN {T.terrain_dem} d "
            f"ON d.id = b.dem_id WHERE {_ANCHORED} ORDER BY d.id, b.block_row, b.block_col",
            _box_params(box),
        ).fetchall()
        out: list[tuple[tuple, Surface]] = []
        by_dem: dict[int, list[tuple]] = {}
        for r in rows:
            by_dem.setdefault(r[0], []).append(r)
        for blocks in by_dem.values():
            first = blocks[0]
            size = first[9]
            br0 = min(b[10] for b in blocks)
            bc0 = min(b[11] for b in blocks)
            nr = max((b[10] - br0) * size + b[12] for b in blocks)
            nc = max((b[11] - bc0) * size + b[13] for b in blocks)
            values = np.full((nr, nc), np.nan, dtype=np.float32)
            for b in blocks:
                r, c = (b[10] - br0) * size, (b[11] - bc0) * size
                values[r : r + b[12], c : c + b[13]] = decode(b[14], b[12], b[13])
            grid = Grid(first[5], first[6], first[7], first[8])
            out.append((first[:5], Surface(grid, values, br0 * size, bc0 * size, first[15])))
        return out

    def content(self, conn: psycopg.Connection, box: Box, tolerance_m: float) -> TileContent | None:
        meshes: list[Mesh] = []
        ids: list[int] = []
        datasets: list[str] = []
        files: list[str] = []
        error = 0.0
        for (dem_id, dataset, source_file, hmin, hmax), surface in self.surfaces(conn, box):
            ri, ci, err = simplify(surface, tolerance_m)
            mesh = grid_mesh(surface, ri, ci, len(ids))
            if mesh.empty:
                continue
            _colour(mesh, hmin, hmax)
            meshes.append(add_skirts(mesh, SKIRT_MIN_M + 2 * err))
            ids.append(dem_id)
            datasets.append(dataset)
            files.append(source_file)
            error = max(error, err)
        if not meshes:
            return None
        features = FeatureTable(
            self.class_name,
            np.array(ids),
            [Property("dataset", "STRING", datasets), Property("source_file", "STRING", files)],
        )
        return TileContent(Mesh.concat(meshes), features, error)

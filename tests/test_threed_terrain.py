"""The terrain source: its meshes lie on the DEM within the error they report (checked against
the GeoTIFF read by rasterio, not against cimtwin's decoder), parents' errors are measured,
contents stay bounded, and the sample's buildings stand on the terrain."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
import rasterio
from scipy.ndimage import map_coordinates

from cimtwin.db.engine import libpq_dsn
from cimtwin.spatial.model import SCHEMA
from cimtwin.spatial.terrain import LEAF_TOLERANCE_M
from cimtwin.tiles.threed.mesh import TileContent
from cimtwin.tiles.threed.sources.base import Box
from cimtwin.tiles.threed.sources.terrain import VERTEX_BUDGET, TerrainSource
from tests.conftest import SAMPLE

TIF = SAMPLE / "dem.tif"
FLOAT32_M = 1e-4  # float32 heights near 75 m are exact to ~8 micrometres


@pytest.fixture(scope="module")
def conn(loaded_sample, database_url: str) -> Iterator[psycopg.Connection]:
    assert loaded_sample["dem"].status in ("succeeded", "unchanged")
    with psycopg.connect(libpq_dsn(database_url)) as c:
        yield c


@pytest.fixture(scope="module")
def dem() -> tuple[np.ndarray, rasterio.Affine]:
    with rasterio.open(TIF) as src:
        return src.read(1).astype(np.float64), src.transform


def tif_bilinear(dem, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    values, transform = dem
    col, row = ~transform @ (np.asarray(x), np.asarray(y))
    return map_coordinates(values, [row - 0.5, col - 0.5], order=1, cval=np.nan)


def anchors(conn) -> np.ndarray:
    return np.array(
        conn.execute(
            f"SELECT ST_X(anchor), ST_Y(anchor) FROM {SCHEMA}.terrain_dem_block"
        ).fetchall()
    )


def in_box(points: np.ndarray, box: Box) -> np.ndarray:
    """Half-open box membership, as the tiler anchors features."""
    x, y = points[:, 0], points[:, 1]
    return (x >= box[0]) & (x < box[2]) & (y >= box[1]) & (y < box[3])


def quadtree(points: np.ndarray, box: Box, most: int = 2) -> Iterator[Box]:
    """Boxes of a quadtree split while they anchor more than ``most`` blocks (the test's own
    tree: each box then is a small piece of ground to ask the source for)."""
    if in_box(points, box).sum() <= most:
        if in_box(points, box).any():
            yield box
        return
    x0, y0, x1, y1 = box
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    for b in ((x0, y0, xm, ym), (xm, y0, x1, ym), (x0, ym, xm, y1), (xm, ym, x1, y1)):
        yield from quadtree(points, b, most)


def root_box(source: TerrainSource, conn) -> Box:
    bounds = source.bounds(conn)
    assert bounds is not None
    x0, y0, x1, y1 = bounds.box
    side = max(x1 - x0, y1 - y0) + 1.0
    return (x0, y0, x0 + side, y0 + side)


def surface_triangles(content: TileContent) -> np.ndarray:
    """The triangles with an area seen from above (not the vertical skirts)."""
    p, t = content.mesh.positions, content.mesh.triangles
    a, b, c = p[t[:, 0]], p[t[:, 1]], p[t[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    return t[np.abs(area) > 1e-6]


def surface_vertices(content: TileContent) -> np.ndarray:
    return content.mesh.positions[np.unique(surface_triangles(content))]


def heights_on_mesh(content: TileContent, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The mesh's height above each (x, y) by barycentric interpolation (NaN: not covered)."""
    p, t = content.mesh.positions, surface_triangles(content)
    out = np.full(len(x), np.nan)
    a, b, c = p[t[:, 0]], p[t[:, 1]], p[t[:, 2]]
    for k in range(len(x)):
        det = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
        la = ((b[:, 1] - c[:, 1]) * (x[k] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (y[k] - c[:, 1])) / det
        lb = ((c[:, 1] - a[:, 1]) * (x[k] - c[:, 0]) + (a[:, 0] - c[:, 0]) * (y[k] - c[:, 1])) / det
        lc = 1 - la - lb
        hit = np.flatnonzero((la >= -1e-9) & (lb >= -1e-9) & (lc >= -1e-9))
        if hit.size:
            i = hit[0]
            out[k] = la[i] * a[i, 2] + lb[i] * b[i, 2] + lc[i] * c[i, 2]
    return out


def node_errors(content: TileContent, dem) -> np.ndarray:
    """|mesh - DEM| at every GeoTIFF node under each triangle of the content."""
    values, transform = dem
    inv = ~transform
    p, t = content.mesh.positions, surface_triangles(content)
    diffs = []
    for tri in p[t]:
        cols, rows = inv @ (tri[:, 0], tri[:, 1])
        cols, rows = np.rint(cols - 0.5).astype(int), np.rint(rows - 0.5).astype(int)
        rr, cc = np.meshgrid(
            np.arange(rows.min(), rows.max() + 1), np.arange(cols.min(), cols.max() + 1)
        )
        rr, cc = rr.ravel(), cc.ravel()
        # barycentric in index space (the grid is regular, so this is the plane's interpolation)
        (r0, r1, r2), (c0, c1, c2) = rows, cols
        det = (r1 - r2) * (c0 - c2) + (c2 - c1) * (r0 - r2)
        la = ((r1 - r2) * (cc - c2) + (c2 - c1) * (rr - r2)) / det
        lb = ((r2 - r0) * (cc - c2) + (c0 - c2) * (rr - r2)) / det
        lc = 1 - la - lb
        inside = (la >= -1e-9) & (lb >= -1e-9) & (lc >= -1e-9)
        z = la * tri[0, 2] + lb * tri[1, 2] + lc * tri[2, 2]
        diffs.append(np.abs(z[inside] - values[rr[inside], cc[inside]]))
    return np.concatenate(diffs)


def test_leaves_follow_the_dem_within_their_measured_error(conn, dem) -> None:
    source = TerrainSource()
    stride, width, height = conn.execute(
        f"SELECT leaf_stride, width, height FROM {SCHEMA}.terrain_dem"
    ).fetchone()
    values, transform = dem
    assert (height, width) == values.shape
    leaves = list(quadtree(anchors(conn), root_box(source, conn)))
    dem_id = conn.execute(f"SELECT id FROM {SCHEMA}.terrain_dem").fetchone()
    assert dem_id is not None
    total = 0
    blocks = conn.execute(f"SELECT count(*) FROM {SCHEMA}.terrain_dem_block").fetchone()
    for box in leaves[:: max(1, len(leaves) // 6)]:
        content = source.content(conn, box, 0.0)
        if content is None:
            continue
        total += 1
        assert content.error_m <= LEAF_TOLERANCE_M
        p = surface_vertices(content)
        # every vertex is a DEM cell centre with the GeoTIFF's height there
        np.testing.assert_allclose(p[:, 2], tif_bilinear(dem, p[:, 0], p[:, 1]), atol=FLOAT32_M)
        assert list(content.features.ids) == [dem_id[0]]
        assert content.features.properties[0].values == ["sample:north_station:dem"]
        assert len(p) <= VERTEX_BUDGET
        # measured: the mesh stays within error_m of every DEM node under it, and reaches it
        errors = node_errors(content, dem)
        assert content.error_m - FLOAT32_M <= errors.max() <= content.error_m + FLOAT32_M
        # every leaf takes the same DEM nodes (every stride-th, and the last): neighbours
        # share their edge vertices, no cracks between leaves
        col, row = ~transform @ (p[:, 0], p[:, 1])
        col, row = np.rint(col - 0.5).astype(int), np.rint(row - 0.5).astype(int)
        assert ((col % stride == 0) | (col == width - 1)).all()
        assert ((row % stride == 0) | (row == height - 1)).all()
    assert total >= 3 and blocks is not None


@pytest.mark.parametrize("tolerance", [0.001, 0.05, 1.0])
def test_parent_error_is_measured(conn, dem, tolerance: float) -> None:
    source = TerrainSource()
    content = source.content(conn, root_box(source, conn), tolerance)
    assert content is not None
    assert len(surface_vertices(content)) <= VERTEX_BUDGET
    errors = node_errors(content, dem)
    # the reported error bounds the mesh's distance from every DEM node it covers, and is
    # reached (measured, not a guess)
    assert errors.max() <= content.error_m + FLOAT32_M
    assert errors.max() >= content.error_m - FLOAT32_M
    # the tolerance is kept unless the vertex budget forces a coarser grid
    full = source.content(conn, root_box(source, conn), 1e9)
    assert full is not None and len(surface_vertices(full)) <= len(surface_vertices(content))


def test_buildings_stand_on_the_terrain(conn, dem) -> None:
    """The sample's building bases (the terrain function at the footprint's box centre,
    rounded to the centimetre) lie on the terrain tileset's leaf meshes."""
    rows = conn.execute(
        "SELECT (ST_XMin(footprint) + ST_XMax(footprint)) / 2, "
        "(ST_YMin(footprint) + ST_YMax(footprint)) / 2, base_elevation_m "
        f"FROM {SCHEMA}.building"
    ).fetchall()
    assert len(rows) > 200
    pts = np.array(rows, dtype=np.float64)
    source = TerrainSource()
    on_mesh = np.full(len(pts), np.nan)
    leaf_error = 0.0
    for box in quadtree(anchors(conn), root_box(source, conn)):
        content = source.content(conn, box, 0.0)
        if content is None:
            continue
        top = surface_vertices(content)
        lo, hi = top.min(0), top.max(0)
        todo = np.isnan(on_mesh) & (pts[:, :2] >= lo[:2]).all(1) & (pts[:, :2] <= hi[:2]).all(1)
        if todo.any():
            leaf_error = max(leaf_error, content.error_m)
            on_mesh[todo] = heights_on_mesh(content, pts[todo, 0], pts[todo, 1])
    assert np.isfinite(on_mesh).all()
    # within the files' centimetre rounding plus the leaves' measured error
    assert np.abs(on_mesh - pts[:, 2]).max() <= 0.005 + leaf_error + FLOAT32_M


def test_sample_terrain_tileset_builds_and_validates(conn, database_url: str, tmp_path) -> None:
    import json

    import pygltflib

    from cimtwin.tiles.threed.build import build_tileset
    from cimtwin.tiles.threed.plan import ROOT_TILE_M, parse_key, tile_box
    from tests.threed_check import validate

    result = build_tileset("terrain", tmp_path, database_url=database_url, workers=1)
    assert result.path is not None and result.largest < 1_000_000
    validate(result.path)
    doc = json.loads(result.path.read_text())
    manifest = json.loads((tmp_path / "terrain" / "build.json").read_text())
    assert doc["schema"]["classes"]["terrain"]["properties"]["dataset"]["type"] == "STRING"

    def walk(tile: dict):
        yield tile
        for child in tile.get("children", []):
            yield from walk(child)

    tiles = list(walk(doc["root"]))
    leaves = [t for t in tiles if not t.get("children") and "content" in t]
    assert leaves and all(t["geometricError"] <= LEAF_TOLERANCE_M for t in leaves)
    blocks = conn.execute(f"SELECT count(*) FROM {SCHEMA}.terrain_dem_block").fetchone()
    assert blocks is not None
    # every DEM block is drawn in exactly one leaf; each tile has one feature (the DEM)
    points = anchors(conn)
    boxes = [tile_box(parse_key(_key(t)), ROOT_TILE_M) for t in leaves]
    assert (sum(in_box(points, b).astype(int) for b in boxes) == 1).all()
    assert len(points) == blocks[0]
    assert {manifest["tiles"][_key(t)]["features"] for t in leaves} == {1}
    # a parent's geometric error is at least the error measured for its content
    for t in tiles:
        if t.get("children") and "content" in t:
            assert t["geometricError"] >= manifest["tiles"][_key(t)]["error_m"]
    # picking: a leaf's feature is the DEM with its dataset
    dem_id = conn.execute(f"SELECT id FROM {SCHEMA}.terrain_dem").fetchone()
    g = pygltflib.GLTF2.load_binary(str(tmp_path / "terrain" / leaves[0]["content"]["uri"]))
    table = g.extensions["EXT_structural_metadata"]["propertyTables"][0]
    assert table["class"] == "terrain" and table["count"] == 1
    blob = g.binary_blob()
    view = g.bufferViews[table["properties"]["id"]["values"]]
    ids = np.frombuffer(blob, dtype="<u4", count=1, offset=view.byteOffset or 0)
    assert dem_id is not None and int(ids[0]) == dem_id[0]


def _key(tile: dict) -> str:
    return tile["content"]["uri"].removeprefix("tiles/").removesuffix(".glb")


def test_rough_dem_builds_a_bounded_multi_level_tree(scratch_database: str, tmp_path) -> None:
    """A rough DEM (no node can be left out within 1 cm) is split into leaves of at most
    MAX_BLOCKS full-detail blocks, parents carry their measured error, and it validates."""
    import json

    import pygltflib
    from rasterio.transform import from_origin

    from cimtwin.importers.registry import importer_for
    from cimtwin.importers.runner import ImportOptions, run_import
    from cimtwin.tiles.threed.build import build_tileset
    from cimtwin.tiles.threed.sources.terrain import MAX_BLOCKS
    from tests.threed_check import validate

    rng = np.random.default_rng(3)
    z = 60 + np.cumsum(rng.normal(0, 0.3, (300, 300)), axis=1).astype(np.float32)
    tif = tmp_path / "rough.tif"
    profile = {"driver": "GTiff", "width": 300, "height": 300, "count": 1, "dtype": "float32"}
    with rasterio.open(
        tif, "w", crs="EPSG:4547", transform=from_origin(502000, 2501800, 2, 2), **profile
    ) as dst:
        dst.write(z, 1)
    run_import(importer_for("dem"), [tif], ImportOptions(dataset="t:rough"), scratch_database)
    with psycopg.connect(libpq_dsn(scratch_database)) as c:
        stride, n_blocks, nodes = c.execute(
            f"SELECT leaf_stride, (SELECT count(*) FROM {SCHEMA}.terrain_dem_block), "
            f"(SELECT sum(rows * cols) FROM {SCHEMA}.terrain_dem_block) FROM {SCHEMA}.terrain_dem"
        ).fetchone()
        source = TerrainSource()
        # at stride 1 a block weighs its nodes over a full block's (edge blocks are smaller)
        assert stride == 1 and n_blocks == 25
        assert source.count(c, root_box(source, c)) == int(np.ceil(nodes / 65**2))
    result = build_tileset("terrain", tmp_path / "out", database_url=scratch_database, workers=1)
    assert result.path is not None and result.largest < 1_000_000
    validate(result.path)
    doc = json.loads(result.path.read_text())
    manifest = json.loads((tmp_path / "out" / "terrain" / "build.json").read_text())

    def walk(tile: dict, depth: int = 0):
        yield tile, depth
        for child in tile.get("children", []):
            yield from walk(child, depth + 1)

    tiles = list(walk(doc["root"]))
    assert max(d for _, d in tiles) >= 2
    for tile, _ in tiles:
        if "content" not in tile:
            continue
        g = pygltflib.GLTF2.load_binary(str(tmp_path / "out" / "terrain" / tile["content"]["uri"]))
        vertices = g.accessors[g.meshes[0].primitives[0].attributes.POSITION].count
        # the leaf budget, plus at most two skirt vertices per node on the perimeter
        assert vertices <= MAX_BLOCKS * 65 * 65 + 8 * MAX_BLOCKS * 65
        if tile.get("children"):  # a parent: coarser than its children, error measured
            assert manifest["tiles"][_key(tile)]["error_m"] > 0.05
        else:
            assert tile["geometricError"] == 0.0


def test_sample_pipes_lie_under_the_terrain(conn, dem) -> None:
    """Every vertex of every sample pipe's centre line is below the DEM's ground there."""
    pts = np.array(
        conn.execute(
            "SELECT ST_X(d.geom), ST_Y(d.geom), ST_Z(d.geom) FROM "
            f"{SCHEMA}.pipeline_segment s, ST_DumpPoints(s.geom) d"
        ).fetchall()
    )
    assert len(pts) > 1000
    ground = tif_bilinear(dem, pts[:, 0], pts[:, 1])
    assert np.isfinite(ground).all()
    assert (pts[:, 2] < ground).all()


def test_skirts_hang_under_every_boundary_edge_facing_out() -> None:
    from cimtwin.tiles.threed.mesh import Mesh
    from cimtwin.tiles.threed.sources.terrain import add_skirts

    # two squares side by side (6 nodes, 4 triangles, counter-clockwise from above)
    pos = np.array([[0, 0, 5], [1, 0, 5], [2, 0, 5], [0, 1, 6], [1, 1, 6], [2, 1, 6]], float)
    tris = np.array([[0, 1, 4], [0, 4, 3], [1, 2, 5], [1, 5, 4]])
    mesh = add_skirts(Mesh(pos, tris, 0, [1, 2, 3, 255]), 0.75)
    # its own copies of the 6 edge vertices (normals not shared with the surface) and 6 below
    assert len(mesh.positions) == 18 and len(mesh.triangles) == 4 + 2 * 6
    assert not set(mesh.triangles[4:].ravel()) & set(range(6))
    np.testing.assert_array_equal(mesh.positions[6:12], pos)
    low = {tuple(p[:2]): p[2] for p in mesh.positions[12:]}
    assert all(low[tuple(p[:2])] == p[2] - 0.75 for p in pos)
    centre = pos[:, :2].mean(0)
    for t in mesh.triangles[4:]:
        a, b, c = mesh.positions[t]
        normal = np.cross(b - a, c - a)
        outward = (a + b + c)[:2] / 3 - centre
        assert abs(normal[2]) < 1e-12 and normal[:2] @ outward > 0

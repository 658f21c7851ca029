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


def quadtree(source: TerrainSource, conn, box: Box, depth: int = 0) -> Iterator[tuple[Box, int]]:
    """Leaves of a quadtree split while a box holds more blocks than a leaf may."""
    if source.count(conn, box) <= source.max_features_per_tile or depth > 12:
        yield box, depth
        return
    x0, y0, x1, y1 = box
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    for b in ((x0, y0, xm, ym), (xm, y0, x1, ym), (x0, ym, xm, y1), (xm, ym, x1, y1)):
        yield from quadtree(source, conn, b, depth + 1)


def root_box(source: TerrainSource, conn) -> Box:
    bounds = source.bounds(conn)
    assert bounds is not None
    x0, y0, x1, y1 = bounds.box
    side = max(x1 - x0, y1 - y0) + 1.0
    return (x0, y0, x0 + side, y0 + side)


def heights_on_mesh(content: TileContent, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The mesh's height above each (x, y) by barycentric interpolation (NaN: not covered)."""
    p, t = content.mesh.positions, content.mesh.triangles
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
    p, t = content.mesh.positions, content.mesh.triangles
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
    leaves = [(b, d) for b, d in quadtree(source, conn, root_box(source, conn))]
    dem_id = conn.execute(f"SELECT id FROM {SCHEMA}.terrain_dem").fetchone()
    assert dem_id is not None
    total = 0
    blocks = conn.execute(f"SELECT count(*) FROM {SCHEMA}.terrain_dem_block").fetchone()
    for box, _ in leaves[:: max(1, len(leaves) // 6)]:
        content = source.content(conn, box, 0.0)
        if content is None:
            continue
        total += 1
        assert content.error_m <= LEAF_TOLERANCE_M
        p = content.mesh.positions
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
    assert sum(source.count(conn, b) for b, _ in leaves) == blocks[0]


@pytest.mark.parametrize("tolerance", [0.001, 0.05, 1.0])
def test_parent_error_is_measured(conn, dem, tolerance: float) -> None:
    source = TerrainSource()
    content = source.content(conn, root_box(source, conn), tolerance)
    assert content is not None
    assert len(content.mesh.positions) <= VERTEX_BUDGET
    errors = node_errors(content, dem)
    # the reported error bounds the mesh's distance from every DEM node it covers, and is
    # reached (measured, not a guess)
    assert errors.max() <= content.error_m + FLOAT32_M
    assert errors.max() >= content.error_m - FLOAT32_M
    # the tolerance is kept unless the vertex budget forces a coarser grid
    full = source.content(conn, root_box(source, conn), 1e9)
    assert full is not None and len(full.mesh.positions) <= len(content.mesh.positions)


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
    for box, _ in quadtree(source, conn, root_box(source, conn)):
        content = source.content(conn, box, 0.0)
        if content is None:
            continue
        lo, hi = content.mesh.positions.min(0), content.mesh.positions.max(0)
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
    source = TerrainSource()
    boxes = [tile_box(parse_key(_key(t)), ROOT_TILE_M) for t in leaves]
    assert sum(source.count(conn, b) for b in boxes) == blocks[0]
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

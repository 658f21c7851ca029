"""The 3D Tiles core: glb writer, tileset tree, build plan and jobs, incremental rebuilds."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pygltflib
import pyogrio
import pytest
from pyproj import CRS, Transformer

from cimtwin.tiles.threed.glb import SchemaProperty, glb_bytes, schema
from cimtwin.tiles.threed.mesh import FeatureTable, Mesh, Property, TileContent
from cimtwin.tiles.threed.placement import Placement
from tests.threed_check import validate_glb
from tests.threed_fake import X0, Y0, FakeSource, box_mesh
from tests.threed_read import accessor, table_column, walk_tiles


def _content() -> TileContent:
    meshes = [box_mesh(X0 + 30 * i, Y0 + 10 * i, 5.0, 2.0, 12.0 + i, i) for i in range(3)]
    features = FeatureTable(
        "box",
        [101, 4_000_000_000, 7],
        [
            Property("name", "STRING", ["站房", None, "b"]),
            Property("height", "FLOAT64", [10.0, None, 12.0]),
            Property("floors", "INT64", [3, 4, None]),
        ],
    )
    return TileContent(Mesh.concat(meshes), features, 0.0)


def _schema() -> dict:
    props = [SchemaProperty(p.name, p.type, p.description) for p in FakeSource.properties]
    return schema("fakeboxes", "box", props)


def test_glb_places_vertices_and_carries_feature_metadata(tmp_path):
    placement = Placement(geoid="egm96_15.gtx", height_offset_m=0.3)
    content = _content()
    centre = content.mesh.positions.mean(axis=0)
    frame = placement.frame(*centre)
    data = glb_bytes(content, placement, frame, _schema())
    path = tmp_path / "t.glb"
    path.write_bytes(data)

    g = pygltflib.GLTF2.load_binary(str(path))
    blob = g.binary_blob()
    prim = g.meshes[0].primitives[0]
    gl = accessor(g, blob, prim.attributes.POSITION).astype(np.float64)
    # glTF y-up back to ENU (x, -z, y), then the frame's own matrix to ECEF
    enu = np.column_stack([gl[:, 0], -gl[:, 2], gl[:, 1], np.ones(len(gl))])
    ecef = (frame.matrix @ enu.T).T[:, :3]
    # the oracle: pyproj directly, geoid from the same grid, not through Placement
    lonlat = Transformer.from_crs(4547, 4326, always_xy=True)
    p = content.mesh.positions
    lon, lat = lonlat.transform(p[:, 0], p[:, 1])
    geoid = Transformer.from_pipeline(
        "+proj=vgridshift +grids=/usr/share/proj/egm96_15.gtx +multiplier=1"
    )
    _, _, n = geoid.transform(lon, lat, np.zeros(len(p)))
    to_ecef = Transformer.from_crs(CRS.from_epsg(4547).to_3d(), 4978, always_xy=True)
    expected = np.column_stack(to_ecef.transform(p[:, 0], p[:, 1], p[:, 2] + 0.3 + np.array(n)))
    assert np.abs(ecef - expected).max() < 0.001

    # normals: unit length, and (every face has its own vertices) equal to the face normal
    # of the triangles read back; the last box's roof points up (glTF +y)
    normals = accessor(g, blob, prim.attributes.NORMAL)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=0.01)
    tri = accessor(g, blob, prim.indices).reshape(-1, 3)
    face = np.cross(gl[tri[:, 1]] - gl[tri[:, 0]], gl[tri[:, 2]] - gl[tri[:, 0]])
    face /= np.linalg.norm(face, axis=1, keepdims=True)
    for k in range(3):
        assert np.all(np.einsum("ij,ij->i", normals[tri[:, k]], face) > 0.999)
    assert np.all(normals[tri[2, 0]][1] > 0.999)  # triangles 2, 3 are box 0's roof

    # feature ids per vertex -> property table rows
    ext = prim.extensions["EXT_mesh_features"]["featureIds"][0]
    assert ext["featureCount"] == 3 and ext["propertyTable"] == 0
    fid = accessor(g, blob, prim.attributes._FEATURE_ID_0)
    assert fid.tolist() == content.mesh.features.astype(float).tolist()
    meta = g.extensions["EXT_structural_metadata"]
    table = meta["propertyTables"][0]
    assert table["class"] == "box" and table["count"] == 3
    cols = table["properties"]
    assert table_column(g, blob, cols["id"], "UINT32") == [101, 4_000_000_000, 7]
    assert table_column(g, blob, cols["name"], "STRING") == ["站房", "", "b"]
    heights = table_column(g, blob, cols["height"], "FLOAT64")
    no_data = meta["schema"]["classes"]["box"]["properties"]["height"]["noData"]
    assert heights == [10.0, no_data, 12.0]
    floors = table_column(g, blob, cols["floors"], "INT32")
    assert floors[:2] == [3, 4]
    assert floors[2] == meta["schema"]["classes"]["box"]["properties"]["floors"]["noData"]

    validate_glb(path)


def test_glb_with_an_all_empty_string_column_is_valid(tmp_path):
    content = _content()
    content.features.properties[0].values = [None, None, None]
    placement = Placement(geoid="none")
    path = tmp_path / "empty.glb"
    path.write_bytes(glb_bytes(content, placement, placement.frame(X0, Y0, 0.0), _schema()))
    g = pygltflib.GLTF2.load_binary(str(path))
    cols = g.extensions["EXT_structural_metadata"]["propertyTables"][0]["properties"]
    assert "name" not in cols and "height" in cols  # an all-noData string column is left out
    validate_glb(path)


def test_glb_refuses_what_it_cannot_write():
    content = _content()
    placement = Placement(geoid="none")
    frame = placement.frame(X0, Y0, 0.0)
    content.features.ids[0] = -1
    with pytest.raises(ValueError, match="UINT32"):
        glb_bytes(content, placement, frame, _schema())
    with pytest.raises(ValueError, match="identifier"):
        schema("fake boxes", "box", [])


# --- the tree and the build -------------------------------------------------------------------

FAKE = "tests.threed_fake:FakeSource"


@pytest.fixture()
def fake_db(database_url):
    import psycopg

    from cimtwin.db.engine import libpq_dsn
    from tests.threed_fake import create_table, fill_grid

    with psycopg.connect(libpq_dsn(database_url), autocommit=True) as conn:
        create_table(conn)
        fill_grid(conn, 12)  # 144 boxes over 480 m: split at 30 per tile
    return database_url


@pytest.mark.parametrize("x0", [X0, 503600.0], ids=["one-root", "across-level-0-tiles"])
def test_build_writes_a_valid_tree_with_measured_errors(fake_db, tmp_path, x0):
    import json

    import psycopg

    from cimtwin.db.engine import libpq_dsn
    from tests.threed_fake import fill_grid

    with psycopg.connect(libpq_dsn(fake_db), autocommit=True) as conn:
        fill_grid(conn, 12, x0=x0)  # 503808 = 123 * 4096: the second set spans two roots

    from cimtwin.tiles.threed.build import build_tileset
    from tests.threed_check import validate

    placement = Placement(geoid="egm96_15.gtx", height_offset_m=0.0)
    result = build_tileset(
        "fakeboxes",
        tmp_path,
        database_url=fake_db,
        target=FAKE,
        workers=1,
        placement=placement,
        max_depth=12,
    )
    doc = json.loads(result.path.read_text())
    # a tree under one level-0 tile has it as root; else a root without content over them
    assert ("content" in doc["root"]) == (x0 == X0)
    assert doc["asset"]["version"] == "1.1"
    assert (
        "EGM96" in doc["asset"]["extras"]["placement"]
        or "egm96" in doc["asset"]["extras"]["placement"]
    )
    assert doc["schema"]["classes"]["box"]["properties"]["id"]["componentType"] == "UINT32"
    tiles: list = []
    walk_tiles(doc["root"], np.eye(4), tiles)
    leaves = [t for t, _ in tiles if not t.get("children")]
    assert len(leaves) >= 144 // 30
    manifest = json.loads((tmp_path / "fakeboxes" / "build.json").read_text())
    # every box is in exactly one leaf, and no leaf holds more than the source's maximum
    assert sum(manifest["tiles"][_key(t)]["features"] for t in leaves) == 144
    assert max(manifest["tiles"][_key(t)]["features"] for t in leaves) <= 30
    for tile, world in tiles:
        assert tile.get("refine") == "REPLACE" or not tile.get("children")
        for child in tile.get("children", []):
            assert child["geometricError"] <= tile["geometricError"]
            r, c = tile["boundingVolume"]["region"], child["boundingVolume"]["region"]
            assert r[0] <= c[0] and r[1] <= c[1] and r[2] >= c[2] and r[3] >= c[3]
        if "content" in tile:
            entry = manifest["tiles"][_key(tile)]
            # the tile's composed transform is its own ENU frame, exactly
            assert np.allclose(world, np.array(entry["transform"]).reshape(4, 4).T, atol=1e-6)
            if not tile.get("children"):
                assert tile["geometricError"] == 0.0
            else:
                assert tile["geometricError"] >= entry["error_m"] > 0
    assert doc["geometricError"] >= doc["root"]["geometricError"]
    # a leaf's vertex through the composed transforms lands where pyproj puts its box corner
    leaf = next(t for t in tiles if not t[0].get("children"))
    g = pygltflib.GLTF2.load_binary(str(tmp_path / "fakeboxes" / leaf[0]["content"]["uri"]))
    blob = g.binary_blob()
    gl = accessor(g, blob, g.meshes[0].primitives[0].attributes.POSITION).astype(np.float64)
    ecef = (leaf[1] @ np.column_stack([gl[:, 0], -gl[:, 2], gl[:, 1], np.ones(len(gl))]).T).T
    ids = table_column(
        g,
        blob,
        g.extensions["EXT_structural_metadata"]["propertyTables"][0]["properties"]["id"],
        "UINT32",
    )
    k = ids[0] - 1
    x, y, z0 = x0 + (k // 12) * 40.0 - 8.0, Y0 + (k % 12) * 40.0 - 8.0, 5.0
    lon, lat = Transformer.from_crs(4547, 4326, always_xy=True).transform(x, y)
    _, _, n = Transformer.from_pipeline(
        "+proj=vgridshift +grids=/usr/share/proj/egm96_15.gtx +multiplier=1"
    ).transform(lon, lat, 0.0)
    want = Transformer.from_crs(CRS.from_epsg(4547).to_3d(), 4978, always_xy=True).transform(
        x, y, z0 + n
    )
    assert np.min(np.linalg.norm(ecef[:, :3] - np.array(want), axis=1)) < 0.01
    validate(result.path)


def _key(tile: dict) -> str:
    uri = tile["content"]["uri"]  # tiles/{level}/{x}/{y}.glb
    return uri.removeprefix("tiles/").removesuffix(".glb")


# --- incremental builds on re-imported buildings ----------------------------------------------

SAMPLE_BUILDINGS = (
    Path(__file__).resolve().parents[1] / "data_samples/north_station/gpkg/buildings.gpkg"
)


def _import(url: str, frame, path: Path, dataset: str) -> None:
    from cimtwin.importers.registry import importer_for
    from cimtwin.importers.runner import ImportOptions, run_import

    path.unlink(missing_ok=True)
    pyogrio.write_dataframe(frame, path, layer="building")
    run_import(importer_for("buildings"), [path], ImportOptions(dataset=dataset, replace=True), url)


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in (folder / "tiles").rglob("*.glb")
    }


@pytest.mark.parametrize(
    "target",
    [
        "tests.threed_fake:FakeBuildingSource",
        pytest.param(
            "tests.threed_fake_buildings:SmallTileBuildings",
            marks=pytest.mark.skipif(
                find_spec("cimtwin.tiles.threed.sources.buildings") is None,
                reason="the buildings source is not on this branch",
            ),
        ),
    ],
    ids=["stand-in", "buildings"],
)
def test_changed_rebuilds_only_the_tiles_over_a_reimported_area(scratch_database, tmp_path, target):
    import json
    import time

    from cimtwin.tiles.threed.build import build_tileset
    from tests.threed_check import validate

    frame = pyogrio.read_dataframe(SAMPLE_BUILDINGS, layer="building")
    # "one grid": the buildings of the south-west corner, imported as their own dataset
    cx = frame.geometry.centroid
    x0, y0 = frame.total_bounds[:2]
    corner = ((cx.x - x0) < 400) & ((cx.y - y0) < 300)
    assert 3 < corner.sum() < len(frame) // 3
    grid, rest = frame[corner].copy(), frame[~corner].copy()
    _import(scratch_database, rest, tmp_path / "rest.gpkg", "rest")
    _import(scratch_database, grid, tmp_path / "grid.gpkg", "grid")

    out = tmp_path / "out"
    placement = Placement(geoid="egm96_15.gtx", height_offset_m=0.0)
    build = dict(database_url=scratch_database, target=target, placement=placement)
    first = build_tileset("b3d", out, workers=2, **build)
    folder = out / "b3d"
    before = _files(folder)
    assert first.built == first.planned == len(before)  # every planned tile has its file
    time.sleep(0.05)

    # nothing imported since: --changed rebuilds nothing and touches no file
    again = build_tileset("b3d", out, changed=True, workers=1, **build)
    assert again.built == 0 and _files(folder) == before

    # the grid re-imported with one height changed
    code = grid["bldg_cd"].iloc[0]
    old_height = float(grid["height_m"].iloc[0])
    grid.loc[grid.index[0], "height_m"] = old_height + 7.5
    _import(scratch_database, grid, tmp_path / "grid.gpkg", "grid")
    result = build_tileset("b3d", out, changed=True, workers=1, **build)
    after = _files(folder)
    assert set(after) == set(before)

    manifest = json.loads((folder / "build.json").read_text())
    gx0, gy0, gx1, gy1 = grid.total_bounds
    rebuilt = {k for k in after if after[k] != before[k]}
    kept = set(after) - rebuilt
    assert rebuilt and kept, "a one-grid change should rebuild some tiles and keep others"
    assert result.built == len(rebuilt)
    from cimtwin.tiles.threed.plan import ROOT_TILE_M, meets, parse_key, tile_box
    from cimtwin.tiles.threed.registry import source_for

    root_m = getattr(source_for(target), "root_tile_m", ROOT_TILE_M)

    for path in after:
        key = parse_key(path.removeprefix("tiles/").removesuffix(".glb"))
        touches = meets(tile_box(key, root_m), (gx0, gy0, gx1, gy1))
        assert (path in rebuilt) == touches, path
    # the new height is in the output: the leaf holding the building has it in its table
    found = []
    for path in rebuilt:
        g = pygltflib.GLTF2.load_binary(str(folder / path))
        blob = g.binary_blob()
        cols = g.extensions["EXT_structural_metadata"]["propertyTables"][0]["properties"]
        codes = table_column(g, blob, cols["code"], "STRING")
        if code in codes:
            found.append(table_column(g, blob, cols["height"], "FLOAT64")[codes.index(code)])
    assert found and all(abs(h - (old_height + 7.5)) < 1e-9 for h in found)
    assert manifest["last_batch"] > 0
    validate(folder / "tileset.json")


# --- the command ------------------------------------------------------------------------------


def test_build_3d_command_and_bbox_update(fake_db, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cimtwin.cli import app
    from cimtwin.settings import Settings
    from cimtwin.tiles.threed import registry
    from cimtwin.tiles.threed.plan import meets, parse_key, tile_box

    settings = Settings(database_url=fake_db, tiles_dir=str(tmp_path))
    monkeypatch.setattr("cimtwin.settings.get_settings", lambda: settings)
    monkeypatch.setitem(registry.TILESETS, "fakeboxes", FAKE)
    r = CliRunner().invoke(app, ["tiles", "build-3d", "--layers", "fakeboxes", "--jobs", "1"])
    assert r.exit_code == 0, r.output
    folder = tmp_path / "fakeboxes"
    assert (folder / "tileset.json").is_file()
    before = _files(folder)
    # --bbox: only the tiles meeting that box are rewritten
    area = (X0 - 1, Y0 - 1, X0 + 1, Y0 + 1)
    r = CliRunner().invoke(
        app,
        [
            "tiles",
            "build-3d",
            "--layers",
            "fakeboxes",
            "--jobs",
            "1",
            "--bbox",
            ",".join(str(v) for v in area),
        ],
    )
    assert r.exit_code == 0, r.output
    after = _files(folder)
    assert set(after) == set(before)
    for path in after:
        key = parse_key(path.removeprefix("tiles/").removesuffix(".glb"))
        assert (after[path][1] != before[path][1]) == meets(tile_box(key, 4096.0), area), path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "nope"], "unknown 3D layer 'nope'"),
        (["--bbox", "1,2,3"], "--bbox '1,2,3'"),
        (["--bbox", "0,0,1,1", "--grid", "G1"], "give one of them"),
    ],
)
def test_build_3d_mistakes_are_one_line(args, message):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "cimtwin.cli", "tiles", "build-3d", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_a_leaf_over_the_byte_budget_is_split_and_stays_split(fake_db, tmp_path):
    import json

    from cimtwin.tiles.threed.build import build_tileset
    from tests.threed_check import validate

    placement = Placement(geoid="none")
    build = dict(database_url=fake_db, target=FAKE, workers=1, placement=placement)
    build_tileset("plain", tmp_path, **build)
    plain = json.loads((tmp_path / "plain" / "build.json").read_text())["tiles"].values()
    leaf_sizes = [t["bytes"] for t in plain if t["tolerance_m"] == 0]
    budget = max(leaf_sizes) // 3  # the unbounded build's largest leaf is 3x over it
    result = build_tileset("bounded", tmp_path, max_content_bytes=budget, **build)
    manifest = json.loads((tmp_path / "bounded" / "build.json").read_text())
    assert manifest["split"]
    doc = json.loads(result.path.read_text())
    tiles: list = []
    walk_tiles(doc["root"], np.eye(4), tiles)
    leaves = [manifest["tiles"][_key(t)] for t, _ in tiles if not t.get("children")]
    assert all(t["bytes"] <= budget or t["features"] == 1 for t in leaves)
    assert sum(t["features"] for t in leaves) == 144
    # the splits are remembered: an update with nothing changed rebuilds nothing
    again = build_tileset("bounded", tmp_path, changed=True, max_content_bytes=budget, **build)
    assert again.built == 0
    validate(result.path)


def test_grid_box_is_the_work_grids_extent(loaded_sample, database_url):
    from cimtwin.errors import UserError
    from cimtwin.tiles.threed.build import grid_box

    grids = pyogrio.read_dataframe(SAMPLE_BUILDINGS.parents[1] / "shp" / "work_grid.shp")
    row = grids.iloc[3]
    assert np.allclose(grid_box(database_url, row["code"]), row.geometry.bounds, atol=1e-3)
    with pytest.raises(UserError, match="no work grid"):
        grid_box(database_url, "nope")


def test_batch_extents_and_changed_areas(loaded_sample, database_url):
    import psycopg

    from cimtwin.db.engine import libpq_dsn
    from cimtwin.tiles.threed.build import batch_extent, changed_areas

    frame = pyogrio.read_dataframe(SAMPLE_BUILDINGS, layer="building")
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        batch = loaded_sample["buildings"].batch_id
        box = batch_extent(conn, batch, "buildings")
        # buildings and underground structures ride in one file: the extent holds both
        assert isinstance(box, tuple)
        fb = frame.total_bounds
        assert box[0] <= fb[0] + 1e-6 and box[1] <= fb[1] + 1e-6
        assert box[2] >= fb[2] - 1e-6 and box[3] >= fb[3] - 1e-6
        assert batch_extent(conn, batch, "no-such-kind") == "everywhere"
    a, b = {"kind": "x", "extent": [0, 0, 1, 1]}, {"kind": "x", "extent": [5, 5, 6, 6]}
    # a new batch and a replaced one both count; one seen by both builds does not
    assert sorted(changed_areas({"1": a, "2": b}, {"2": b, "3": a})) == [(0, 0, 1, 1)] * 2
    assert changed_areas({}, {"4": {"kind": "y", "extent": "everywhere"}}) is None
    assert changed_areas({"1": a}, {"1": a}) == []


def test_a_job_reconnects_when_its_kept_connection_was_closed(fake_db, tmp_path):
    from cimtwin.db.engine import libpq_dsn
    from cimtwin.tiles import cluster
    from cimtwin.tiles.store import open_store
    from cimtwin.tiles.threed import plan as plan_mod

    placement = Placement(geoid="none")
    dsn = libpq_dsn(fake_db)
    job = plan_mod.TileJob(
        source=FAKE,
        dsn=dsn,
        store=open_store(tmp_path),
        key=(0, 122, 610),
        box=plan_mod.tile_box((0, 122, 610), 4096.0),
        tolerance_m=0.0,
        schema=_schema(),
        geoid="none",
        height_offset_m=placement.offset,
    )
    first = plan_mod.run_job(job)
    cluster.worker_connection(dsn).close()  # as a server restart would leave it
    again = plan_mod.run_job(job)
    assert first.features == again.features == 144 and first.sha256 == again.sha256

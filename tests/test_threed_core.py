"""The 3D Tiles core: glb writer, tileset tree, build plan and jobs, incremental rebuilds."""

from __future__ import annotations

import numpy as np
import pygltflib
import pytest
from pyproj import CRS, Transformer

from cimtwin.tiles.threed.glb import SchemaProperty, glb_bytes, schema
from cimtwin.tiles.threed.mesh import FeatureTable, Mesh, Property, TileContent
from cimtwin.tiles.threed.placement import Placement
from tests.threed_check import validate_glb
from tests.threed_fake import X0, Y0, FakeSource, box_mesh


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


def _accessor(g: pygltflib.GLTF2, blob: bytes, index: int) -> np.ndarray:
    acc = g.accessors[index]
    view = g.bufferViews[acc.bufferView]
    dtype = {5126: "<f4", 5123: "<u2", 5125: "<u4"}[acc.componentType]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc.type]
    start = view.byteOffset + (acc.byteOffset or 0)
    arr = np.frombuffer(blob, dtype=dtype, count=acc.count * width, offset=start)
    return arr.reshape(acc.count, width) if width > 1 else arr


def _table_column(g: pygltflib.GLTF2, blob: bytes, column: dict, kind: str) -> list:
    view = g.bufferViews[column["values"]]
    raw = blob[view.byteOffset : view.byteOffset + view.byteLength]
    if kind == "STRING":
        ov = g.bufferViews[column["stringOffsets"]]
        offs = np.frombuffer(blob, "<u4", offset=ov.byteOffset, count=ov.byteLength // 4)
        return [raw[offs[i] : offs[i + 1]].decode() for i in range(len(offs) - 1)]
    return np.frombuffer(raw, {"UINT32": "<u4", "FLOAT64": "<f8", "INT32": "<i4"}[kind]).tolist()


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
    gl = _accessor(g, blob, prim.attributes.POSITION).astype(np.float64)
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
    normals = _accessor(g, blob, prim.attributes.NORMAL)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    tri = _accessor(g, blob, prim.indices).reshape(-1, 3)
    face = np.cross(gl[tri[:, 1]] - gl[tri[:, 0]], gl[tri[:, 2]] - gl[tri[:, 0]])
    face /= np.linalg.norm(face, axis=1, keepdims=True)
    for k in range(3):
        assert np.all(np.einsum("ij,ij->i", normals[tri[:, k]], face) > 0.9999)
    assert np.all(normals[tri[2, 0]][1] > 0.9999)  # triangles 2, 3 are box 0's roof

    # feature ids per vertex -> property table rows
    ext = prim.extensions["EXT_mesh_features"]["featureIds"][0]
    assert ext["featureCount"] == 3 and ext["propertyTable"] == 0
    fid = _accessor(g, blob, prim.attributes._FEATURE_ID_0)
    assert fid.tolist() == content.mesh.features.astype(float).tolist()
    meta = g.extensions["EXT_structural_metadata"]
    table = meta["propertyTables"][0]
    assert table["class"] == "box" and table["count"] == 3
    cols = table["properties"]
    assert _table_column(g, blob, cols["id"], "UINT32") == [101, 4_000_000_000, 7]
    assert _table_column(g, blob, cols["name"], "STRING") == ["站房", "", "b"]
    heights = _table_column(g, blob, cols["height"], "FLOAT64")
    no_data = meta["schema"]["classes"]["box"]["properties"]["height"]["noData"]
    assert heights == [10.0, no_data, 12.0]
    floors = _table_column(g, blob, cols["floors"], "INT32")
    assert floors[:2] == [3, 4]
    assert floors[2] == meta["schema"]["classes"]["box"]["properties"]["floors"]["noData"]

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


def _walk(tile: dict, parent: np.ndarray, out: list) -> None:
    world = parent
    if "transform" in tile:
        world = parent @ np.array(tile["transform"]).reshape(4, 4).T
    out.append((tile, world))
    for child in tile.get("children", []):
        _walk(child, world, out)


def test_build_writes_a_valid_tree_with_measured_errors(fake_db, tmp_path):
    import json

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
    assert doc["asset"]["version"] == "1.1"
    assert (
        "EGM96" in doc["asset"]["extras"]["placement"]
        or "egm96" in doc["asset"]["extras"]["placement"]
    )
    assert doc["schema"]["classes"]["box"]["properties"]["id"]["componentType"] == "UINT32"
    tiles: list = []
    _walk(doc["root"], np.eye(4), tiles)
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
    gl = _accessor(g, blob, g.meshes[0].primitives[0].attributes.POSITION).astype(np.float64)
    ecef = (leaf[1] @ np.column_stack([gl[:, 0], -gl[:, 2], gl[:, 1], np.ones(len(gl))]).T).T
    ids = _table_column(
        g,
        blob,
        g.extensions["EXT_structural_metadata"]["propertyTables"][0]["properties"]["id"],
        "UINT32",
    )
    k = ids[0] - 1
    x, y, z0 = X0 + (k // 12) * 40.0 - 8.0, Y0 + (k % 12) * 40.0 - 8.0, 5.0
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

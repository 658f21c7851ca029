"""The glb writer with vertices of no feature (``mesh.NO_FEATURE``, the photo mesh outside
every footprint): EXT_mesh_features' ``nullFeatureId`` on the feature ids, ``featureCount``
counting the real features only; a content with no feature at all has neither extension
nor a feature-id attribute; both validate; a row the table lacks is still refused."""

from __future__ import annotations

import numpy as np
import pygltflib
import pytest

from cimtwin.tiles.threed.glb import SchemaProperty, glb_bytes, schema
from cimtwin.tiles.threed.mesh import NO_FEATURE, FeatureTable, Mesh, Property, TileContent
from cimtwin.tiles.threed.placement import Placement
from tests.threed_check import validate_glb
from tests.threed_fake import box_mesh
from tests.threed_read import accessor

SCHEMA = schema("t", "thing", [SchemaProperty("name", "STRING")])


def _write(tmp_path, features: np.ndarray, ids: list[int], name: str) -> pygltflib.GLTF2:
    box = box_mesh(503000.0, 2501000.0, 5.0, 10.0, 20.0, 0)
    mesh = Mesh(box.positions, box.triangles, features, (200, 200, 200, 255))
    table = FeatureTable(
        "thing", np.array(ids, dtype=np.int64), [Property("name", "STRING", ["b"] * len(ids))]
    )
    placement = Placement()
    frame = placement.frame(503000.0, 2501000.0, 15.0)
    path = tmp_path / f"{name}.glb"
    path.write_bytes(glb_bytes(TileContent(mesh, table), placement, frame, SCHEMA))
    validate_glb(path)
    return pygltflib.GLTF2.load_binary(str(path))


def test_vertices_of_no_feature_carry_the_null_feature_id(tmp_path) -> None:
    n = len(box_mesh(0, 0, 0, 1, 1, 0).positions)
    features = np.full(n, NO_FEATURE)
    features[: n // 2] = 0
    g = _write(tmp_path, features, [42], "half")
    (prim,) = g.meshes[0].primitives
    (fid,) = prim.extensions["EXT_mesh_features"]["featureIds"]
    assert fid == {
        "featureCount": 1,
        "attribute": 0,
        "propertyTable": 0,
        "nullFeatureId": NO_FEATURE,
    }
    got = accessor(g, g.binary_blob(), prim.attributes._FEATURE_ID_0)
    assert got.tolist() == features.astype(np.float32).tolist()  # exact in float32
    (table,) = g.extensions["EXT_structural_metadata"]["propertyTables"]
    assert table["count"] == 1


def test_a_content_of_no_feature_has_no_feature_extensions(tmp_path) -> None:
    n = len(box_mesh(0, 0, 0, 1, 1, 0).positions)
    g = _write(tmp_path, np.full(n, NO_FEATURE), [], "none")
    (prim,) = g.meshes[0].primitives
    assert not prim.extensions and getattr(prim.attributes, "_FEATURE_ID_0", None) is None
    assert "EXT_mesh_features" not in g.extensionsUsed
    assert "EXT_structural_metadata" not in g.extensionsUsed and not g.extensions


def test_a_row_the_table_lacks_is_refused(tmp_path) -> None:
    n = len(box_mesh(0, 0, 0, 1, 1, 0).positions)
    features = np.full(n, NO_FEATURE)
    features[0] = 1  # the table has row 0 only
    with pytest.raises(ValueError, match="feature row the table does not have"):
        _write(tmp_path, features, [42], "bad")

"""The one glb writer with textures: a box with two textured faces groups and one untextured
keeps one primitive per texture over shared vertex attributes, the images' bytes as given,
TEXCOORD_0 as given, and validates; a bad texture reference is refused."""

from __future__ import annotations

import io

import numpy as np
import pygltflib
import pytest
from PIL import Image

from cimtwin.tiles.threed.glb import SchemaProperty, glb_bytes, schema
from cimtwin.tiles.threed.mesh import FeatureTable, Mesh, Property, TileContent
from cimtwin.tiles.threed.placement import Placement
from tests.threed_check import validate_glb
from tests.threed_fake import box_mesh
from tests.threed_read import accessor


def _image(color: tuple[int, int, int], kind: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, kind)
    return out.getvalue()


def _content(textures_per_triangle: np.ndarray, images: list[bytes]) -> TileContent:
    box = box_mesh(503000.0, 2501000.0, 5.0, 10.0, 20.0, 0)
    uvs = np.tile([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], (6, 1))
    mesh = Mesh(box.positions, box.triangles, 0, (255, 255, 255, 255), uvs, textures_per_triangle)
    table = FeatureTable("thing", np.array([7]), [Property("name", "STRING", ["a box"])])
    return TileContent(mesh, table, textures=images, unlit=True)


def test_textured_glb_validates_and_keeps_the_bytes(tmp_path) -> None:
    jpeg, png = _image((200, 30, 30), "JPEG"), _image((30, 30, 200), "PNG")
    per_triangle = np.array([0, 0, 1, 1, -1, -1, 0, 0, 1, 1, 0, 0])
    content = _content(per_triangle, [jpeg, png])
    placement = Placement()
    frame = placement.frame(503000.0, 2501000.0, 15.0)
    s = schema("t", "thing", [SchemaProperty("name", "STRING")])
    path = tmp_path / "box.glb"
    path.write_bytes(glb_bytes(content, placement, frame, s))
    validate_glb(path)

    g = pygltflib.GLTF2.load_binary(str(path))
    blob = g.binary_blob()
    prims = g.meshes[0].primitives
    assert len(prims) == 3  # untextured, texture 0, texture 1
    assert len({p.attributes.POSITION for p in prims}) == 1  # shared vertices
    counts = sorted(len(accessor(g, blob, p.indices)) // 3 for p in prims)
    assert counts == [2, 4, 6]
    stored = []
    for image in g.images:
        view = g.bufferViews[image.bufferView]
        stored.append((image.mimeType, blob[view.byteOffset : view.byteOffset + view.byteLength]))
    assert stored == [("image/jpeg", jpeg), ("image/png", png)]
    uv = accessor_vec2(g, blob, prims[0].attributes.TEXCOORD_0)
    np.testing.assert_allclose(uv[:4], [[0, 0], [1, 0], [1, 1], [0, 1]])
    assert "KHR_materials_unlit" in g.extensionsUsed
    for p in prims:
        assert p.extensions["EXT_mesh_features"]["featureIds"][0]["propertyTable"] == 0


def accessor_vec2(g: pygltflib.GLTF2, blob: bytes, index: int) -> np.ndarray:
    acc = g.accessors[index]
    view = g.bufferViews[acc.bufferView]
    assert acc.type == "VEC2" and acc.componentType == 5126
    return np.frombuffer(blob, "<f4", count=2 * acc.count, offset=view.byteOffset).reshape(-1, 2)


def test_a_texture_the_content_lacks_is_refused() -> None:
    content = _content(np.full(12, 2), [_image((1, 2, 3), "JPEG")])
    placement = Placement()
    frame = placement.frame(503000.0, 2501000.0, 15.0)
    with pytest.raises(ValueError, match="texture the content does not have"):
        glb_bytes(
            content, placement, frame, schema("t", "thing", [SchemaProperty("name", "STRING")])
        )
    with pytest.raises(ValueError, match="need texture coordinates"):
        Mesh(np.zeros((3, 3)), [[0, 1, 2]], 0, (255, 255, 255, 255), None, [0])

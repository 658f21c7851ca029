"""Reading what the 3D writer wrote, independently of it: glb accessors and property tables
through pygltflib's view of the file, and the tileset tree with its composed transforms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pygltflib


def accessor(g: pygltflib.GLTF2, blob: bytes, index: int) -> np.ndarray:
    """An accessor read with pygltflib's view of the file (strides and normalised bytes)."""
    acc = g.accessors[index]
    view = g.bufferViews[acc.bufferView]
    dtype = np.dtype({5120: "i1", 5126: "<f4", 5123: "<u2", 5125: "<u4"}[acc.componentType])
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc.type]
    stride = view.byteStride or dtype.itemsize * width
    start = view.byteOffset + (acc.byteOffset or 0)
    raw = np.frombuffer(blob, np.uint8, count=stride * acc.count, offset=start)
    rows = raw.reshape(acc.count, stride)[:, : dtype.itemsize * width].copy()
    arr = rows.view(dtype).reshape(acc.count, width)
    if acc.componentType == 5120 and acc.normalized:
        arr = np.maximum(arr / 127.0, -1.0)
    return arr if width > 1 else arr.reshape(-1)


def table_column(g: pygltflib.GLTF2, blob: bytes, column: dict, kind: str) -> list:
    view = g.bufferViews[column["values"]]
    raw = blob[view.byteOffset : view.byteOffset + view.byteLength]
    if kind == "STRING":
        ov = g.bufferViews[column["stringOffsets"]]
        offs = np.frombuffer(blob, "<u4", offset=ov.byteOffset, count=ov.byteLength // 4)
        return [raw[offs[i] : offs[i + 1]].decode() for i in range(len(offs) - 1)]
    return np.frombuffer(raw, {"UINT32": "<u4", "FLOAT64": "<f8", "INT32": "<i4"}[kind]).tolist()


def walk_tiles(tile: dict, parent: np.ndarray, out: list) -> None:
    """Every tile with its world matrix (the product of the transforms above it)."""
    world = parent
    if "transform" in tile:
        world = parent @ np.array(tile["transform"]).reshape(4, 4).T
    out.append((tile, world))
    for child in tile.get("children", []):
        walk_tiles(child, world, out)


def feature_vertices_ecef(folder: Path, feature_id: int) -> np.ndarray:
    """Every vertex of one feature in the tileset, through the composed tile transforms and
    glTF's y-up convention, in ECEF."""
    tileset = json.loads((folder / "tileset.json").read_text())
    tiles: list = []
    walk_tiles(tileset["root"], np.eye(4), tiles)
    found = []
    for tile, world in tiles:
        uri = tile.get("content", {}).get("uri")
        if not uri:
            continue
        g = pygltflib.GLTF2.load_binary(str(folder / uri))
        blob = g.binary_blob()
        table = g.extensions["EXT_structural_metadata"]["propertyTables"][0]
        ids = np.array(table_column(g, blob, table["properties"]["id"], "UINT32"))
        for mesh in g.meshes:
            for prim in mesh.primitives:
                pos = accessor(g, blob, prim.attributes.POSITION).astype(np.float64)
                fid_set = prim.extensions["EXT_mesh_features"]["featureIds"][0]
                rows = accessor(g, blob, prim.attributes._FEATURE_ID_0).astype(int)
                assert fid_set["attribute"] == 0
                mine = pos[ids[rows] == feature_id]
                if len(mine) == 0:
                    continue
                node = next(n for n in g.nodes if n.mesh == g.meshes.index(mesh))
                m = np.array(node.matrix).reshape(4, 4).T if node.matrix else np.eye(4)
                local = (m @ np.c_[mine, np.ones(len(mine))].T).T[:, :3]
                enu = np.column_stack([local[:, 0], -local[:, 2], local[:, 1]])  # y-up -> z-up
                found.append((world @ np.c_[enu, np.ones(len(enu))].T).T[:, :3])
    assert found, f"feature {feature_id} is in no tile"
    return np.concatenate(found)

"""The one glb writer: a :class:`TileContent` placed in a tile's ENU frame, with per-feature
ids (EXT_mesh_features) and a property table (EXT_structural_metadata).

The glb container is written here directly (a 12-byte header, a JSON chunk, a BIN chunk)
rather than through pygltflib: pygltflib carries the two extensions only as untyped dicts
anyway, and writing the buffer ourselves keeps control of what the metadata spec insists on
(8-byte aligned property-table buffer views, string offsets, no-data values). pygltflib
reads the result back in the tests, an oracle independent of this writer.

Choices a client sees:

* ``id`` is UINT32: CesiumJS returns INT64 and UINT64 properties as ``BigInt``, which
  ``/collections/{layer}/items/{id}`` URLs and JSON do not take as they are; UINT32 comes back
  as a plain number. Ids outside 0..2^32-1 are refused rather than wrapped.
* properties typed INT64 by a source are written as INT32 for the same reason (counts,
  floors and sizes fit); a value outside INT32 is refused.
* None becomes the property's ``noData`` value (a sentinel outside the data for numbers, the
  empty string for strings); booleans have no ``noData`` in the spec, None is false.
* feature ids are a FLOAT vertex attribute (exact to 2^24 features; glTF allows no 32-bit
  integer attributes, and UNSIGNED_SHORT would need 4-byte strides). A vertex of no feature
  (``mesh.NO_FEATURE``) is EXT_mesh_features' ``nullFeatureId``; a content whose vertices
  all belong to none has neither extension (both want at least one feature).
* normals as normalised bytes (KHR_mesh_quantization, which CesiumJS reads): a third of the
  float size, within half a degree; positions stay float32 (millimetres over a tile).
* colours: the source's sRGB bytes, linearised (glTF's COLOR_0 is linear), as normalised
  UNSIGNED_SHORT RGBA so dark colours keep their steps.
* textures (optional): TEXCOORD_0 from the mesh's uvs, each image's bytes as they came (JPEG
  or PNG, no re-encoding), one material and one primitive per texture sharing the vertex
  attributes, untextured triangles in the plain material (material 0, as without textures).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass

import numpy as np

from cimtwin.tiles.threed.mesh import NO_FEATURE, PropertyType, TileContent
from cimtwin.tiles.threed.placement import Frame, Placement, gltf_axes

#: noData sentinels per written component type (outside any value a source writes)
NO_DATA = {"FLOAT64": -1.0e38, "INT32": -2147483648}
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

_BYTE, _FLOAT, _USHORT, _UINT = 5120, 5126, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


@dataclass(frozen=True)
class SchemaProperty:
    """One property of the tileset's class as written (the source's type mapped)."""

    name: str
    type: PropertyType
    description: str = ""


def schema(schema_id: str, class_name: str, properties: list[SchemaProperty] | tuple) -> dict:
    """The EXT_structural_metadata schema of a tileset: one class, ``id`` plus the source's
    properties. The same dict goes in tileset.json's ``schema`` and in every glb."""
    for name in [schema_id, class_name, *(p.name for p in properties)]:
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a metadata identifier ([a-zA-Z_][a-zA-Z0-9_]*)")
    props: dict[str, dict] = {
        "id": {
            "type": "SCALAR",
            "componentType": "UINT32",
            "required": True,
            "description": "the OGC API Features id of the same object",
        }
    }
    for p in properties:
        if p.name == "id":
            raise ValueError("property 'id' is the OGC id, always written; a source has no 'id'")
        entry: dict = {}
        if p.type == "STRING":
            entry = {"type": "STRING", "noData": ""}
        elif p.type == "BOOLEAN":
            entry = {"type": "BOOLEAN"}
        elif p.type == "FLOAT64":
            entry = {"type": "SCALAR", "componentType": "FLOAT64", "noData": NO_DATA["FLOAT64"]}
        elif p.type == "INT64":
            entry = {"type": "SCALAR", "componentType": "INT32", "noData": NO_DATA["INT32"]}
        else:
            raise ValueError(f"property {p.name}: unknown type {p.type}")
        if p.description:
            entry["description"] = p.description
        props[p.name] = entry
    return {"id": schema_id, "classes": {class_name: {"properties": props}}}


class _Buffer:
    """The BIN chunk being built: buffer views appended at 8-byte boundaries."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.length = 0
        self.views: list[dict] = []

    def add(self, data: bytes, target: int | None = None) -> int:
        pad = (-self.length) % 8
        if pad:
            self.parts.append(b"\0" * pad)
            self.length += pad
        view: dict = {"buffer": 0, "byteOffset": self.length, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.parts.append(data)
        self.length += len(data)
        self.views.append(view)
        return len(self.views) - 1

    def bytes(self) -> bytes:
        data = b"".join(self.parts)
        return data + b"\0" * ((-len(data)) % 8)


def vertex_normals(local: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit normals per vertex from the placed triangles (float64 local
    coordinates): the sum of the faces' cross products, so bigger faces weigh more.
    A vertex no triangle uses gets straight up."""
    normals = np.zeros_like(local)
    if len(triangles):
        a, b, c = (local[triangles[:, i]] for i in range(3))
        face = np.cross(b - a, c - a)  # length = 2 * area
        for i in range(3):
            np.add.at(normals, triangles[:, i], face)
    length = np.linalg.norm(normals, axis=1)
    up = length < 1e-12
    normals[up] = (0.0, 0.0, 1.0)
    length[up] = 1.0
    return normals / length[:, None]


def _quantized_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals as KHR_mesh_quantization's normalised signed bytes (value / 127), one
    padding byte each: 4 bytes a vertex instead of 12, within half a degree."""
    out = np.zeros((len(normals), 4), dtype=np.int8)
    out[:, :3] = np.clip(np.round(normals * 127.0), -127, 127).astype(np.int8)
    return out


def _srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    c = rgb.astype(np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _property_column(buf: _Buffer, spec: dict, name: str, values: list, count: int) -> dict:
    """One property-table column: its buffer views per EXT_structural_metadata."""
    if len(values) != count:
        raise ValueError(f"property {name}: {len(values)} values for {count} features")
    if spec["type"] == "STRING":
        encoded = [b"" if v is None else str(v).encode("utf-8") for v in values]
        offsets = np.zeros(count + 1, dtype=np.uint32)
        offsets[1:] = np.cumsum([len(e) for e in encoded])
        return {
            "values": buf.add(b"".join(encoded)),
            "stringOffsets": buf.add(offsets.tobytes()),
            "stringOffsetType": "UINT32",
        }
    if spec["type"] == "BOOLEAN":
        bits = np.packbits(np.array([bool(v) for v in values], dtype=np.uint8), bitorder="little")
        return {"values": buf.add(bits.tobytes())}
    component = spec["componentType"]
    if component == "UINT32":
        arr = np.asarray(values, dtype=np.int64)
        if count and (arr.min() < 0 or arr.max() > 0xFFFFFFFF):
            raise ValueError(f"{name}: an id outside 0..2^32-1 cannot be written as UINT32")
        return {"values": buf.add(arr.astype("<u4").tobytes())}
    no_data = spec.get("noData")
    if component == "FLOAT64":
        arr = np.array([no_data if v is None else float(v) for v in values], dtype="<f8")
        return {"values": buf.add(arr.tobytes())}
    if component == "INT32":
        ints = np.array([no_data if v is None else int(v) for v in values], dtype=np.int64)
        if count and (ints.min() < -(2**31) or ints.max() > 2**31 - 1):
            raise ValueError(f"property {name}: a value outside INT32")
        if np.any((ints == no_data) & np.array([v is not None for v in values])):
            raise ValueError(f"property {name}: a value equals the noData sentinel")
        return {"values": buf.add(ints.astype("<i4").tobytes())}
    raise ValueError(f"property {name}: unknown component type {component}")


def _mime(image: bytes) -> str:
    """The media type of a texture's bytes (glTF core takes JPEG and PNG)."""
    if image[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if image[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    raise ValueError("a texture is neither JPEG nor PNG")


def glb_bytes(
    content: TileContent, placement: Placement, frame: Frame, tileset_schema: dict
) -> bytes:
    """The glb of one tile's content, vertices relative to ``frame`` (the tile's transform).

    ``tileset_schema`` is :func:`schema`'s dict; its one class must be the content's."""
    mesh, features = content.mesh, content.features
    class_name = features.class_name
    cls = tileset_schema["classes"].get(class_name)
    if cls is None:
        raise ValueError(f"class {class_name} is not in schema {tileset_schema['id']}")
    if mesh.empty:
        raise ValueError("an empty mesh has no glb (a tile without content has no file)")
    used = np.unique(mesh.features)
    has_null = bool(used[-1] == NO_FEATURE)
    used = used[used != NO_FEATURE]
    if len(used) and int(used.max()) >= len(features):
        raise ValueError("a vertex refers to a feature row the table does not have")
    # no feature at all (a photo tile outside every footprint): no ids, no table (the
    # extensions want at least one feature and one row)
    featured = len(used) > 0

    local = frame.to_local(placement.ecef(mesh.positions))
    positions = gltf_axes(local)
    normals = gltf_axes(vertex_normals(local, mesh.triangles))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    rgba = mesh.colors.astype(np.float64)
    linear = np.column_stack([_srgb_to_linear(mesh.colors[:, :3]), rgba[:, 3] / 255.0])
    colors = np.round(linear * 65535.0).astype("<u2")
    feature_ids = mesh.features.astype("<f4")
    if len(features) >= NO_FEATURE:
        raise ValueError("more than 2^24 - 2 features in one tile")
    n = len(positions)
    index_type = _USHORT if n <= 0xFFFF else _UINT
    indices = mesh.triangles.astype("<u2" if index_type == _USHORT else "<u4").reshape(-1)

    buf = _Buffer()
    accessors: list[dict] = []

    def accessor(
        data: np.ndarray,
        ctype: int,
        kind: str,
        target: int,
        stride: int | None = None,
        **extra: object,
    ) -> int:
        view = buf.add(np.ascontiguousarray(data).tobytes(), target)
        if stride:
            buf.views[view]["byteStride"] = stride
        count = len(data) if kind == "SCALAR" else data.shape[0]
        accessors.append(
            {"bufferView": view, "componentType": ctype, "count": count, "type": kind, **extra}
        )
        return len(accessors) - 1

    attributes = {
        "POSITION": accessor(
            positions.astype("<f4"),
            _FLOAT,
            "VEC3",
            _ARRAY_BUFFER,
            min=[float(v) for v in positions.min(axis=0)],
            max=[float(v) for v in positions.max(axis=0)],
        ),
        # KHR_mesh_quantization: normalised bytes, padded to the 4-byte vertex stride
        "NORMAL": accessor(
            _quantized_normals(normals), _BYTE, "VEC3", _ARRAY_BUFFER, 4, normalized=True
        ),
        "COLOR_0": accessor(colors, _USHORT, "VEC4", _ARRAY_BUFFER, normalized=True),
    }
    if featured:
        attributes["_FEATURE_ID_0"] = accessor(feature_ids, _FLOAT, "SCALAR", _ARRAY_BUFFER)
    if mesh.uvs is not None:
        attributes["TEXCOORD_0"] = accessor(mesh.uvs.astype("<f4"), _FLOAT, "VEC2", _ARRAY_BUFFER)
    # one primitive per texture (all sharing the vertex attributes): glTF has one material
    # per primitive; without textures the one primitive of every other source
    groups: list[tuple[int, np.ndarray]] = [(-1, indices)]
    if mesh.textures is not None:
        if len(mesh.textures) and int(mesh.textures.max()) >= len(content.textures):
            raise ValueError("a triangle refers to a texture the content does not have")
        tri_indices = indices.reshape(-1, 3)
        groups = [
            (int(t), tri_indices[mesh.textures == t].reshape(-1)) for t in np.unique(mesh.textures)
        ]
    index_accessors = [
        accessor(part, index_type, "SCALAR", _ELEMENT_ARRAY_BUFFER) for _, part in groups
    ]

    table_props: dict[str, dict] = {}
    if featured:
        table_props["id"] = _property_column(
            buf, cls["properties"]["id"], "id", features.ids.tolist(), len(features)
        )
    given = {p.name: p for p in features.properties}
    for name, spec in cls["properties"].items():
        if name == "id" or not featured:
            continue
        values = given[name].values if name in given else [None] * len(features)
        if spec["type"] == "STRING" and not any(v not in (None, "") for v in values):
            # every row is noData: no column (a buffer view of 0 bytes is not valid glTF, and
            # the metadata spec wants exactly the strings' length); a reader gets noData
            continue
        table_props[name] = _property_column(buf, spec, name, values, len(features))
    unknown = set(given) - set(cls["properties"])
    if unknown:
        raise ValueError(f"properties {sorted(unknown)} are not in class {class_name}")

    translucent = bool(np.any(mesh.colors[:, 3] < 255))
    material: dict = {
        "pbrMetallicRoughness": {
            "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
            "metallicFactor": 0.0,
            "roughnessFactor": 1.0,
        },
        "doubleSided": False,
    }
    if translucent:
        material["alphaMode"] = "BLEND"
    # the untextured material only when a triangle uses it (always without textures)
    used_groups = {t for t, _ in groups}
    materials = [material] if -1 in used_groups else []
    images: list[dict] = []
    material_of: dict[int, int] = {-1: 0} if -1 in used_groups else {}
    for t in sorted({t for t, _ in groups if t >= 0}):
        images.append(
            {"bufferView": buf.add(content.textures[t]), "mimeType": _mime(content.textures[t])}
        )
        textured = json.loads(json.dumps(material))
        textured["pbrMetallicRoughness"]["baseColorTexture"] = {"index": len(images) - 1}
        if content.unlit:
            textured["extensions"] = {"KHR_materials_unlit": {}}
        material_of[t] = len(materials)
        materials.append(textured)
    feature_id: dict = {"featureCount": int(len(used)), "attribute": 0, "propertyTable": 0}
    if has_null:
        feature_id["nullFeatureId"] = NO_FEATURE
    feature_ext = {"EXT_mesh_features": {"featureIds": [feature_id]}} if featured else None
    primitives = [
        {
            "attributes": attributes,
            "indices": acc,
            "material": material_of[t],
            "mode": 4,
            **({"extensions": feature_ext} if feature_ext else {}),
        }
        for (t, _), acc in zip(groups, index_accessors, strict=True)
    ]
    extensions_used = (["EXT_mesh_features", "EXT_structural_metadata"] if featured else []) + [
        "KHR_mesh_quantization"
    ]
    if images and content.unlit:
        extensions_used.append("KHR_materials_unlit")
    gltf: dict = {
        "asset": {"version": "2.0", "generator": "cimtwin"},
        "extensionsUsed": extensions_used,
        "extensionsRequired": ["KHR_mesh_quantization"],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": primitives}],
        "materials": materials,
        "accessors": accessors,
        "bufferViews": buf.views,
    }
    if featured:
        gltf["extensions"] = {
            "EXT_structural_metadata": {
                "schema": tileset_schema,
                "propertyTables": [
                    {"class": class_name, "count": len(features), "properties": table_props}
                ],
            }
        }
    if images:
        gltf["images"] = images
        gltf["samplers"] = [
            # photo atlases: linear, mipmapped, clamped (their charts end at the edges)
            {"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}
        ]
        gltf["textures"] = [{"sampler": 0, "source": i} for i in range(len(images))]
    binary = buf.bytes()
    gltf["buffers"] = [{"byteLength": len(binary)}]
    text = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join(
        [
            struct.pack("<4sII", b"glTF", 2, total),
            struct.pack("<I4s", len(text), b"JSON"),
            text,
            struct.pack("<I4s", len(binary), b"BIN\0"),
            binary,
        ]
    )

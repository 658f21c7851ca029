"""What every 3D source hands to the one tileset writer: triangles in the storage CRS with a
feature per vertex, and the features' property table.

Sources (terrain, buildings, underground, pipelines, components, later BIM and oblique) build
:class:`Mesh` objects in storage coordinates (easting, northing, 1985 height, float64) and
never place anything on the globe themselves: :mod:`.placement` does that once, for all.
Normals are not a source's business either: the writer computes them after placement from the
triangles, so a source that wants sharp edges (box walls, roofs) gives each face its own
vertices, and a smooth surface (a tube, the terrain) shares them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

#: property types the writer knows (EXT_structural_metadata class property types)
PropertyType = Literal["STRING", "FLOAT64", "INT64", "BOOLEAN"]
#: a vertex's feature when it belongs to none (EXT_mesh_features' ``nullFeatureId``): the
#: largest id a float32 attribute holds exactly, never a table row (tiles stay far below)
NO_FEATURE = (1 << 24) - 1


@dataclass
class Mesh:
    """Triangles with a feature (a row of the tile's :class:`FeatureTable`) per vertex.

    ``positions``: (n, 3) float64 easting, northing, 1985 height in the storage CRS;
    ``triangles``: (m, 3) vertex indices, counter-clockwise seen from outside;
    ``features``: (n,) row of each vertex in the tile's feature table, or :data:`NO_FEATURE`;
    ``colors``: (n, 4) uint8 RGBA (linear colour is the writer's business);
    ``uvs``: optional (n, 2) texture coordinates in glTF's convention (origin at the image's
    top-left corner, v downwards);
    ``textures``: optional (m,) per triangle, the index of its texture in the content's
    :attr:`TileContent.textures`, -1 for an untextured triangle (drawn in its vertex colours;
    a textured one is the texture times its vertex colours, so give those white).
    """

    positions: np.ndarray
    triangles: np.ndarray
    features: np.ndarray
    colors: np.ndarray
    uvs: np.ndarray | None = None
    textures: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.triangles = np.asarray(self.triangles, dtype=np.uint32).reshape(-1, 3)
        n = len(self.positions)
        self.features = np.broadcast_to(np.asarray(self.features, dtype=np.uint32), (n,)).copy()
        self.colors = np.broadcast_to(np.asarray(self.colors, dtype=np.uint8), (n, 4)).copy()
        if len(self.triangles) and int(self.triangles.max()) >= n:
            raise ValueError("a triangle refers to a vertex the mesh does not have")
        if self.uvs is not None:
            self.uvs = np.asarray(self.uvs, dtype=np.float64).reshape(-1, 2)
            if len(self.uvs) != n:
                raise ValueError(f"{len(self.uvs)} texture coordinates for {n} vertices")
        if self.textures is not None:
            self.textures = np.broadcast_to(
                np.asarray(self.textures, dtype=np.int32), (len(self.triangles),)
            ).copy()
            if self.uvs is None and bool(np.any(self.textures >= 0)):
                raise ValueError("textured triangles need texture coordinates (uvs)")

    @property
    def empty(self) -> bool:
        return len(self.triangles) == 0

    @staticmethod
    def concat(meshes: Sequence[Mesh]) -> Mesh:
        """One mesh of several (indices shifted), e.g. every building of a tile."""
        meshes = [m for m in meshes if not m.empty]
        if not meshes:
            return Mesh(np.empty((0, 3)), np.empty((0, 3)), np.empty(0), np.empty((0, 4)))
        offsets = np.cumsum([0] + [len(m.positions) for m in meshes[:-1]])
        textured = any(m.textures is not None for m in meshes)
        # texture indices are kept as they are: they must already refer to one list
        return Mesh(
            np.concatenate([m.positions for m in meshes]),
            np.concatenate([m.triangles + o for m, o in zip(meshes, offsets, strict=True)]),
            np.concatenate([m.features for m in meshes]),
            np.concatenate([m.colors for m in meshes]),
            np.concatenate(
                [np.zeros((len(m.positions), 2)) if m.uvs is None else m.uvs for m in meshes]
            )
            if textured
            else None,
            np.concatenate(
                [
                    np.full(len(m.triangles), -1) if m.textures is None else m.textures
                    for m in meshes
                ]
            )
            if textured
            else None,
        )


@dataclass
class Property:
    """One column of a feature table, with its description for the tileset's schema."""

    name: str
    type: PropertyType
    values: list
    description: str = ""


@dataclass
class FeatureTable:
    """The features of one tile: row i is feature i of the mesh. ``ids`` are the OGC API
    Features ids of the same objects (``/collections/{layer}/items/{id}``), written as the
    ``id`` property of every row."""

    class_name: str
    ids: np.ndarray
    properties: list[Property] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64)
        for p in self.properties:
            if len(p.values) != len(self.ids):
                raise ValueError(
                    f"property {p.name}: {len(p.values)} values for {len(self.ids)} features"
                )

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class TileContent:
    """What a source gives for one tile: its mesh, its features, and the largest distance
    (m) between this content and the full-detail geometry it stands for (0 at full detail):
    the tile's geometric error is measured, not guessed."""

    mesh: Mesh
    features: FeatureTable
    error_m: float = 0.0
    #: base-colour images (JPEG or PNG bytes, written as they are) the mesh's triangles
    #: refer to by index (:attr:`Mesh.textures`)
    textures: list[bytes] = field(default_factory=list)
    #: textured materials without lighting (KHR_materials_unlit): photo textures have the
    #: sun's shading in them already
    unlit: bool = False

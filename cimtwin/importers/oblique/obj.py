"""Reading one level file of a ContextCapture OBJ production (OBJ + MTL + JPEG textures) into
the same :class:`LodNode` structures as :mod:`.osgb`, so placement, 单体化 and the pyramid
writer are shared.

OBJ keeps no PagedLOD ranges, so two things are rebuilt:

* **The tree, from the file names.** ContextCapture names a level file
  ``Tile_X_L<n>_<suffix>``, one suffix character per level (``L15_0u`` -> ``L16_0uu``,
  ``L18_0uuuu`` -> ``L19_0uuuu0..3``); the OSGB sample's PagedLOD child references follow the
  same rule. A file's children are the files of the next level whose suffix extends its own;
  the root (``Tile_X.obj``) has the lowest level present. A group (``g``) with faces is one
  node, as each PagedLOD of the OSGB is; when a file has as many nodes as child files
  (the sample's L18: 4 nodes, L19_0uuuu0..3) node k gets child k, otherwise the nodes are
  merged into one node owning every child (a file without children keeps its nodes as leaves).
* **The switch, from the mesh.** The sample's OSGB thresholds are a regular pyramid: the
  root switches at T0 = r_root / 2 pixels (its bounding-sphere radius in metres over two) and
  each level doubles it. So a node at depth d (0 for the root, the suffix length - 1 below)
  gets T = r_root / 2 · 2^d in PIXEL_SIZE_ON_SCREEN mode and :func:`.pyramid.geometric_error`
  applies the OSGB rule 2·S·r/T unchanged: the root's error is 4·S = 64 and halves per
  level for nodes of the root's size, as in the OSGB production.

The JPEG bytes are the files the MTL's ``map_Kd`` names, as delivered.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cimtwin.importers.oblique.osgb import Geometry, LodNode, OsgbError, OsgbFile, _sphere

LEVEL = re.compile(r"^(?P<tile>.+?)_L(?P<level>\d+)_(?P<suffix>\w+)$")


def depth(path: Path) -> int:
    """0 for a tile folder's root file, else the suffix length - 1 (one character a level)."""
    m = LEVEL.match(path.stem)
    return 0 if m is None else len(m["suffix"]) - 1


def child_files(path: Path) -> list[str]:
    """The next level's files under ``path``, by the ContextCapture naming rule."""
    m = LEVEL.match(path.stem)
    levels: dict[int, list[tuple[str, str]]] = {}
    for other in path.parent.glob("*.obj"):
        o = LEVEL.match(other.stem)
        if o is None:
            continue
        if m is None and o["tile"] != path.stem:
            continue
        if m is not None and (o["tile"] != m["tile"] or not o["suffix"].startswith(m["suffix"])):
            continue
        levels.setdefault(int(o["level"]), []).append((o["suffix"], other.name))
    wanted = (min(levels) if levels else None) if m is None else int(m["level"]) + 1
    return [name for _, name in sorted(levels.get(wanted, []))] if wanted is not None else []


def _materials(mtl: Path, where: Path) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    current = None
    for line in mtl.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        if parts[0] == "newmtl" and len(parts) == 2:
            current = parts[1].strip()
            out[current] = None
        elif parts[0] == "map_Kd" and len(parts) == 2 and current is not None:
            out[current] = parts[1].strip().split()[-1]
    return out


class _Parts:
    """The faces of one node, per material."""

    def __init__(self) -> None:
        self.faces: dict[str | None, list[tuple[int, int]]] = {}


def read_obj(path: Path, root_radius: float | None = None) -> OsgbFile:
    """One OBJ level file as nodes (see the module's doc); ``root_radius`` is the tile
    folder's root sphere radius (None: this file is the root)."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OsgbError(f"{where}: cannot read this OBJ file ({exc})") from exc
    vs: list[list[float]] = []
    vts: list[list[float]] = []
    materials: dict[str, str | None] = {}
    nodes: list[_Parts] = [_Parts()]
    material: str | None = None
    try:
        for line in text.splitlines():
            if not line or line[0] == "#":
                continue
            parts = line.split()
            if not parts:
                continue
            key = parts[0]
            if key == "v":
                vs.append([float(parts[1]), float(parts[2]), float(parts[3])])
            elif key == "vt":
                vts.append([float(parts[1]), float(parts[2])])
            elif key == "f":
                corners = []
                for token in parts[1:]:
                    fields = token.split("/")
                    vi = int(fields[0])
                    ti = int(fields[1]) if len(fields) > 1 and fields[1] else 0
                    vi = vi - 1 if vi > 0 else len(vs) + vi
                    ti = ti - 1 if ti > 0 else (len(vts) + ti if ti < 0 else -1)
                    corners.append((vi, ti))
                faces = nodes[-1].faces.setdefault(material, [])
                for k in range(1, len(corners) - 1):  # a polygon as a fan
                    faces += [corners[0], corners[k], corners[k + 1]]
            elif key == "g":
                if any(nodes[-1].faces.values()):
                    nodes.append(_Parts())
            elif key == "usemtl":
                material = line.split(maxsplit=1)[1].strip() if len(parts) > 1 else None
            elif key == "mtllib" and len(parts) > 1:
                mtl = path.parent / line.split(maxsplit=1)[1].strip()
                if not mtl.is_file():
                    raise OsgbError(f"{where}: material library {mtl.name} is missing")
                materials.update(_materials(mtl, path))
    except (ValueError, IndexError) as exc:
        raise OsgbError(f"{where}: not a readable OBJ file (truncated?): {exc}") from exc
    positions = np.array(vs, dtype=np.float64).reshape(-1, 3)
    uvs = np.array(vts, dtype=np.float64).reshape(-1, 2)
    textures: dict[str, bytes] = {}
    lods: list[list[Geometry]] = []
    for node in nodes:
        geometries = []
        for mat, corners in node.faces.items():
            if not corners:
                continue
            pairs = np.array(corners, dtype=np.int64)
            if pairs[:, 0].min() < 0 or pairs[:, 0].max() >= len(positions):
                raise OsgbError(f"{where}: a face refers to a vertex it does not have")
            if pairs[:, 1].max() >= len(uvs):
                raise OsgbError(f"{where}: a face refers to a texture coordinate it lacks")
            # one glTF vertex per distinct (position, texture coordinate) pair
            unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
            tris = inverse.reshape(-1, 3)
            tris = tris[
                (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])
            ]
            image = materials.get(mat) if mat else None
            has_uv = bool((unique[:, 1] >= 0).all())
            if image and has_uv and image not in textures:
                file = path.parent / image
                if not file.is_file():
                    raise OsgbError(f"{where}: texture {image} is missing")
                textures[image] = file.read_bytes()
            g_uvs = uvs[unique[:, 1]] if has_uv else None
            texture = image if image and has_uv else None
            geometries.append(Geometry(positions[unique[:, 0]], tris, g_uvs, texture))
        if geometries:
            lods.append(geometries)
    if not lods:
        raise OsgbError(f"{where}: the OBJ file holds no faces")
    children = child_files(path)
    if children and len(lods) != len(children) and len(lods) > 1:
        lods = [[g for geoms in lods for g in geoms]]
    own: list[LodNode] = []
    d = depth(path)
    for i, geoms in enumerate(lods):
        center, radius = _sphere(geoms)
        r_root = radius if root_radius is None else root_radius
        mine = children if len(lods) == 1 else (children[i : i + 1] if children else [])
        threshold = r_root / 2 * 2**d if mine else None
        own.append(LodNode(path, i, center, radius, "PIXEL_SIZE_ON_SCREEN", threshold, mine, geoms))
    return OsgbFile(path, own, textures)

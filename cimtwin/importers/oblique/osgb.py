"""Reading one ContextCapture OSGB file: Debian's OpenSceneGraph ``osgconv`` writes it as
``.osgt`` (the text form of the same serializers), which is parsed here for what a tileset
needs: PagedLOD nodes (centre, radius, range mode, ranges, child file names), their geometry
(vertices, texture coordinates, triangles) and textures.

Why osgconv and not a C++ reader of our own: it is OpenSceneGraph's own reader (every OSGB
version and compressor it knows), it is one Debian package, and it is fast enough: the
sample's 9 files (10.5 MB) convert in about 2.3 s (0.07-0.64 s a file, 17-32 MB RSS), less
than the Python parsing and placement that follow. Options:

* ``OSG_OPTIMIZER=OFF`` keeps the scene as it is (no merged or re-ordered geometry);
* ``precision 9``: the text form's default of 6 significant digits would round a vertex
  1211.76306 m from the tile origin to 1211.76 (5 mm); 9 digits keep every float32 bit;
* ``WriteImageHint=WriteOut`` writes the images as files (into the working directory) rather
  than as inline hex. osgconv re-encodes them (the sample's 335 KB JPEGs come out at 717 KB),
  so the original JPEG bytes are taken from the OSGB itself where it stores them as an inline
  file (OSG's IMAGE_INLINE_FILE: the file name, write hint, decision 1, size, bytes); the
  re-encoded file is the fallback (a compressed OSGB, an inline raw image).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cimtwin.errors import OsgbError

OSGCONV_OPTIONS = "WriteImageHint=WriteOut precision 9"
#: seconds one file may take to convert (the largest sample file takes 0.6 s)
OSGCONV_TIMEOUT_S = 120
#: OSG's default range for the last child of a PagedLOD: "always"
FAR = 1e29


@dataclass
class Geometry:
    """One osg::Geometry: local coordinates (the production's, before SRSOrigin)."""

    positions: np.ndarray  # (n, 3) float64
    triangles: np.ndarray  # (m, 3)
    uvs: np.ndarray | None  # (n, 2), OpenGL convention (origin bottom-left)
    texture: str | None  # key into OsgbFile.textures
    color: tuple[int, int, int, int] = (255, 255, 255, 255)  # the material's diffuse


@dataclass
class LodNode:
    """One osg::PagedLOD (or the loose geometry of a file, as a node without children)."""

    file: Path
    index: int  # its place among the file's nodes
    center: np.ndarray
    radius: float
    range_mode: str  # PIXEL_SIZE_ON_SCREEN or DISTANCE_FROM_EYE_POINT
    #: the range at which OSG switches from this node's own geometry to its child files
    threshold: float | None
    children: list[str]  # file names, relative to the node's file's folder
    geometries: list[Geometry] = field(default_factory=list)


@dataclass
class OsgbFile:
    path: Path
    nodes: list[LodNode]
    textures: dict[str, bytes]
    seconds_osgconv: float = 0.0


# --- the osgt text as a tree ------------------------------------------------------------------


@dataclass
class Block:
    head: list[str]
    items: list = field(default_factory=list)  # token lists, Blocks, or np.ndarray (vector)

    def prop(self, key: str) -> list[str] | None:
        for item in self.items:
            if isinstance(item, list) and item and item[0] == key:
                return item
        return None

    def sub(self, key: str) -> Block | None:
        for item in self.items:
            if isinstance(item, Block) and item.head and item.head[0] == key:
                return item
        return None

    def objects(self) -> list[Block]:
        """The object blocks (``osg::Something {``) directly inside."""
        return [b for b in self.items if isinstance(b, Block) and "::" in (b.head or [""])[0]]

    def vector(self) -> np.ndarray | None:
        """The numbers of the ``vector N { ... }`` block inside."""
        block = self.sub("vector")
        for item in block.items if block else []:
            if isinstance(item, np.ndarray):
                return item
        return None


def _tokens(line: str) -> list[str]:
    return shlex.split(line) if '"' in line else line.split()


def parse_osgt(text: str, where: str) -> Block:
    """The osgt text as nested blocks; ``vector N { ... }`` blocks become flat float arrays."""
    lines = text.splitlines()
    root = Block([])
    stack = [root]
    i, n = 0, len(lines)
    try:
        while i < n:
            line = lines[i].strip()
            i += 1
            if not line or line.startswith("#"):
                continue
            if line == "}":
                stack.pop()
                if not stack:
                    raise OsgbError(f"{where}: unbalanced braces in osgconv's output")
                continue
            if line.endswith("{"):
                head = _tokens(line[:-1])
                block = Block(head)
                stack[-1].items.append(block)
                if head and head[0] == "vector":
                    j = i
                    while j < n and lines[j].strip() != "}":
                        j += 1
                    block.items.append(np.fromstring(" ".join(lines[i:j]), sep=" "))
                    i = j + 1
                    continue
                stack.append(block)
                continue
            stack[-1].items.append(_tokens(line))
    except ValueError as exc:
        raise OsgbError(f"{where}: osgconv's output could not be parsed ({exc})") from exc
    if len(stack) != 1:
        raise OsgbError(f"{where}: osgconv's output ends inside a block (a truncated file?)")
    return root


class _Scene:
    """Walks the parsed scene, resolving objects written once and referred to by UniqueID."""

    def __init__(self, root: Block, path: Path) -> None:
        self.path = path
        self.by_id: dict[str, Block] = {}
        self._index(root)
        self.nodes: list[LodNode] = []
        self.loose: list[Geometry] = []

    def _index(self, block: Block) -> None:
        for item in block.items:
            if isinstance(item, Block):
                uid = item.prop("UniqueID")
                if uid and len(item.items) > 1 and uid[1] not in self.by_id:
                    self.by_id[uid[1]] = item
                self._index(item)

    def resolve(self, block: Block) -> Block:
        uid = block.prop("UniqueID")
        if uid and len(block.items) == 1:
            return self.by_id.get(uid[1], block)
        return block

    def visit(self, block: Block, out: list[Geometry], matrix: np.ndarray | None) -> None:
        block = self.resolve(block)
        kind = block.head[0] if block.head else ""
        if kind == "osg::PagedLOD":
            self.nodes.append(self._paged_lod(block, matrix))
            return
        if kind == "osg::Geometry":
            geometry = self._geometry(block, matrix)
            if geometry is not None:
                out.append(geometry)
            return
        if kind == "osg::MatrixTransform":
            m = block.sub("Matrix")
            if m is not None:
                rows = [list(map(float, r)) for r in m.items if isinstance(r, list)]
                own = np.array(rows, dtype=np.float64).reshape(4, 4)
                matrix = own if matrix is None else own @ matrix
        for key in ("Children", "Drawables"):
            holder = block.sub(key)
            if holder is not None:
                for child in holder.objects():
                    self.visit(child, out, matrix)

    def _paged_lod(self, block: Block, matrix: np.ndarray | None) -> LodNode:
        where = f"{self.path}: PagedLOD"
        ranges_block, names_block = block.sub("RangeList"), block.sub("RangeDataList")
        ranges = [
            (float(r[0]), float(r[1]))
            for r in (ranges_block.items if ranges_block else [])
            if isinstance(r, list) and len(r) == 2
        ]
        names = [
            r[0] if r else ""
            for r in (names_block.items if names_block else [])
            if isinstance(r, list)
        ]
        mode_line = block.prop("RangeMode")
        mode = mode_line[1] if mode_line else "DISTANCE_FROM_EYE_POINT"
        geometries: list[Geometry] = []
        holder = block.sub("Children")
        for child in holder.objects() if holder else []:
            self.visit(child, geometries, matrix)
        children = [name for name in names if name]
        # the switch: where the ranges of the file children begin (pixel size) or end
        # (distance); the node's own geometry covers the rest
        threshold = None
        child_ranges = [ranges[i] for i, name in enumerate(names) if name and i < len(ranges)]
        if children and len(child_ranges) != len(children):
            raise OsgbError(f"{where}: {len(names)} children but {len(ranges)} ranges")
        if child_ranges:
            if mode == "PIXEL_SIZE_ON_SCREEN":
                threshold = min(lo for lo, _ in child_ranges)
            else:
                threshold = max(hi for _, hi in child_ranges)
        center_line = block.prop("UserCenter")
        if center_line:
            center = np.array(list(map(float, center_line[1:4])))
            radius = float(center_line[4])
            if matrix is not None:
                center = (np.append(center, 1.0) @ matrix)[:3]
        else:
            center, radius = _sphere(geometries)
        return LodNode(
            self.path, len(self.nodes), center, radius, mode, threshold, children, geometries
        )

    def _array(self, holder: Block | None, width: int) -> np.ndarray | None:
        if holder is None:
            return None
        objects = holder.objects()
        if not objects:
            return None
        values = self.resolve(objects[0]).vector()
        if values is None:
            return None
        return values.reshape(-1, width)

    def _geometry(self, block: Block, matrix: np.ndarray | None) -> Geometry | None:
        where = f"{self.path}: Geometry"
        positions = self._array(block.sub("VertexArray"), 3)
        if positions is None or len(positions) == 0:
            return None
        if matrix is not None:
            positions = (np.c_[positions, np.ones(len(positions))] @ matrix)[:, :3]
        tex_list = block.sub("TexCoordArrayList")
        uvs = None
        if tex_list is not None and tex_list.objects():
            uvs = self._array(Block(["_"], [tex_list.objects()[0]]), 2)
            if uvs is not None and len(uvs) != len(positions):
                raise OsgbError(
                    f"{where}: {len(uvs)} texture coordinates for {len(positions)} vertices"
                )
        triangles = []
        prims = block.sub("PrimitiveSetList")
        for prim in prims.objects() if prims else []:
            prim = self.resolve(prim)
            triangles.append(_triangles(prim, len(positions), where))
        tris = np.concatenate(triangles) if triangles else np.empty((0, 3), dtype=np.int64)
        if len(tris) and (tris.min() < 0 or tris.max() >= len(positions)):
            raise OsgbError(f"{where}: an index refers to a vertex it does not have")
        # triangles repeating a vertex draw nothing (ContextCapture leaves a few)
        tris = tris[
            (tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])
        ]
        texture, color = self._state(block)
        return Geometry(positions, tris, uvs, texture if uvs is not None else None, color)

    def _state(self, block: Block) -> tuple[str | None, tuple[int, int, int, int]]:
        holder = block.sub("StateSet")
        color = (255, 255, 255, 255)
        if holder is None or not holder.objects():
            return None, color
        state = self.resolve(holder.objects()[0])
        texture = None
        attrs = state.sub("AttributeList")
        for obj in attrs.objects() if attrs else []:
            obj = self.resolve(obj)
            diffuse = obj.prop("Diffuse") if obj.head[0] == "osg::Material" else None
            if diffuse and len(diffuse) >= 7:
                rgba = [float(v) for v in diffuse[3:7]]
                color = tuple(int(round(min(max(v, 0.0), 1.0) * 255)) for v in rgba)  # type: ignore[assignment]
        tex_attrs = state.sub("TextureAttributeList")
        data = tex_attrs.sub("Data") if tex_attrs else None
        for obj in data.objects() if data else []:
            obj = self.resolve(obj)
            image = obj.sub("Image")
            if image is not None:
                image = self.resolve(image)
                name = image.prop("FileName")
                if name and len(name) > 1:
                    texture = name[1]
        return texture, color


def _triangles(prim: Block, n: int, where: str) -> np.ndarray:
    mode_line = prim.prop("Mode")
    mode = (mode_line[1] if mode_line else "TRIANGLES").removeprefix("GL_")
    kind = prim.head[0]
    if kind.startswith("osg::DrawElements"):
        values = prim.vector()
        idx = np.empty(0, dtype=np.int64) if values is None else values.astype(np.int64)
    elif kind == "osg::DrawArrays":
        first = int((prim.prop("First") or ["", "0"])[1])
        count = int((prim.prop("Count") or ["", "0"])[1])
        idx = np.arange(first, first + count, dtype=np.int64)
    else:
        raise OsgbError(f"{where}: primitive set {kind} is not supported")
    if mode == "TRIANGLES":
        return idx[: len(idx) // 3 * 3].reshape(-1, 3)
    if mode == "TRIANGLE_STRIP":
        if len(idx) < 3:
            return np.empty((0, 3), dtype=np.int64)
        a, b, c = idx[:-2], idx[1:-1], idx[2:]
        odd = np.arange(len(a)) % 2 == 1
        tris = np.column_stack([a, b, c])
        tris[odd] = np.column_stack([b[odd], a[odd], c[odd]])
        return tris
    if mode == "TRIANGLE_FAN":
        if len(idx) < 3:
            return np.empty((0, 3), dtype=np.int64)
        return np.column_stack([np.full(len(idx) - 2, idx[0]), idx[1:-1], idx[2:]])
    if mode == "QUADS":
        q = idx[: len(idx) // 4 * 4].reshape(-1, 4)
        return np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
    if mode in ("POINTS", "LINES", "LINE_STRIP", "LINE_LOOP"):
        return np.empty((0, 3), dtype=np.int64)
    raise OsgbError(f"{where}: primitive mode {mode} is not supported")


def _sphere(geometries: list[Geometry]) -> tuple[np.ndarray, float]:
    if not geometries:
        return np.zeros(3), 0.0
    p = np.concatenate([g.positions for g in geometries])
    center = (p.min(axis=0) + p.max(axis=0)) / 2
    return center, float(np.linalg.norm(p - center, axis=1).max())


# --- the original image bytes ----------------------------------------------------------------


def inline_images(osgb: bytes, names: set[str]) -> dict[str, bytes]:
    """The images an OSGB stores as inline files, by file name, as the original bytes."""
    found: dict[str, bytes] = {}
    for name in names:
        key = name.encode("utf-8")
        pattern = re.escape(struct.pack("<I", len(key)) + key) + rb"(.{4})\x01\x00\x00\x00(.{4})"
        m = re.search(pattern, osgb, re.DOTALL)
        if not m:
            continue
        size = struct.unpack("<I", m.group(2))[0]
        start = m.end()
        data = osgb[start : start + size]
        if len(data) == size and (data[:3] == b"\xff\xd8\xff" or data[:4] == b"\x89PNG"):
            found[name] = data
    return found


def osgconv() -> str:
    path = shutil.which("osgconv")
    if path is None:
        raise OsgbError(
            "osgconv (OpenSceneGraph) is not installed; run scripts/setup.sh as root, or "
            "apt-get install -y openscenegraph"
        )
    return path


def read_osgb(path: Path) -> OsgbFile:
    """One OSGB file's PagedLOD nodes and textures; a file OSG cannot read is an
    :class:`OsgbError` naming it."""
    import time

    tool = osgconv()
    with tempfile.TemporaryDirectory(prefix="cimtwin-osgb-") as tmp:
        out = Path(tmp) / "scene.osgt"
        env = {**os.environ, "OSG_OPTIMIZER": "OFF", "OSG_NOTIFY_LEVEL": "WARN"}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [tool, "-O", OSGCONV_OPTIONS, str(path.resolve()), str(out)],
                cwd=tmp,  # osgconv writes the images into the working directory
                env=env,
                capture_output=True,
                text=True,
                timeout=OSGCONV_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise OsgbError(f"{path}: osgconv took over {OSGCONV_TIMEOUT_S} s") from exc
        seconds = time.perf_counter() - t0
        if proc.returncode != 0 or not out.is_file():
            why = " ".join((proc.stderr or proc.stdout).split())[-300:]
            raise OsgbError(
                f"{path}: OpenSceneGraph cannot read this OSGB file (corrupt or truncated?): "
                f"{why or 'osgconv wrote nothing'}"
            )
        root = parse_osgt(out.read_text(encoding="utf-8", errors="replace"), str(path))
        scene = _Scene(root, path)
        for obj in root.objects():
            scene.visit(obj, scene.loose, None)
        if not scene.nodes and not scene.loose:
            raise OsgbError(f"{path}: the file holds no PagedLOD and no geometry")
        if scene.loose:  # geometry outside any PagedLOD: a node of its own, a leaf
            center, radius = _sphere(scene.loose)
            scene.nodes.append(
                LodNode(path, len(scene.nodes), center, radius, "", None, [], scene.loose)
            )
        names = {g.texture for n in scene.nodes for g in n.geometries if g.texture}
        textures = inline_images(path.read_bytes(), names)
        for name in names - set(textures):
            written = Path(tmp) / name
            if not written.is_file():
                raise OsgbError(f"{path}: texture {name} was neither inline nor written out")
            textures[name] = written.read_bytes()
    return OsgbFile(path, scene.nodes, textures, seconds)

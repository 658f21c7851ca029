"""A production's PagedLOD pyramid as a 3D Tiles 1.1 tileset, level for level.

Each PagedLOD node is a tile holding its own mesh, its child files' nodes its children
(REPLACE: OSG draws either the node or its children, never both). A tile's geometric error
comes from the production's own switch: OSG shows the children once the node's bounding
sphere covers T pixels on screen (RangeMode PIXEL_SIZE_ON_SCREEN); CesiumJS refines once the
tile's screen-space error, geometricError x (pixels per metre at the tile), passes its maximum
S = 16. At the switch a metre covers T / (2r) pixels, so geometricError = 2·S·r/T and CesiumJS
switches where OSG does. For DISTANCE_FROM_EYE_POINT ranges (distance d) the same is taken
at CesiumJS' default 60° field of view on a 1080-pixel-high view. A leaf (no child file, or
none present: the sample's L20 references) has error 0.

Files are read and written one at a time, depth first: memory holds one file's meshes and
the chain of parents above it, not the production. Tile folders are independent pyramids:
with ``workers`` > 1 a process pool converts them in parallel (each worker one folder at a
time, so memory is bounded per worker); each returns its records and its subtree's JSON node
and the parent assembles them in folder order, so the files are the same for any number of
workers (a folder's glbs are named by folder index and local tile number).

More than :data:`GROUP_OVER` tile folders are grouped (:func:`group`) under parent tiles
without content, :data:`FANOUT` children at most, so the root is not thousands of children.

Tiles are placed by :mod:`cimtwin.tiles.threed.placement` (an ENU frame per content tile,
vertices float32 relative to it; a child's transform is relative to its parent's frame, as in
:mod:`cimtwin.tiles.threed.tileset`), bounding volumes are regions from the placed vertices.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cimtwin.importers.oblique.footprints import CLASS, PROPERTIES, Footprints
from cimtwin.importers.oblique.georef import ToStorage
from cimtwin.importers.oblique.obj import read_obj
from cimtwin.importers.oblique.osgb import LodNode, OsgbFile, read_osgb
from cimtwin.importers.report import Problem, Report
from cimtwin.tiles.threed.glb import glb_bytes, schema
from cimtwin.tiles.threed.mesh import Mesh, TileContent
from cimtwin.tiles.threed.placement import Placement

#: CesiumJS' default maximumScreenSpaceError
MAX_SSE = 16.0
#: for DISTANCE_FROM_EYE_POINT ranges: the view CesiumJS' error is compared at
VIEW_HEIGHT_PX, FOV_DEG = 1080.0, 60.0
#: the features of the photo mesh are the buildings whose footprints it covers (单体化,
#: :mod:`.footprints`); a tile's level and source are in its ``oblique_mesh_tile`` row
SCHEMA = schema("oblique", CLASS, PROPERTIES)
CONTENT_DIR = "content"
#: a production of more tile folders than this gets parent tiles over them ...
GROUP_OVER = 64
#: ... each of at most this many children
FANOUT = 16


def geometric_error(node: LodNode) -> float:
    """2·S·r/T: CesiumJS refines this tile where OSG switches to its children."""
    if node.threshold is None or node.threshold <= 0 or node.radius <= 0:
        return 0.0
    if node.range_mode == "PIXEL_SIZE_ON_SCREEN":
        pixels = node.threshold
    else:  # a distance: the sphere's diameter in pixels seen from there
        per_m = VIEW_HEIGHT_PX / (2.0 * node.threshold * math.tan(math.radians(FOV_DEG) / 2))
        pixels = 2.0 * node.radius * per_m
    return 2.0 * MAX_SSE * node.radius / pixels


@dataclass
class TileRecord:
    """One tile, as the ``oblique_mesh_tile`` row says it."""

    number: int
    parent: int | None
    level: int
    source: str  # relative OSGB path # node index
    uri: str | None
    geometric_error: float
    bounds: tuple[float, float, float, float]  # storage CRS
    min_z: float
    max_z: float
    vertex_count: int
    triangle_count: int
    texture_count: int
    texture_bytes: int
    building_ids: list[int] = field(default_factory=list)


@dataclass
class Built:
    tileset: dict
    records: list[TileRecord] = field(default_factory=list)
    files_read: int = 0
    osgconv_s: float = 0.0


#: a built tile: (JSON node, geometric error, region)
Node = tuple[dict, float, list[float]]


@dataclass
class Folder:
    """What one tile folder's conversion hands back to the parent process (small: the glbs
    are already on disk). Record numbers are local to the folder."""

    tiles: list[Node]
    records: list[TileRecord]
    files_read: int
    osgconv_s: float
    problems: list[Problem]


#: the writer a forked worker converts with (inherited, not pickled: footprints and all)
_WORKER: PyramidWriter | None = None


def _folder_job(index: int, root: Path) -> Folder:
    assert _WORKER is not None
    return _WORKER.folder(index, root)


def _parent_tile(items: list[Node]) -> Node:
    """A tile without content over ``items``: their union; twice the largest child's error,
    the rule of the production's root, so a group's children load as the view nears them
    (an empty tile is never drawn, its error only says when to look below)."""
    region = None
    for _, _, r in items:
        region = _union(region, r)
    assert region is not None
    error = max(e for _, e, _ in items) * 2
    tile = {
        "boundingVolume": {"region": region},
        "geometricError": error,
        "refine": "REPLACE",
        "children": [t for t, _, _ in items],
    }
    return tile, error, region


def group(items: list[Node], fanout: int = FANOUT) -> list[Node]:
    """At most ``fanout`` tiles over ``items``: split in four by the median of the regions'
    centres (west/east, then south/north within each half; a balanced quadtree however the
    folders are spread, identical places included), recursively."""
    if len(items) <= fanout:
        return items

    def centre(k: int, axis: int) -> tuple[float, int]:
        r = items[k][2]
        return ((r[axis] + r[axis + 2]) / 2, k)  # the index keeps ties in folder order

    by_x = sorted(range(len(items)), key=lambda k: centre(k, 0))
    half = len(by_x) // 2
    out = []
    for side in (by_x[:half], by_x[half:]):
        by_y = sorted(side, key=lambda k: centre(k, 1))
        mid = len(by_y) // 2
        for part in (by_y[:mid], by_y[mid:]):
            if not part:
                continue
            sub = group([items[k] for k in sorted(part)], fanout)
            out.append(sub[0] if len(sub) == 1 else _parent_tile(sub))
    return out


def _union(a: list[float] | None, b: list[float] | None) -> list[float] | None:
    if a is None or b is None:
        return a or b
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])] + [
        min(a[4], b[4]),
        max(a[5], b[5]),
    ]


class PyramidWriter:
    def __init__(
        self,
        production: Path,
        to_storage: ToStorage,
        out: Path,
        report: Report,
        advance: Callable[[int], object] | None = None,
        footprints: Callable[[tuple[float, float, float, float]], Footprints] | None = None,
        workers: int = 1,
    ) -> None:
        self.production, self.to_storage, self.out = production, to_storage, out
        self.report, self.advance = report, advance
        #: given the production's extent, the footprints to bake in (read once)
        self.read_footprints = footprints
        self.footprints = Footprints.empty()
        self.placement = Placement()
        self.built = Built({})
        self.workers = max(1, workers)
        self.index = 0  # the tile folder being converted (names its glbs)
        #: the folder root's sphere radius (OBJ productions derive their switches from it)
        self.root_radius: float | None = None

    def _relative(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.production.resolve()))
        except ValueError:
            return path.name

    def _read(self, path: Path) -> OsgbFile:
        osgb = read_level(path, self.root_radius)
        if self.root_radius is None and osgb.nodes:  # an OBJ folder's root: its switch scale
            self.root_radius = osgb.nodes[0].radius
        self.built.files_read += 1
        self.built.osgconv_s += osgb.seconds_osgconv
        return osgb

    def _content(self, node: LodNode, osgb: OsgbFile, number: int, level: int) -> tuple | None:
        """The node's mesh placed in storage coordinates, its glb written; (uri, world matrix,
        region, record fields) or None for a node without triangles."""
        geoms = [g for g in node.geometries if len(g.triangles)]
        if not geoms:
            return None
        names = sorted({g.texture for g in geoms if g.texture})
        index = {name: i for i, name in enumerate(names)}
        meshes = []
        for g in geoms:
            n = len(g.positions)
            uvs = (
                np.zeros((n, 2))
                if g.uvs is None
                else np.column_stack(
                    [
                        g.uvs[:, 0],
                        1.0 - g.uvs[:, 1],
                    ]  # OpenGL's origin is bottom-left, glTF's top-left
                )
            )
            tex = index[g.texture] if g.texture else -1
            color = (255, 255, 255, 255) if g.texture else g.color
            meshes.append(
                Mesh(
                    self.to_storage(g.positions),
                    g.triangles,
                    np.zeros(n, dtype=np.uint32),
                    np.array(color, dtype=np.uint8),
                    uvs,
                    np.full(len(g.triangles), tex),
                )
            )
        mesh, features, touched = self.footprints.bake(Mesh.concat(meshes))
        source = f"{self._relative(node.file)}#{node.index}"
        content = TileContent(
            mesh, features, textures=[osgb.textures[name] for name in names], unlit=True
        )
        p = mesh.positions
        lo, hi = p.min(axis=0), p.max(axis=0)
        mid = (lo + hi) / 2
        frame = self.placement.frame(float(mid[0]), float(mid[1]), float(mid[2]))
        uri = f"{CONTENT_DIR}/{self.index}/{number}.glb"
        path = self.out / uri
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(glb_bytes(content, self.placement, frame, SCHEMA))
        region = self.placement.region((lo[0], lo[1], hi[0], hi[1]), float(lo[2]), float(hi[2]))
        fields = {
            "source": source,
            "bounds": (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])),
            "min_z": float(lo[2]),
            "max_z": float(hi[2]),
            "vertex_count": len(p),
            "building_ids": touched,
            "triangle_count": len(mesh.triangles),
            "texture_count": len(names),
            "texture_bytes": sum(len(osgb.textures[name]) for name in names),
        }
        return uri, frame.matrix, region, fields

    def _tile(
        self,
        node: LodNode,
        osgb: OsgbFile,
        level: int,
        parent: int | None,
        parent_world: np.ndarray,
    ) -> tuple[dict, float, list[float]] | None:
        number = len(self.built.records)
        record = TileRecord(number, parent, level, "", None, 0.0, (0, 0, 0, 0), 0, 0, 0, 0, 0, 0)
        self.built.records.append(record)
        made = self._content(node, osgb, number, level)
        tile: dict = {}
        world, region = parent_world, None
        if made is not None:
            uri, world, region, fields = made
            tile["transform"] = [
                float(v) for v in np.linalg.solve(parent_world, world).T.reshape(-1)
            ]
            tile["content"] = {"uri": uri}
            record.uri = uri
            for key, value in fields.items():
                setattr(record, key, value)
        else:
            record.source = f"{self._relative(node.file)}#{node.index}"
        children = []
        for name in node.children:
            path = node.file.parent / name
            if not path.is_file():
                self.report.warning(
                    node.file,
                    node.index,
                    "oblique-missing-child",
                    f"child file {name} is missing: this node is a leaf",
                )
                continue
            child_file = self._read(path)
            for child in child_file.nodes:
                built = self._tile(child, child_file, level + 1, number, world)
                if built is not None:
                    children.append(built)
            del child_file
        for _, _, child_region in children:
            region = _union(region, child_region)
        if region is None:
            self.built.records.pop()
            return None
        if record.uri is None:  # no mesh of its own: its records' bounds are its children's
            below = [r for r in self.built.records if r.parent == number]
            record.bounds = (
                min(r.bounds[0] for r in below),
                min(r.bounds[1] for r in below),
                max(r.bounds[2] for r in below),
                max(r.bounds[3] for r in below),
            )
            record.min_z = min(r.min_z for r in below)
            record.max_z = max(r.max_z for r in below)
        error = geometric_error(node) if children else 0.0
        error = max([error] + [e for _, e, _ in children])
        record.geometric_error = error
        tile["boundingVolume"] = {"region": region}
        tile["geometricError"] = error
        if children:
            tile["refine"] = "REPLACE"
            tile["children"] = [c for c, _, _ in children]
        return tile, error, region

    def _extent(self, roots: list[Path]) -> tuple[float, float, float, float]:
        """The storage-CRS box of the root nodes' bounding spheres: a first, cheap pass over
        the coarsest files only (read again by the build: memory holds one file at a time)."""
        corners = []
        for root in roots:
            for node in read_level(root, None).nodes:
                c, r = node.center, node.radius
                corners += [c + (dx * r, dy * r, 0.0) for dx in (-1, 1) for dy in (-1, 1)]
        if not corners:
            return (0.0, 0.0, 0.0, 0.0)
        xy = self.to_storage(np.array(corners, dtype=np.float64))
        margin = 1.0  # metres: the spheres are exact bounds of the meshes, rounding aside
        lo, hi = xy.min(axis=0) - margin, xy.max(axis=0) + margin
        return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))

    def folder(self, index: int, root: Path) -> Folder:
        """One tile folder's pyramid, its glbs written (in a worker or in this process)."""
        self.index, self.built, self.root_radius = index, Built({}), None
        report, self.report = self.report, Report()
        try:
            tiles = []
            osgb = self._read(root)
            for node in osgb.nodes:
                one = self._tile(node, osgb, 0, None, np.eye(4))
                if one is not None:
                    tiles.append(one)
            b = self.built
            return Folder(tiles, b.records, b.files_read, b.osgconv_s, self.report.problems)
        finally:
            self.report = report

    def _folders(self, roots: list[Path]) -> list[Folder]:
        """Every folder converted, in folder order; progress per finished folder."""
        workers = min(self.workers, len(roots))
        if workers <= 1:
            done = []
            for index, root in enumerate(roots):
                done.append(self.folder(index, root))
                if self.advance:
                    self.advance(1)
            return done
        global _WORKER
        _WORKER = self
        results: list[Folder | None] = [None] * len(roots)
        # fork: the workers inherit the footprints and the transformers instead of pickling
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        try:
            futures = {pool.submit(_folder_job, i, root): i for i, root in enumerate(roots)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if self.advance:
                    self.advance(1)
        finally:
            # on an error the queued folders are dropped and the running ones awaited, so
            # nothing writes into the staging folder once the caller removes it
            pool.shutdown(wait=True, cancel_futures=True)
            _WORKER = None
        return [r for r in results if r is not None]

    def build(self, roots: list[Path], extras: dict) -> Built:
        if self.read_footprints is not None:
            self.footprints = self.read_footprints(self._extent(roots))
        total = Built({})
        built: list[Node] = []
        for done in self._folders(roots):
            offset = len(total.records)
            for rec in done.records:
                rec.number += offset
                rec.parent = None if rec.parent is None else rec.parent + offset
            total.records += done.records
            total.files_read += done.files_read
            total.osgconv_s += done.osgconv_s
            self.report.problems += done.problems
            built += done.tiles
        self.built = total
        if not built:
            raise ValueError(f"{self.production}: no triangles in the production")
        if len(built) > GROUP_OVER:
            built = group(built)
        if len(built) == 1:
            root_tile, root_error, _ = built[0]
        else:
            root_tile, root_error, _ = _parent_tile(built)
        root_tile.setdefault("refine", "REPLACE")
        self.built.tileset = {
            "asset": {
                "version": "1.1",
                "generator": "cimtwin import oblique",
                # the feature ids are those of the buildings collection (the viewer fetches
                # /collections/buildings/items/{id} for a picked building)
                "extras": {
                    "placement": self.placement.description,
                    "layer": "buildings",
                    **extras,
                },
            },
            "schema": SCHEMA,
            # twice the root's: the root is drawn from far away, refined at its own error
            "geometricError": max(root_error, 1.0) * 2,
            "root": root_tile,
        }
        (self.out / "tileset.json").write_text(json.dumps(self.built.tileset), encoding="utf-8")
        return self.built


def read_level(path: Path, root_radius: float | None) -> OsgbFile:
    """A level file of either kind of production (:mod:`.osgb` or :mod:`.obj`)."""
    if path.suffix.lower() == ".obj":
        return read_obj(path, root_radius)
    return read_osgb(path)


def production_roots(production: Path) -> list[Path]:
    """The root files: ``Data/Tile_x/Tile_x.osgb`` of every tile folder, else the level-less
    ``*.osgb`` files of the folder itself (a single-tile production); a production with no
    OSGB at all but ``.obj`` level files in the same places is an OBJ production."""
    return _roots(production, "osgb") or _roots(production, "obj")


def _roots(production: Path, ext: str) -> list[Path]:
    data = production / "Data"
    if data.is_dir():
        roots = []
        for folder in sorted(p for p in data.iterdir() if p.is_dir()):
            root = folder / f"{folder.name}.{ext}"
            if root.is_file():
                roots.append(root)
        return roots
    own = production / f"{production.name}.{ext}"
    if own.is_file():
        return [own]
    import re

    return sorted(p for p in production.glob(f"*.{ext}") if not re.search(r"_L\d+_", p.name))

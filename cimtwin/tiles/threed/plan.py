"""A 3D build as a plan: the tree of tiles over a fixed grid, and one independent job per tile.

The grid does not depend on the data: level-0 tiles are squares of ``ROOT_TILE_M`` metres (a
source may set ``root_tile_m``) aligned to multiples of their size in the storage CRS, and a
tile of level l is a quarter of its parent. So tile ``(l, x, y)`` has the same box in every
build, which is what lets ``--changed`` keep a tile's file and what makes a key a stable URL.
A tile is split while the source counts more than ``max_features_per_tile`` features in it
(up to ``MAX_DEPTH``); only non-empty quarters become children, and a tile whose one child
holds all its features is left out (the child takes its place: no parent that only repeats it).

A job (:class:`TileJob`) is plain data; :func:`run_job` opens its own database connection,
reads PostGIS through the source, writes its one glb to the output store (a folder or an
fsspec URL: :mod:`cimtwin.tiles.store`) and returns a small
:class:`TileSummary`: nothing is shared between jobs, so a distributed engine (Dask, ...) can
run them unchanged. Parents are jobs like leaves, at a tolerance (:func:`tolerance_for`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
import psycopg

from cimtwin.tiles.cluster import forget_connection, worker_connection
from cimtwin.tiles.store import Store
from cimtwin.tiles.threed.glb import glb_bytes
from cimtwin.tiles.threed.placement import Placement
from cimtwin.tiles.threed.sources.base import Box, Source

#: level-0 tile size (m) unless the source says ``root_tile_m``
ROOT_TILE_M = 4096.0
#: deepest level (4096 m / 2^9 = 8 m tiles)
MAX_DEPTH = 9
#: a parent's tolerance is its tile size over this: a tile seen about this many pixels wide
#: shows nothing smaller than a pixel
TOLERANCE_DIVISOR = 256.0

Key = tuple[int, int, int]  # level, x, y


def key_str(key: Key) -> str:
    return "/".join(str(k) for k in key)


def parse_key(text: str) -> Key:
    level, x, y = (int(v) for v in text.split("/"))
    return level, x, y


def tile_box(key: Key, root_m: float) -> Box:
    """The storage-CRS box of a tile of the fixed grid."""
    level, x, y = key
    size = root_m / (1 << level)
    return (x * size, y * size, (x + 1) * size, (y + 1) * size)


def tolerance_for(level: int, root_m: float, leaf: bool) -> float:
    """0 for a leaf (full detail); a parent's tile size / ``TOLERANCE_DIVISOR``."""
    return 0.0 if leaf else root_m / (1 << level) / TOLERANCE_DIVISOR


def meets(a: Box, b: Box) -> bool:
    """Whether two boxes share any point (closed boxes: a change on an edge counts)."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


@dataclass(frozen=True)
class PlannedTile:
    key: Key
    box: Box
    children: tuple[Key, ...]
    #: features anchored in the box (the plan's count): what a job's cost is estimated from
    features: int = 0

    @property
    def leaf(self) -> bool:
        return not self.children


@dataclass(frozen=True)
class Plan:
    """The tree: ``roots`` are the top tiles (the non-empty level-0 tiles, or the descendant
    standing in for one: :func:`plan_tree` leaves out a parent whose one child holds all its
    features, listed in ``collapsed``)."""

    root_m: float
    roots: tuple[Key, ...]
    tiles: dict[Key, PlannedTile]
    collapsed: frozenset[Key] = frozenset()

    def parents(self) -> dict[Key, Key]:
        return {c: t.key for t in self.tiles.values() for c in t.children}


@dataclass(frozen=True)
class TileJob:
    """One tile to write: everything a worker needs, as plain picklable data."""

    source: str  # "module:Class" of the Source
    dsn: str
    store: Store  # the tileset's folder (local or an fsspec URL)
    key: Key
    box: Box
    tolerance_m: float
    schema: dict = field(hash=False, compare=False)
    geoid: str
    height_offset_m: float

    @property
    def path(self) -> str:
        level, x, y = self.key
        return f"tiles/{level}/{x}/{y}.glb"


@dataclass
class TileSummary:
    """What a job reports: enough to write the tile's entry in tileset.json."""

    key: Key
    tolerance_m: float
    path: str | None  # None: the source had nothing to draw
    bytes: int = 0
    sha256: str = ""
    error_m: float = 0.0
    features: int = 0
    region: list[float] | None = None
    transform: list[float] | None = None  # the tile's ENU frame (world, column-major)

    def to_json(self) -> dict:
        d = asdict(self)
        d["key"] = key_str(self.key)
        return d

    @staticmethod
    def from_json(d: dict) -> TileSummary:
        return TileSummary(**{**d, "key": parse_key(d["key"])})


@dataclass(frozen=True)
class Subtree:
    """The planned tiles under one level-0 tile: ``root`` stands for it (None: empty)."""

    root: Key | None
    tiles: dict[Key, PlannedTile]
    collapsed: frozenset[Key]


@dataclass(frozen=True)
class PlanJob:
    """One level-0 tile's subtree to plan on a worker (plain data, like :class:`TileJob`)."""

    source: str
    dsn: str
    key: Key
    root_m: float
    clip: Box | None
    max_depth: int
    split: frozenset[Key]


def plan_subtree(
    conn: psycopg.Connection,
    source: Source,
    root: Key,
    root_m: float,
    clip: Box | None = None,
    max_depth: int = MAX_DEPTH,
    split: set[Key] | frozenset[Key] = frozenset(),
) -> Subtree:
    """The tiles under the level-0 tile ``root`` (see :func:`plan_tree`)."""
    tiles: dict[Key, PlannedTile] = {}
    collapsed: set[Key] = set()

    def grow(key: Key) -> Key | None:
        """The key standing for this tile's subtree (itself, or the one descendant holding all
        its features), None when it is empty."""
        box = tile_box(key, root_m)
        if clip is not None and not meets(box, clip):
            return None
        n = source.count(conn, box)
        if n == 0:
            return None
        children: list[Key] = []
        if (n > source.max_features_per_tile or (key in split and n > 1)) and key[0] < max_depth:
            level, x, y = key
            for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                got = grow((level + 1, 2 * x + dx, 2 * y + dy))
                if got is not None:
                    children.append(got)
        if len(children) == 1 and tiles[children[0]].features == n:
            # a parent over the same features as its one child would be a copy of it (a
            # compact cluster, a building's model, under a large tile): the child stands in
            collapsed.add(key)
            return children[0]
        tiles[key] = PlannedTile(key, box, tuple(children), n)
        return key

    return Subtree(grow(root), tiles, frozenset(collapsed))


def run_plan_job(job: PlanJob) -> Subtree:
    """:func:`plan_subtree` on a worker, with its kept connection."""
    source = _source(job.source)
    args = (job.key, job.root_m, job.clip, job.max_depth, job.split)
    try:
        return plan_subtree(worker_connection(job.dsn), source, *args)
    except psycopg.OperationalError:  # the kept connection died since the last job
        forget_connection(job.dsn)
        return plan_subtree(worker_connection(job.dsn), source, *args)


#: plans the level-0 subtrees elsewhere (a cluster): PlanJobs -> their Subtrees, in order
PlanMapper = Callable[[list[PlanJob]], list[Subtree]]


def plan_tree(
    conn: psycopg.Connection,
    source: Source,
    clip: Box | None = None,
    max_depth: int = MAX_DEPTH,
    split: set[Key] | frozenset[Key] = frozenset(),
    *,
    on_cluster: tuple[PlanMapper, str, str] | None = None,
) -> Plan | None:
    """The tree over the source's data (None when it has none); with ``clip``, only tiles
    meeting that box. Tiles in ``split`` are split whatever their count (their content was
    over the byte budget). ``on_cluster`` (mapper, source target, DSN) plans each level-0
    tile's subtree as a job of its own: the counts are database work, which the workers then
    share instead of this process doing it alone; the tree is the same."""
    root_m = float(getattr(source, "root_tile_m", ROOT_TILE_M))
    bounds = source.bounds(conn)
    if bounds is None:
        return None
    x0, y0, x1, y1 = bounds.box
    keys = [
        (0, ix, iy)
        for ix in range(math.floor(x0 / root_m), math.floor(x1 / root_m) + 1)
        for iy in range(math.floor(y0 / root_m), math.floor(y1 / root_m) + 1)
    ]
    if on_cluster is not None and len(keys) > 1:
        mapper, target, dsn = on_cluster
        frozen = frozenset(split)
        subtrees = mapper([PlanJob(target, dsn, k, root_m, clip, max_depth, frozen) for k in keys])
    else:
        subtrees = [plan_subtree(conn, source, k, root_m, clip, max_depth, split) for k in keys]
    tiles: dict[Key, PlannedTile] = {}
    collapsed: set[Key] = set()
    for sub in subtrees:
        tiles.update(sub.tiles)
        collapsed |= sub.collapsed
    roots = tuple(sub.root for sub in subtrees if sub.root is not None)
    return Plan(root_m, roots, tiles, frozenset(collapsed))


def jobs_for(
    plan: Plan,
    keys: list[Key] | set[Key],
    *,
    source: str,
    dsn: str,
    store: Store,
    schema: dict,
    placement: Placement,
) -> list[TileJob]:
    """The jobs of ``keys``, deepest first (a worker pool then finishes leaves early)."""
    geoid = str(placement.grid) if placement.grid else "none"
    out = []
    for key in sorted(keys, key=lambda k: (-k[0], k[1], k[2])):
        t = plan.tiles[key]
        out.append(
            TileJob(
                source=source,
                dsn=dsn,
                store=store,
                key=key,
                box=t.box,
                tolerance_m=tolerance_for(key[0], plan.root_m, t.leaf),
                schema=schema,
                geoid=geoid,
                height_offset_m=placement.offset,
            )
        )
    return out


@lru_cache(maxsize=4)
def _placement(geoid: str, offset: float) -> Placement:
    return Placement(geoid=geoid, height_offset_m=offset)


@lru_cache(maxsize=8)
def _source(target: str) -> Source:
    from cimtwin.tiles.threed.registry import source_for

    return source_for(target)


#: a job's fixed cost, in features' worth (its queries, ground heights, glb and write)
JOB_OVERHEAD_FEATURES = 200


def job_cost(plan: Plan, job: TileJob) -> int:
    """A job's estimated cost: its box's features (a leaf draws them, a parent's query ranks
    them) plus a fixed part."""
    return plan.tiles[job.key].features + JOB_OVERHEAD_FEATURES


def batches(jobs: list[TileJob], costs: list[int], n: int) -> list[list[TileJob]]:
    """The jobs in at most ``n`` batches of about equal estimated cost, costliest batch first.

    One task per tile costs the scheduler and the driver some milliseconds each, which on the
    district's 3 000 components tiles was a CPU-second for every ten worker-seconds, taken
    from the same cores the workers need. A batch is a run of neighbouring jobs (jobs are in
    key order within a level), closed once it holds a ``1/n`` share of the cost; submitting
    the costliest first leaves small batches for the end, so the workers finish together."""
    if not jobs:
        return []
    share = sum(costs) / max(1, n)
    out: list[list[TileJob]] = []
    weights: list[int] = []
    batch: list[TileJob] = []
    weight = 0
    for job, cost in zip(jobs, costs, strict=True):
        batch.append(job)
        weight += cost
        if weight >= share:
            out.append(batch)
            weights.append(weight)
            batch, weight = [], 0
    if batch:
        out.append(batch)
        weights.append(weight)
    order = sorted(range(len(out)), key=lambda i: -weights[i])
    return [out[i] for i in order]


def run_batch(jobs: list[TileJob]) -> list[TileSummary]:
    """:func:`run_job` for each job of a batch, on one worker (one task)."""
    return [run_job(job) for job in jobs]


def run_job(job: TileJob) -> TileSummary:
    """Read the tile's content from PostGIS, write its glb, report what it wrote."""
    source = _source(job.source)
    try:
        content = source.content(worker_connection(job.dsn), job.box, job.tolerance_m)
    except psycopg.OperationalError:
        # the kept connection died since the last job (a server restart, a dropped and
        # recreated database): a closed connection only shows when used, so open it again once
        forget_connection(job.dsn)
        content = source.content(worker_connection(job.dsn), job.box, job.tolerance_m)
    if content is None or content.mesh.empty:
        job.store.remove(job.path)
        return TileSummary(job.key, job.tolerance_m, None)
    placement = _placement(job.geoid, job.height_offset_m)
    p = content.mesh.positions
    used = p[np.unique(content.mesh.triangles)]
    lo, hi = used.min(axis=0), used.max(axis=0)
    cx, cy = (job.box[0] + job.box[2]) / 2, (job.box[1] + job.box[3]) / 2
    frame = placement.frame(cx, cy, float(lo[2] + hi[2]) / 2)
    data = glb_bytes(content, placement, frame, job.schema)
    job.store.write_bytes(job.path, data)
    return TileSummary(
        key=job.key,
        tolerance_m=job.tolerance_m,
        path=job.path,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        error_m=float(content.error_m),
        features=len(content.features),
        region=placement.region(
            (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), float(lo[2]), float(hi[2])
        ),
        transform=frame.transform_list(),
    )

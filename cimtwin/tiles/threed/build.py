"""The 3D build runner: plan a tileset, run its tile jobs (on Dask distributed, or in-process),
write tileset.json and the manifest that makes the next build incremental.

``{out}/{id}/build.json`` (``out`` a folder or an fsspec URL: :mod:`cimtwin.tiles.store`;
the driver writes it and tileset.json, the jobs their own tiles) records, per tile, its box,
tolerance, content hash and summary, plus the import batches the build saw (id, kind,
extent). ``--changed`` compares that with ``import_batch`` now: batches imported since
(their rows' extent) and batches replaced since (the extent recorded when they were seen:
their rows are gone) are the changed areas. Tiles whose box meets one, tiles new to the tree
or whose tolerance changed (a leaf became a parent), and every ancestor of those are rebuilt;
every other content file is left as it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from cimtwin.db.engine import libpq_dsn
from cimtwin.errors import UserError
from cimtwin.spatial.sql_toolkit import T
from cimtwin.tiles.store import Store, open_store
from cimtwin.tiles.threed import registry
from cimtwin.tiles.threed.glb import SchemaProperty, schema
from cimtwin.tiles.threed.placement import Placement
from cimtwin.tiles.threed.plan import (
    MAX_DEPTH,
    Key,
    Plan,
    PlanJob,
    PlanMapper,
    Subtree,
    TileJob,
    TileSummary,
    batches,
    job_cost,
    jobs_for,
    key_str,
    meets,
    parse_key,
    plan_tree,
    run_batch,
    run_job,
    run_plan_job,
    tolerance_for,
)
from cimtwin.tiles.threed.sources.base import Box, Source
from cimtwin.tiles.threed.tileset import assemble

MANIFEST = "build.json"
TILESET = "tileset.json"
MANIFEST_VERSION = 1
#: a leaf whose glb is larger is split into its quarters (the issue's 1 MB content bound)
MAX_CONTENT_BYTES = 1_000_000


@dataclass
class BuildResult:
    tileset: str
    path: Path | str | None  # tileset.json (a URL in an object store), None: no data
    planned: int = 0
    built: int = 0
    kept: int = 0
    removed: int = 0
    bytes: int = 0
    largest: int = 0
    changed_areas: list[Box] | None = field(default=None)


def _schema_of(source: Source) -> dict:
    props = [SchemaProperty(p.name, p.type, p.description) for p in source.properties]
    return schema(source.id, source.class_name, props)


# --- import batches and their extents -------------------------------------------------------


def batch_extent(conn: psycopg.Connection, batch_id: int, kind: str) -> Box | None | str:
    """Extent of a batch's rows over its importer's tables (None: it wrote no row);
    ``"everywhere"`` for an import kind this installation does not know or whose tables have
    no geometry tagged with the batch (its change cannot be located)."""
    from cimtwin.importers.registry import importer_for
    from cimtwin.spatial import bulk

    try:
        models = importer_for(kind).models
    except ValueError:
        return "everywhere"
    out: Box | None = None
    asked = False
    for model in models:
        cols = model.__table__.columns
        geoms = [c.name for c in cols if c.type.__class__.__name__ == "Geometry"]
        if not geoms or "batch_id" not in cols:
            continue
        asked = True
        row = conn.execute(
            sql.SQL(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                "(SELECT ST_Extent({g}) AS e FROM {t} WHERE batch_id = %s) s"
            ).format(g=sql.Identifier(geoms[0]), t=bulk.qualified(model)),
            (batch_id,),
        ).fetchone()
        if row and row[0] is not None:
            b = (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
            out = b if out is None else _box_union(out, b)
    # an import whose rows have no place cannot be located: it may have changed anything
    return out if asked else "everywhere"


def _box_union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _succeeded_batches(conn: psycopg.Connection) -> dict[int, str]:
    rows = conn.execute(
        f"SELECT id, kind FROM {T.import_batch} WHERE status = 'succeeded' ORDER BY id"
    ).fetchall()
    return {int(r[0]): str(r[1]) for r in rows}


def _relevant(source: Source, kind: str) -> bool:
    """Whether a batch of ``kind`` can change this source: a source may name the import kinds
    it reads (``import_kinds``); without that every kind counts (conservative)."""
    kinds = getattr(source, "import_kinds", None)
    return kinds is None or kind in kinds


def seen_batches(
    conn: psycopg.Connection, source: Source, known: dict[str, dict]
) -> dict[str, dict]:
    """The succeeded batches now, with extents (reused from ``known`` for batches already
    recorded: a succeeded batch's rows do not change)."""
    out: dict[str, dict] = {}
    for batch_id, kind in _succeeded_batches(conn).items():
        if not _relevant(source, kind):
            continue
        key = str(batch_id)
        if key in known:
            out[key] = known[key]
            continue
        extent = batch_extent(conn, batch_id, kind)
        out[key] = {"kind": kind, "extent": list(extent) if isinstance(extent, tuple) else extent}
    return out


def changed_areas(before: dict[str, dict], now: dict[str, dict]) -> list[Box] | None:
    """Boxes that changed between two sets of seen batches: new batches' extents and vanished
    (replaced) batches' recorded extents; None means everywhere."""
    areas: list[Box] = []
    for key in set(before) ^ set(now):
        extent = (now.get(key) or before[key])["extent"]
        if extent == "everywhere":
            return None
        if extent is not None:
            areas.append((extent[0], extent[1], extent[2], extent[3]))
    return areas


# --- the build ------------------------------------------------------------------------------


def _read_manifest(folder: Store) -> dict | None:
    raw = folder.read_bytes(MANIFEST)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("version") == MANIFEST_VERSION else None


def _write_json(folder: Store, name: str, doc: dict) -> None:
    folder.write_bytes(name, json.dumps(doc, ensure_ascii=False, indent=1).encode())


def _dirty(
    plan: Plan, old_tiles: dict[Key, dict], areas: list[Box] | None, existing: set[str]
) -> set[Key]:
    """Tiles to rebuild: meeting a changed area, new to the tree, re-toleranced (a leaf
    became a parent or back) or missing their file. Every ancestor of a tile meeting an area
    meets it too (its box holds the child's), so the parents above a change are rebuilt with
    it; a parent's content depends on its box and tolerance only, not on its children.
    ``existing``: the tileset's files now (:meth:`Store.files`, one listing)."""
    dirty: set[Key] = set()
    for key, tile in plan.tiles.items():
        old = old_tiles.get(key)
        tol = tolerance_for(key[0], plan.root_m, tile.leaf)
        if (
            areas is None
            or old is None
            or abs(old["tolerance_m"] - tol) > 1e-9
            or (old["path"] is not None and old["path"] not in existing)
            or any(meets(tile.box, a) for a in areas)
        ):
            dirty.add(key)
    return dirty


#: tasks per worker thread a build's jobs are batched into (:func:`.plan.batches`): enough
#: for the last ones to even out, few enough that the scheduler's share stays small
BATCHES_PER_WORKER = 16


def run_jobs(
    jobs: list[TileJob],
    workers: int,
    on_done: Callable[[], None] | None = None,
    *,
    scheduler: str | None = None,
    memory_limit: str = "auto",
    costs: list[int] | None = None,
) -> Iterable[TileSummary]:
    """The jobs' summaries as they finish: on the Dask cluster at ``scheduler`` when one is
    given, in this process for one worker (or one job), else on a LocalCluster of
    ``workers`` processes (:mod:`cimtwin.tiles.cluster`). On a cluster the jobs go as
    :data:`BATCHES_PER_WORKER` batches per worker thread, balanced by ``costs`` (estimated,
    one per job; default all equal); ``on_done`` is called once per job either way."""
    if scheduler is None and (workers <= 1 or len(jobs) <= 1):
        for job in jobs:
            yield run_job(job)
            if on_done:
                on_done()
        return
    from cimtwin.tiles import cluster

    client = cluster.client_for(workers, scheduler, memory_limit)
    threads = sum(client.nthreads().values()) or workers
    groups = batches(jobs, costs or [1] * len(jobs), threads * BATCHES_PER_WORKER)
    for summaries in cluster.run_on_cluster(client, run_batch, groups, key="tile-jobs"):
        for summary in summaries:
            yield summary
            if on_done:
                on_done()


def plan_mapper(workers: int, scheduler: str | None, memory_limit: str) -> PlanMapper:
    """Plans level-0 subtrees on the cluster :func:`run_jobs` uses (``plan_tree``'s
    ``on_cluster``): the plan's counts are database work the workers share."""

    def mapper(jobs: list[PlanJob]) -> list[Subtree]:
        from cimtwin.tiles import cluster

        client = cluster.client_for(workers, scheduler, memory_limit)
        return list(
            cluster.run_on_cluster(client, run_plan_job, jobs, key="plan-job", ordered=True)
        )

    return mapper


def build_tileset(
    tileset_id: str,
    out_root: Path | str | Store,
    *,
    database_url: str | None = None,
    target: str | None = None,
    area: Box | None = None,
    changed: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    memory_limit: str = "auto",
    placement: Placement | None = None,
    max_depth: int = MAX_DEPTH,
    max_content_bytes: int = MAX_CONTENT_BYTES,
    on_plan: Callable[[int], None] | None = None,
    on_tile: Callable[[], None] | None = None,
) -> BuildResult:
    """Build (or, with ``changed`` or ``area``, update) one tileset in ``out_root/{id}``.

    ``target`` overrides the registry's ``module:Class`` (tests' synthetic sources).
    ``workers`` (default: one per CPU) above 1 runs the tile jobs on a Dask LocalCluster with
    ``memory_limit`` per worker; ``scheduler`` (``tcp://host:8786``) on an existing cluster,
    whose workers must reach the database and ``out_root`` (a shared folder, or an fsspec URL
    such as ``s3://bucket/3dtiles``: :func:`cimtwin.tiles.store.open_store`)."""
    target = target or registry.target_for(tileset_id)
    source = registry.source_for(target)
    placement = placement or Placement()
    dsn = libpq_dsn(database_url)
    store = out_root if isinstance(out_root, Store) else open_store(out_root)
    folder = store.child(tileset_id)
    if scheduler is not None or (workers or os.cpu_count() or 1) > 1:
        folder.require_shared("workers in other processes")
    folder.check_writable()
    pool = workers or os.cpu_count() or 1
    on_cluster = (
        (plan_mapper(pool, scheduler, memory_limit), target, dsn)
        if scheduler is not None or pool > 1
        else None
    )
    tileset_schema = _schema_of(source)
    settings_key = {
        "source": target,
        "placement": placement.description,
        "max_depth": max_depth,
        "schema": tileset_schema,
    }
    manifest = _read_manifest(folder)
    if manifest is not None and manifest.get("settings") != settings_key:
        manifest = None  # another source, placement or schema: nothing can be kept
    if manifest is None:
        folder.remove_tree("tiles")  # nothing there is known
    old_tiles = {parse_key(k): v for k, v in ((manifest or {}).get("tiles") or {}).items()}
    split = {parse_key(k) for k in (manifest or {}).get("split", [])}
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            batches = seen_batches(conn, source, (manifest or {}).get("batches", {}))
            areas: list[Box] | None = None
            if manifest is not None and changed:
                areas = changed_areas(manifest["batches"], batches)
            if area is not None:
                if manifest is not None and changed:
                    areas = None if areas is None else [*areas, area]
                else:
                    areas = [area]
            clip = area if manifest is None else None
            result = BuildResult(tileset_id, None, changed_areas=areas)
            if manifest is not None and areas == [] and folder.read_bytes(TILESET) is not None:
                # nothing this tileset reads was imported since: no plan, no file rewritten
                sizes = [int(v.get("bytes") or 0) for v in old_tiles.values()]
                result.kept, result.path = len(old_tiles), folder.location(TILESET)
                result.bytes, result.largest = sum(sizes), max(sizes, default=0)
                return result
            plan = plan_tree(
                conn, source, clip=clip, max_depth=max_depth, split=split, on_cluster=on_cluster
            )
            if plan is None or not plan.tiles:
                _remove_output(folder)
                return result
            existing = folder.files("tiles") if manifest else set()
            todo = _dirty(plan, old_tiles, areas if manifest else None, existing)
            result.planned = len(todo)
            if on_plan:
                on_plan(result.planned)
            summaries: dict[Key, TileSummary] = {
                k: TileSummary.from_json(v) for k, v in old_tiles.items() if k in plan.tiles
            }
            rebuilt: set[Key] = set()
            while todo:
                jobs = jobs_for(
                    plan,
                    todo,
                    source=target,
                    dsn=dsn,
                    store=folder,
                    schema=tileset_schema,
                    placement=placement,
                )
                for summary in run_jobs(
                    jobs,
                    pool,
                    on_tile,
                    scheduler=scheduler,
                    memory_limit=memory_limit,
                    costs=[job_cost(plan, job) for job in jobs],
                ):
                    summaries[summary.key] = summary
                    rebuilt.add(summary.key)
                    result.built += 1
                # a leaf over the byte budget is split (and stays split in later builds)
                over = {
                    k
                    for k in todo
                    if plan.tiles[k].leaf
                    and summaries[k].bytes > max_content_bytes
                    and summaries[k].features > 1
                    and k[0] < max_depth
                }
                if not over:
                    break
                split |= over
                plan = plan_tree(
                    conn, source, clip=clip, max_depth=max_depth, split=split, on_cluster=on_cluster
                )
                assert plan is not None
                done = {k: s.to_json() for k, s in summaries.items() if k in plan.tiles}
                todo = _dirty(plan, done, [], folder.files("tiles"))
                result.planned += len(todo)
                if on_plan:
                    on_plan(result.planned)
    except psycopg.OperationalError as exc:
        raise UserError(f"database unreachable: {str(exc).splitlines()[0]}") from exc
    result.kept = len(set(plan.tiles) - rebuilt)
    # files of tiles the tree no longer has: from the last build, or written in this one
    # before a split left their tile out (its one child stands in for it)
    dropped = {k: o.get("path") for k, o in old_tiles.items() if k not in plan.tiles}
    dropped.update((k, s.path) for k, s in summaries.items() if k not in plan.tiles)
    for path in sorted({p for p in dropped.values() if p}):
        folder.remove(path)
    result.removed = sum(1 for k, o in old_tiles.items() if k not in plan.tiles and o.get("path"))
    summaries = {k: s for k, s in summaries.items() if k in plan.tiles}

    doc = assemble(
        plan,
        summaries,
        tileset_schema,
        description=placement.description,
        extras={"id": tileset_id, "title": source.title, "layer": source.layer},
    )
    _write_json(folder, TILESET, doc)
    _write_json(
        folder,
        MANIFEST,
        {
            "version": MANIFEST_VERSION,
            "settings": settings_key,
            "batches": batches,
            "last_batch": max((int(k) for k in batches), default=0),
            # a collapsed tile stays split: its child stands in for it (plan_tree)
            "split": sorted(key_str(k) for k in split if k in plan.tiles or k in plan.collapsed),
            "tiles": {key_str(k): s.to_json() for k, s in sorted(summaries.items())},
        },
    )
    sizes = [s.bytes for s in summaries.values()]
    result.path, result.bytes = folder.location(TILESET), sum(sizes)
    result.largest = max(sizes, default=0)
    return result


def _remove_output(folder: Store) -> None:
    for name in (TILESET, MANIFEST):
        folder.remove(name)
    folder.remove_tree("tiles")


def grid_box(database_url: str | None, code: str) -> Box:
    """The storage-CRS box of a work grid (``--grid CODE``)."""
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        row = conn.execute(
            f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
            f"(SELECT ST_Extent(geom) AS e FROM {T.work_grid} WHERE code = %s) s",
            (code,),
        ).fetchone()
    if row is None or row[0] is None:
        raise UserError(f"--grid: no work grid with code {code!r}")
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))


def parse_bbox(text: str) -> Box:
    """``x0,y0,x1,y1`` (storage CRS) from the command line."""
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--bbox {text!r}: give x0,y0,x1,y1 (four numbers)") from None
    if not (x0 < x1 and y0 < y1):
        raise UserError(f"--bbox {text!r}: x0 < x1 and y0 < y1 are needed")
    return (x0, y0, x1, y1)

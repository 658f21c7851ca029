"""``cimtwin tiles build-3d --layers oblique``: every imported production's tileset rebuilt
from its recorded source folder, e.g. after new buildings were imported (单体化 bakes
their footprints in).

The oblique tileset is not a database source for the quadtree builder: its tiles are the
production's own PagedLOD pyramid, read from the OSGB files, and its rows
(``oblique_mesh_tile``: building ids per tile) change with it. So a rebuild is the import
run again with the options it was recorded with (``import_batch.options``: --crs,
--origin, --height-datum) and ``--replace``: the same code, all or nothing, a new batch
with provenance, the tileset swapped only once the rows committed. ``build-3d`` stays the
one entry point for every tileset; this module is what it calls for ``oblique``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import psycopg

from cimtwin.db.engine import libpq_dsn
from cimtwin.importers.base import ImportOptions
from cimtwin.importers.oblique.importer import ObliqueImporter
from cimtwin.importers.runner import run_import
from cimtwin.spatial.base import SRID
from cimtwin.spatial.sql_toolkit import T
from cimtwin.tiles.store import Store
from cimtwin.tiles.threed.build import BuildResult

#: the recorded options a rebuild passes on (what places the mesh and names the dataset)
KEPT_OPTIONS = ("dataset", "crs", "origin", "height_datum", "strict")
#: the import kinds whose batches change the footprints baked in (``--changed``)
FOOTPRINT_KINDS = ("buildings", "ifc")

Box = tuple[float, float, float, float]


def productions(
    conn: psycopg.Connection, area: Box | None = None, changed: bool = False
) -> list[tuple[str, list[str], dict]]:
    """(dataset, source folders, options) of each production's latest import that still has
    rows; with ``area``, only those meeting it; with ``changed``, only those imported before
    the latest buildings import."""
    sql = f"""
        SELECT DISTINCT ON (b.dataset) b.dataset, b.source_files, b.options, b.id
        FROM {T.import_batch} AS b
        WHERE b.kind = 'oblique' AND b.status = 'succeeded'
        ORDER BY b.dataset, b.id DESC"""
    latest = conn.execute(sql).fetchall()
    newest_footprints = conn.execute(
        f"SELECT max(id) FROM {T.import_batch} WHERE kind = ANY(%s) AND status = 'succeeded'",
        (list(FOOTPRINT_KINDS),),
    ).fetchone()
    out = []
    for dataset, sources, options, batch in latest:
        where, params = "batch_id = %s", [batch]
        if area is not None:
            where += f" AND footprint && ST_MakeEnvelope(%s, %s, %s, %s, {SRID})"
            params += list(area)
        row = conn.execute(
            f"SELECT count(*) FROM {T.oblique_mesh_tile} WHERE {where}", params
        ).fetchone()
        if not row or not row[0]:
            continue  # deleted since, or away from the area
        if changed and (newest_footprints is None or (newest_footprints[0] or 0) < batch):
            continue  # no building imported since: the baked ids are current
        out.append((dataset, list(sources), dict(options or {})))
    return out


def _options(recorded: dict, progress: Callable | None) -> ImportOptions:
    known = {f.name for f in fields(ImportOptions)}
    kept = {k: v for k, v in recorded.items() if k in KEPT_OPTIONS and k in known}
    return ImportOptions(**kept, replace=True, progress=progress)


def rebuild(
    database_url: str,
    store: Store,
    *,
    area: Box | None = None,
    changed: bool = False,
    progress: Callable | None = None,
    warn: Callable[[str], None] = print,
) -> list[BuildResult]:
    """Re-import every production (module docstring); one :class:`BuildResult` each."""
    with psycopg.connect(libpq_dsn(database_url), autocommit=True) as conn:
        todo = productions(conn, area, changed)
    results = []
    for dataset, sources, recorded in todo:
        paths = [Path(s) for s in sources]
        gone = [p for p in paths if not p.is_dir()]
        if gone:
            warn(
                f"oblique {dataset}: source folder {gone[0]} is gone; its tileset and rows "
                "are kept as they are (import it again from where it is now)"
            )
            continue
        result = run_import(
            ObliqueImporter(tiles_dir=store),
            paths,
            _options(recorded, progress),
            database_url,
        )
        tid = result.prepared.extra["tileset_id"] if result.prepared else dataset
        sizes = list(store.file_sizes(tid).values())
        results.append(
            BuildResult(
                tid,
                store.location(f"{tid}/tileset.json"),
                planned=result.counts.get("oblique_mesh_tile", 0),
                built=result.counts.get("oblique_mesh_tile", 0),
                bytes=sum(sizes),
                largest=max(sizes, default=0),
            )
        )
    return results

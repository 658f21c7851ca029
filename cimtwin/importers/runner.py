"""Run one import: validate, then replace the dataset in one transaction, and record provenance.

A failed validation writes nothing; a failure or a kill while writing is rolled back by
PostgreSQL, so the twin is either the old dataset or the new one, never a mix. Imports of the
same dataset are serialised with an advisory lock; different datasets load concurrently.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from cimtwin import memory
from cimtwin.db.engine import libpq_dsn
from cimtwin.errors import ImportFailed, UserError
from cimtwin.importers.base import Importer, ImportOptions, Prepared
from cimtwin.importers.report import Report
from cimtwin.spatial import bulk, staging
from cimtwin.spatial.base import SCHEMA, schema_of, table_of
from cimtwin.spatial.provenance import DATASET_CHARS
from cimtwin.spatial.sql_toolkit import T

SIDECARS = (".shx", ".dbf", ".prj", ".cpg")
log = logging.getLogger(__name__)


@dataclass
class ImportResult:
    kind: str
    dataset: str
    batch_id: int | None
    status: str  # succeeded, unchanged, validated (dry run)
    counts: dict[str, int] = field(default_factory=dict)
    report: Report = field(default_factory=Report)
    prepared: Prepared | None = None


def files_sha256(paths: list[Path]) -> str:
    """One hash over the files in order, including a Shapefile's sidecar files; a folder
    (an oblique production) is every file under it, by relative path."""
    h = hashlib.sha256()
    for p in paths:
        parts = [p]
        if p.suffix.lower() == ".shp":
            parts += [p.with_suffix(s) for s in SIDECARS if p.with_suffix(s).exists()]
        if p.is_dir():
            parts = sorted(f for f in p.rglob("*") if f.is_file())
        for part in parts:
            h.update((str(part.relative_to(p)) if p.is_dir() else part.name).encode())
            with part.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def default_dataset(kind: str, paths: list[Path]) -> str:
    """``KIND:/absolute/folder/stem`` of the first file: the same file name in two folders
    (or run from two working directories) names two datasets, not one. A name longer than the
    column keeps its end and gets a hash of the whole path in front, so it stays unique."""
    path = paths[0].resolve()
    name = f"{kind}:{path.parent}/{path.stem}"
    limit = DATASET_CHARS
    if len(name) <= limit:
        return name
    prefix = f"{kind}:~{hashlib.sha256(str(path).encode()).hexdigest()[:12]}~"
    return prefix + name[len(prefix) - limit :]


def source_paths(paths: list[Path]) -> list[str]:
    """The files as recorded in ``import_batch.source_files``: absolute, symlinks resolved."""
    return [str(p.resolve()) for p in paths]


def run_import(
    importer: Importer,
    paths: list[Path],
    options: ImportOptions,
    database_url: str | None = None,
) -> ImportResult:
    for p in paths:
        if not p.exists():
            raise UserError(f"{p}: no such file")
    dataset = options.dataset or default_dataset(importer.kind, paths)
    report = Report()
    # an importer that reads the database while preparing (oblique: the footprints baked
    # into its mesh) is told which one, the one it will write to
    use_database = getattr(importer, "use_database", None)
    if use_database is not None:
        use_database(database_url)
    prepared = importer.prepare(paths, options, report)
    memory.trim()  # what reading and checking freed, before the rows are written
    # an importer that writes files besides its rows (oblique: a 3D tileset) is told whether
    # the import committed, so its files appear only with the rows, or not at all
    finish = getattr(importer, "finish", None)
    result: ImportResult | None = None
    try:
        result = _run_prepared(importer, paths, options, database_url, dataset, report, prepared)
    finally:
        if finish is not None:
            finish(prepared, result is not None and result.status == "succeeded")
    assert result is not None
    return result


def _run_prepared(
    importer: Importer,
    paths: list[Path],
    options: ImportOptions,
    database_url: str | None,
    dataset: str,
    report: Report,
    prepared: Prepared,
) -> ImportResult:
    result = ImportResult(
        importer.kind, dataset, None, "validated", report=report, prepared=prepared
    )

    def verdict() -> None:
        _refuse_failed(importer, paths, options, dataset, report, prepared)

    # a streamed import's checks end while it is written; what its first batch already
    # tells (a failed check, no rows at all) is said before it connects
    if (
        not prepared.checked_in_stream
        or report.failed(options.strict)
        or not prepared.feature_count
    ):
        verdict()
    if options.dry_run:
        return result

    sha = files_sha256(paths)
    fingerprint = getattr(importer, "options_fingerprint", None)
    if fingerprint is not None:  # options that change what is written (ifc: --origin ...)
        sha = hashlib.sha256(f"{sha}\n{fingerprint(options)}".encode()).hexdigest()
    sources = source_paths(paths)
    try:
        with psycopg.connect(
            libpq_dsn(database_url), application_name=f"cimtwin-import {importer.kind}"
        ) as conn:
            # the dataset's lock, and those of datasets the import writes onto (a valve
            # layer: its network), in one order so two imports never wait on each other
            for name in sorted({dataset, *prepared.extra.get("lock_datasets", ())}):
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))
            # before import_batch is first read: dropping a detached partition locks
            # import_batch exclusively (its key triggers), so an import that read it and then
            # queued for this lock would deadlock with the one holding it
            bulk.lock_partition_swaps(conn, importer.models)
            previous = conn.execute(
                f"SELECT id, sha256, source_files FROM {T.import_batch} WHERE kind = %s "
                "AND dataset = %s AND status = 'succeeded' ORDER BY id",
                (importer.kind, dataset),
            ).fetchall()
            if previous and previous[-1][1] == sha and not options.replace:
                conn.rollback()
                result.status, result.batch_id = "unchanged", previous[-1][0]
                return result
            if previous and not options.replace and sorted(previous[-1][2]) != sorted(sources):
                raise ImportFailed(
                    f"{importer.kind} dataset {dataset!r} was imported from "
                    f"{', '.join(previous[-1][2])}, not from {', '.join(sources)}; nothing "
                    "was written (pass --replace to replace it with these files, or --dataset "
                    "NAME to import them as another dataset)"
                )
            batch_row = conn.execute(
                f"INSERT INTO {T.import_batch} (kind, dataset, source_files, sha256, format, "
                "source_crs, vertical_datum, feature_count, error_count, warning_count, counts, "
                "options, status, imported_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 0, %s, "
                "'{}', %s, 'running', %s) RETURNING id",
                (
                    importer.kind,
                    dataset,
                    Jsonb(sources),
                    sha,
                    prepared.format,
                    prepared.source_crs,
                    prepared.extra.get("vertical_datum"),
                    prepared.feature_count,
                    len(report.warnings),
                    Jsonb(_options_record(options)),
                    options.imported_by or getpass.getuser(),
                ),
            ).fetchone()
            assert batch_row is not None  # INSERT ... RETURNING gives the row
            batch_id = batch_row[0]
            old_ids = [r[0] for r in previous]
            old_bbox = _batches_bbox(conn, importer, old_ids)
            # plain tables: old rows out first (their unique keys would clash with the new);
            # partitioned tables: old partitions dropped after the new ones are attached, as
            # dropping locks the whole table exclusively -- held only until the commit
            partitioned = [m for m in importer.models if bulk.is_partitioned(m)]
            for model in reversed(importer.models):
                if model not in partitioned:
                    bulk.delete_batches(conn, model, old_ids)
            prepared.extra["replacing"] = old_ids
            prepared.extra["verdict"] = verdict
            # staged partitions are committed tables: if anything before the commit fails,
            # they are dropped once the transaction is rolled back
            try:
                counts = importer.write(conn, prepared, batch_id)
                for model in reversed(partitioned):
                    bulk.delete_batches(conn, model, old_ids)
                # what a stream's checks found is known only now
                conn.execute(
                    f"UPDATE {T.import_batch} SET status = 'succeeded', counts = %s, "
                    "format = %s, source_crs = %s, feature_count = %s, warning_count = %s, "
                    "finished_at = now() WHERE id = %s",
                    (
                        Jsonb(counts),
                        prepared.format,
                        prepared.source_crs,
                        prepared.feature_count,
                        len(report.warnings),
                        batch_id,
                    ),
                )
                if old_ids:
                    conn.execute(
                        f"UPDATE {T.import_batch} SET status = 'replaced' WHERE id = ANY(%s)",
                        (old_ids,),
                    )
                # on CHANGE_CHANNEL, numbered from change_seq (tile caches compare that number)
                conn.execute(
                    f'SELECT "{SCHEMA}".notify_change(%s::jsonb)',
                    (
                        json.dumps(
                            {
                                "kind": importer.kind,
                                "batch": batch_id,
                                "bbox": _union(prepared.bbox, old_bbox),
                                "tables": [m.__tablename__ for m in importer.models],
                            }
                        ),
                    ),
                )
                conn.commit()
            except BaseException:
                _roll_back(conn)
                staging.discard(conn, [m for m in importer.models if bulk.is_partitioned(m)])
                raise
            analyze_tables(conn, importer.models, database_url, batch_id, bool(old_ids))
    except psycopg.errors.IntegrityError as exc:
        diag = exc.diag
        raise ImportFailed(
            f"{importer.kind} import rolled back, nothing was written: "
            f"{diag.message_primary} ({diag.message_detail or diag.constraint_name})"
        ) from exc
    except psycopg.OperationalError as exc:
        raise ImportFailed(f"database error, import rolled back: {exc}") from exc
    result.batch_id, result.status, result.counts = batch_id, "succeeded", counts
    return result


def _refuse_failed(
    importer: Importer,
    paths: list[Path],
    options: ImportOptions,
    dataset: str,
    report: Report,
    prepared: Prepared,
) -> None:
    """Raise ImportFailed if the checks failed, or if there is nothing to import."""
    if report.failed(options.strict):
        n_err, n_warn = len(report.errors), len(report.warnings)
        why = f"{n_err} error(s)" + (
            f", {n_warn} warning(s) under --strict" if options.strict else ""
        )
        raise ImportFailed(f"{importer.kind} import refused: {why}; nothing was written", report)
    if prepared.feature_count == 0 and not options.allow_empty:
        # a header-only export would otherwise replace the dataset with nothing
        raise ImportFailed(
            f"{importer.kind}: no rows in {', '.join(p.name for p in paths)}; nothing was "
            f"written (pass --allow-empty to empty dataset {dataset!r} on purpose)"
        )


def _roll_back(conn: psycopg.Connection) -> None:
    """End a failed import's transaction now (its staged partitions are then dropped); a
    connection already lost has nothing to roll back."""
    with contextlib.suppress(psycopg.Error):
        conn.rollback()


def analyze_tables(
    conn: psycopg.Connection,
    models,
    database_url: str | None = None,
    batch_id: int | None = None,
    replaced: bool = False,
) -> None:
    """Planner statistics for the tables an import just wrote, after its commit.

    Autovacuum analyses a table only after enough changes and a delay, and may be off: until
    then the planner guesses, and on a freshly loaded network it picked plans that cost an
    isolation about 28 ms of database CPU instead of 4 (benchmarks/request_cost.py). Tables
    after the first are analysed at the same time on connections of their own (a pipeline
    network's segments took as long as its nodes). The import has committed: a failure here
    is logged, not raised.

    A partitioned table's ``ANALYZE`` samples the whole table and then analyses every
    partition again (PostgreSQL 15 has no ``ANALYZE ONLY``): a pipelines import took 0.25 s
    more per network already in the twin. So an import that replaces a dataset analyses only
    its new partition, once the table has statistics as a whole: the replaced district's rows
    were in them, and a re-import is the frequent case. An import that adds a dataset, or the
    first, analyses the whole table (:func:`analyze_targets`)."""
    targets = analyze_targets(conn, models, batch_id, replaced)
    first, *rest = targets
    if not rest:
        _analyze(conn, *first)
        return
    with ThreadPoolExecutor(len(rest)) as pool:
        others = [pool.submit(_analyze_apart, database_url, *t) for t in rest]
        _analyze(conn, *first)
        for done in others:
            done.result()


def analyze_targets(
    conn: psycopg.Connection, models, batch_id: int | None, replaced: bool
) -> list[tuple[str, psycopg.sql.Composable]]:
    """(table name, what to analyse) per model: the batch's own partition where the import
    replaced a dataset of a partitioned table that has whole-table statistics, else the
    table."""
    out = []
    for model in models:
        target: psycopg.sql.Composable = bulk.qualified(model)
        if replaced and batch_id is not None and bulk.is_partitioned(model):
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = %s "
                "AND tablename = %s AND inherited)",
                (schema_of(model), table_of(model).name),
            ).fetchone()
            conn.commit()
            if row and row[0]:
                target = bulk.partition_name(model, batch_id)
        out.append((model.__tablename__, target))
    return out


def _analyze(conn: psycopg.Connection, name: str, target: psycopg.sql.Composable) -> None:
    try:
        conn.execute(psycopg.sql.SQL("ANALYZE {}").format(target))
        conn.commit()
    except psycopg.Error as exc:
        conn.rollback()
        log.warning("ANALYZE %s after the import failed: %s", name, exc)


def _analyze_apart(database_url: str | None, name: str, target: psycopg.sql.Composable) -> None:
    try:
        with psycopg.connect(libpq_dsn(database_url), application_name="cimtwin-analyze") as c:
            _analyze(c, name, target)
    except psycopg.Error as exc:
        log.warning("ANALYZE %s after the import failed: %s", name, exc)


def _options_record(options: ImportOptions) -> dict:
    return {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(options).items()
        if k not in ("imported_by", "progress")
    }


def _batches_bbox(
    conn: psycopg.Connection, importer: Importer, batch_ids: list[int]
) -> tuple[float, float, float, float] | None:
    """Extent of the rows about to be replaced (their tiles change too)."""
    if not batch_ids:
        return None
    boxes = []
    for model in importer.models:
        geom_cols = [
            c.name for c in model.__table__.columns if c.type.__class__.__name__ == "Geometry"
        ]
        if not geom_cols or "batch_id" not in model.__table__.columns:
            continue
        row = conn.execute(
            psycopg.sql.SQL(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                "(SELECT ST_Extent({g}) AS e FROM {t} WHERE batch_id = ANY(%s)) s"
            ).format(g=psycopg.sql.Identifier(geom_cols[0]), t=bulk.qualified(model)),
            (batch_ids,),
        ).fetchone()
        if row and row[0] is not None:
            boxes.append(tuple(row))
    out = None
    for b in boxes:
        out = _union(out, b)
    return out


def _union(a, b):
    if a is None:
        return None if b is None else list(b)
    if b is None:
        return list(a)
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]

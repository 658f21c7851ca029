"""Static export of vector tiles to PMTiles v3 or MBTiles, for offline use or static hosting.

The tiles are the same as the API serves (same statements); the tile list covers the data's
extent at each zoom, and empty tiles are left out. The archive goes to a local path or an fsspec
URL (``s3://bucket/city.pmtiles``): written to a local file first, then moved or uploaded whole,
so a half-written archive never takes the real name. With more than one worker (or a Dask
scheduler) the tiles are rendered on Dask distributed, a run of tiles per job, each worker
with its own database connection; the driver writes the one archive file in tile order, so
the file is the same byte for byte whoever rendered it.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import morecantile
import psycopg
from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import Writer

from cimtwin.db.connect import connect, not_set_up, schema_revision
from cimtwin.db.engine import libpq_dsn
from cimtwin.errors import UserError
from cimtwin.settings import get_settings
from cimtwin.spatial import crs as crs_mod
from cimtwin.spatial.catalogue import BY_ID, Layer
from cimtwin.tiles.mvt import WEB_MERCATOR, TileRequest, layer_query
from cimtwin.tiles.store import open_store

#: data extent: west, south, east, north in degrees (EPSG:4326, longitude first)
Bounds = tuple[float, float, float, float]
#: tiles per Dask job: enough to amortise a task's overhead, few enough to share out
TILES_PER_JOB = 256


@dataclass(frozen=True)
class MvtJob:
    """A run of tiles for one worker: plain data (the worker opens its own connection)."""

    dsn: str
    layer_ids: tuple[str, ...]
    tiles: tuple[tuple[int, int, int], ...]
    max_features: int


def run_mvt_job(job: MvtJob) -> list[tuple[int, int, int, bytes]]:
    """The job's non-empty tiles, gzipped, in the job's order (runs on a Dask worker)."""
    from cimtwin.tiles.cluster import forget_connection, worker_connection

    layers = [BY_ID[i] for i in job.layer_ids]
    out = []
    for z, x, y in job.tiles:
        tile = morecantile.Tile(x, y, z)
        try:
            body = render(worker_connection(job.dsn), layers, tile, job.max_features)
        except psycopg.OperationalError:  # the kept connection died since the last job
            forget_connection(job.dsn)
            body = render(worker_connection(job.dsn), layers, tile, job.max_features)
        if body:
            out.append((z, x, y, gzip.compress(body, mtime=0)))
    return out


def data_bounds(conn: psycopg.Connection, layers: list[Layer]) -> Bounds | None:
    boxes = []
    for layer in layers:
        row = conn.execute(
            psycopg.sql.SQL(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                "(SELECT ST_Extent({g})::geometry AS e FROM {s}.{t}) x"
            ).format(
                g=psycopg.sql.Identifier(layer.geometry_column),
                s=psycopg.sql.Identifier(layer.schema),
                t=psycopg.sql.Identifier(layer.table),
            )
        ).fetchone()
        if row and row[0] is not None:
            boxes.append(row)
    if not boxes:
        return None
    box = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    return crs_mod.transformer(crs_mod.storage_srid(), 4326).transform_bounds(*box)


def tile_list(bounds: Bounds, minzoom: int, maxzoom: int) -> list[morecantile.Tile]:
    return list(WEB_MERCATOR.tiles(*bounds, zooms=list(range(minzoom, maxzoom + 1))))


def render(
    conn: psycopg.Connection, layers: list[Layer], tile: morecantile.Tile, max_features: int
) -> bytes:
    req = TileRequest(tile.z, tile.x, tile.y)
    parts = []
    for layer in layers:
        q = layer_query(layer, req, max_features)
        if q is None:
            continue
        row = conn.execute(q[0], q[1], prepare=True, binary=True).fetchone()
        if row and row[0]:
            parts.append(bytes(row[0]))
    return b"".join(parts)


def export(
    layer_ids: list[str],
    minzoom: int,
    maxzoom: int,
    out: Path | str,
    database_url: str | None = None,
    max_features: int = 50_000,
    on_total: Callable[[int], None] | None = None,
    on_tile: Callable[[], None] | None = None,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    memory_limit: str = "auto",
    tiles_per_job: int = TILES_PER_JOB,
    storage_options: dict | None = None,
) -> dict[str, int]:
    """Write the tiles of ``layer_ids`` for zooms minzoom..maxzoom to ``out`` (.pmtiles or
    .mbtiles, a path or an fsspec URL with ``storage_options``); returns counts of tiles
    visited and written and the archive's bytes. ``workers`` above 1 renders on a Dask
    LocalCluster of that many processes, ``scheduler`` on an existing cluster (the workers
    only render; this process writes the archive)."""
    unknown = [i for i in layer_ids if i not in BY_ID]
    if unknown:
        raise UserError(f"unknown layer(s) {', '.join(unknown)}; known: {', '.join(BY_ID)}")
    if not 0 <= minzoom <= maxzoom <= 22:
        raise UserError(f"zoom range {minzoom}..{maxzoom} is not within 0..22")
    folder, name = open_store(out, storage_options).split()
    suffix = Path(name).suffix.lower()
    if suffix not in (".pmtiles", ".mbtiles"):
        raise UserError(f"{out}: the output must end in .pmtiles or .mbtiles")
    folder.check_writable()
    layers = [BY_ID[i] for i in layer_ids]
    with connect(database_url) as conn:
        if schema_revision(conn, get_settings().db_schema) is None:
            raise not_set_up(database_url)
        bounds = data_bounds(conn, layers)
        if bounds is None:
            raise UserError(f"layers {', '.join(layer_ids)} hold no data")
        tiles = tile_list(bounds, minzoom, maxzoom)
        if on_total:
            on_total(len(tiles))

        def rendered() -> Iterator[tuple[morecantile.Tile, bytes]]:
            for t in tiles:
                body = render(conn, layers, t, max_features)
                if on_tile:
                    on_tile()
                if body:
                    yield t, gzip.compress(body, mtime=0)

        def rendered_on_cluster() -> Iterator[tuple[morecantile.Tile, bytes]]:
            from cimtwin.tiles import cluster

            client = cluster.client_for(workers, scheduler, memory_limit)
            dsn = libpq_dsn(database_url)
            jobs = [
                MvtJob(
                    dsn,
                    tuple(layer_ids),
                    tuple((t.z, t.x, t.y) for t in tiles[i : i + tiles_per_job]),
                    max_features,
                )
                for i in range(0, len(tiles), tiles_per_job)
            ]
            for job, done in zip(
                jobs,
                cluster.run_on_cluster(client, run_mvt_job, jobs, key="mvt-job", ordered=True),
                strict=True,
            ):
                for z, x, y, body in done:
                    yield morecantile.Tile(x, y, z), body
                if on_tile:
                    for _ in job.tiles:
                        on_tile()

        meta = _metadata(layers, minzoom, maxzoom, bounds)
        on_cluster = scheduler is not None or (workers > 1 and len(tiles) > tiles_per_job)
        # beside the target when local (then renamed), else in a scratch folder (uploaded)
        with tempfile.TemporaryDirectory(
            prefix=".cimtwin-export-", dir=folder.root if folder.local else None
        ) as scratch:
            tmp = Path(scratch) / name
            written = (_write_pmtiles if suffix == ".pmtiles" else _write_mbtiles)(
                tmp,
                rendered_on_cluster() if on_cluster else rendered(),
                meta,
                bounds,
                minzoom,
                maxzoom,
            )
            size = tmp.stat().st_size
            folder.put_file(tmp, name)
    return {"tiles_visited": len(tiles), "tiles_written": written, "bytes": size}


def _metadata(layers: list[Layer], minzoom: int, maxzoom: int, bounds) -> dict:
    return {
        "name": ",".join(layer.id for layer in layers),
        "description": "cimtwin vector tiles",
        "attribution": "cimtwin",
        "vector_layers": [
            {
                "id": layer.id,
                "description": layer.title,
                "minzoom": max(minzoom, layer.minzoom),
                "maxzoom": maxzoom,
                "fields": {
                    p: ("Number" if layer.column_type(p) in ("integer", "number") else "String")
                    for p in layer.tile_fields
                },
            }
            for layer in layers
        ],
    }


def _write_pmtiles(path: Path, tiles, meta: dict, bounds, minzoom: int, maxzoom: int) -> int:
    entries = sorted(
        ((zxy_to_tileid(t.z, t.x, t.y), body) for t, body in tiles), key=lambda e: e[0]
    )
    if not entries:
        raise UserError("no tile holds any feature in that zoom range")
    with path.open("wb") as fh:
        writer = Writer(fh)
        for tile_id, body in entries:
            writer.write_tile(tile_id, body)
        w, s, e, n = bounds
        writer.finalize(
            {
                "tile_type": TileType.MVT,
                "tile_compression": Compression.GZIP,
                "min_lon_e7": int(w * 1e7),
                "min_lat_e7": int(s * 1e7),
                "max_lon_e7": int(e * 1e7),
                "max_lat_e7": int(n * 1e7),
                "center_zoom": (minzoom + maxzoom) // 2,
                "center_lon_e7": int((w + e) / 2 * 1e7),
                "center_lat_e7": int((s + n) / 2 * 1e7),
            },
            meta,
        )
    return len(entries)


def _write_mbtiles(path: Path, tiles, meta: dict, bounds, minzoom: int, maxzoom: int) -> int:
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    try:
        db.executescript(
            "CREATE TABLE metadata (name TEXT, value TEXT);"
            "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER,"
            " tile_data BLOB);"
            "CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);"
        )
        n = 0
        for t, body in tiles:  # MBTiles rows count from the south (TMS)
            db.execute(
                "INSERT INTO tiles VALUES (?, ?, ?, ?)", (t.z, t.x, (1 << t.z) - 1 - t.y, body)
            )
            n += 1
        w, s, e, nn = bounds
        rows = {
            "name": meta["name"],
            "format": "pbf",
            "type": "overlay",
            "version": "1",
            "description": meta["description"],
            "minzoom": str(minzoom),
            "maxzoom": str(maxzoom),
            "bounds": f"{w},{s},{e},{nn}",
            "center": f"{(w + e) / 2},{(s + nn) / 2},{minzoom}",
            "json": json.dumps({"vector_layers": meta["vector_layers"]}),
        }
        db.executemany("INSERT INTO metadata VALUES (?, ?)", rows.items())
        db.commit()
    finally:
        db.close()
    return n

"""cimtwin vector tiles vs tipg 1.6.1 (OGC API Tiles), with the raw PostGIS floor.

One run on the district-scale sample. The same tile requests go, one server at a time and
round by round (--repeat passes; all servers stay up, so drift falls on all alike), to
tipg (2 uvicorn workers), to cimtwin with its tile cache off, in memory and in Redis (a
private redis-server, when installed; 2 workers each), and
straight to PostgreSQL with cimtwin's own per-layer statements over 2, 4 and N connections
(no HTTP; the fastest is the floor). The HTTP load comes from a lean keep-alive client
(benchmarks/http_client.py) so that the client's own CPU, on the same two cores, distorts the
servers' figures as little as possible. Prints tiles/s, p50, p99 and the largest tile of each,
and the ratios.

tipg 1.6.1 answers empty tiles and empty bbox queries for EPSG:4547 and EPSG:3857 tables, so it
serves ``bench4326.*``: a 2D EPSG:4326 copy of the same rows (same ids and attributes), made in
the same scratch database.

    .venv/bin/python benchmarks/mvt_vs_tipg.py [--tiles 2000] [--concurrency 8] [--reuse] [--drop]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import http_client  # noqa: E402
from benchmarks.http_client import Connection, HTTPError  # noqa: E402
from cimtwin.db import bootstrap  # noqa: E402
from cimtwin.db.engine import libpq_dsn, sqlalchemy_url  # noqa: E402
from cimtwin.samples.loader import load_sample  # noqa: E402
from cimtwin.settings import Settings  # noqa: E402
from cimtwin.spatial.catalogue import BY_ID  # noqa: E402
from cimtwin.tiles.mvt import (  # noqa: E402
    BUFFER,
    WEB_MERCATOR,
    TileRequest,
    layer_query,
    zoom_filter,
)

CIMTWIN = ROOT / ".venv" / "bin" / "cimtwin"
DATA = ROOT / "benchmarks" / "data" / "district"
PEER_VENV = ROOT / "benchmarks" / ".peers" / "tipg"
PEER_REQUIREMENTS = ROOT / "benchmarks" / "peers" / "tipg-requirements.txt"
TIPG_VERSION = "1.6.1"
DB_NAME = "cimtwin_bench_tiles"
COPY_SCHEMA = "bench4326"
LAYER_CHOICES = ("pipelines", "components")
#: the hot tile: the z15 tile holding Shenzhen North Station
STATION = (114.02389, 22.61194)
HOT_ZOOM = 15
HOT_EVERY = 10
MIN_ZOOM, TOP_ZOOM, OVERFLOW_ZOOMS = 12, 16, (17, 18)
WARMUP = 100
SEED = 4547
MAX_FEATURES = Settings.model_fields["tile_max_features"].default
BIG_TILE_KB = 500
HOST = "127.0.0.1"


# ---------------------------------------------------------------- database


def source_counts(dsn: str, layers: list[str]) -> dict[str, int] | None:
    """Rows per layer table in the scratch database; None when it or its tables are missing."""
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            counts = {}
            for layer_id in layers:
                layer = BY_ID[layer_id]
                name = f"{layer.schema}.{layer.table}"
                if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None:
                    return None
                counts[layer_id] = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(
                        sql.Identifier(layer.schema, layer.table)
                    )
                ).fetchone()[0]
            return counts
    except psycopg.OperationalError:
        return None


def prepare_database(url: str, layers: list[str], reuse: bool) -> None:
    dsn = libpq_dsn(url)
    counts = source_counts(dsn, layers) if reuse else None
    if counts and all(counts.values()):
        print(
            f"reusing database {DB_NAME}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()),
            flush=True,
        )
        return
    if not (DATA / "manifest.json").exists():
        print(f"generating the district sample into {DATA} ...", flush=True)
        subprocess.run(
            [str(CIMTWIN), "samples", "generate", str(DATA), "--scale", "district"],
            check=True,
            timeout=3600,
        )
    print(f"creating database {DB_NAME} and loading {DATA.relative_to(ROOT)} ...", flush=True)
    bootstrap.recreate_database(url)
    t0 = time.perf_counter()

    def step(kind: str, result: object) -> None:
        counts = getattr(result, "counts", {})
        print(
            f"  {kind:<11} {getattr(result, 'status', '?'):<10} "
            + ", ".join(f"{k} {v:,}" for k, v in counts.items()),
            flush=True,
        )

    load_sample(DATA, url, on_step=step)
    print(f"  loaded in {time.perf_counter() - t0:.0f} s", flush=True)


def copy_geometry_type(conn: psycopg.Connection, layer_id: str) -> str:
    """The copy's column type: the single 2D type of the rows, or Geometry when they mix."""
    layer = BY_ID[layer_id]
    kinds = [
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT DISTINCT ST_GeometryType(ST_Force2D({g})) FROM {t}").format(
                g=sql.Identifier(layer.geometry_column), t=sql.Identifier(layer.schema, layer.table)
            )
        )
    ]
    return kinds[0].removeprefix("ST_") if len(kinds) == 1 else "Geometry"


def build_4326_copy(dsn: str, layers: list[str]) -> dict[str, str]:
    """``bench4326.<layer>``: same ids, the layer's properties, 2D EPSG:4326 geometry."""
    kinds = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(COPY_SCHEMA)))
        for layer_id in layers:
            layer = BY_ID[layer_id]
            src = sql.Identifier(layer.schema, layer.table)
            dst = sql.Identifier(COPY_SCHEMA, layer_id)
            kind = copy_geometry_type(conn, layer_id)
            kinds[layer_id] = kind
            n_src = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(src)).fetchone()[0]
            have = conn.execute(
                "SELECT to_regclass(%s)", (f"{COPY_SCHEMA}.{layer_id}",)
            ).fetchone()[0]
            if have is not None:
                n_dst = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(dst)).fetchone()[0]
                if n_dst == n_src:
                    print(f"  {COPY_SCHEMA}.{layer_id}: kept ({n_dst:,} rows, {kind})")
                    continue
            t0 = time.perf_counter()
            cols = sql.SQL(", ").join(
                sql.Identifier(c) for c in (layer.id_column, *layer.tile_fields)
            )
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(dst))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {dst} AS SELECT {cols},"
                    " ST_Force2D(ST_Transform({g}, 4326))::geometry({kind}, 4326) AS geom"
                    " FROM {src}"
                ).format(
                    dst=dst,
                    cols=cols,
                    g=sql.Identifier(layer.geometry_column),
                    kind=sql.SQL(kind),
                    src=src,
                )
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                    dst, sql.Identifier(layer.id_column)
                )
            )
            conn.execute(sql.SQL("CREATE INDEX ON {} USING gist (geom)").format(dst))
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(dst))
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(src))
            print(
                f"  {COPY_SCHEMA}.{layer_id}: {n_src:,} rows, geometry({kind},4326), "
                f"primary key, GiST index, analyzed ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    return kinds


def prewarm(dsn: str, layers: list[str]) -> None:
    """Read every source and copy table once, so no server pays for a cold disk cache."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for layer_id in layers:
            layer = BY_ID[layer_id]
            for table, g in (
                (sql.Identifier(layer.schema, layer.table), sql.Identifier(layer.geometry_column)),
                (sql.Identifier(COPY_SCHEMA, layer_id), sql.Identifier("geom")),
            ):
                conn.execute(
                    sql.SQL("SELECT count(*), sum(ST_NPoints({})) FROM {}").format(g, table)
                )


# ---------------------------------------------------------------- workload


def tiles_with_data(
    conn: psycopg.Connection, layer_id: str, z: int, bbox: tuple[float, float, float, float]
) -> list[TileRequest]:
    """Tiles of zoom ``z`` over ``bbox`` (lon/lat) that meet at least one row of the layer."""
    cover = list(WEB_MERCATOR.tiles(*bbox, [z]))
    rows = conn.execute(
        sql.SQL(
            "SELECT c.x, c.y FROM unnest(%(xs)s::int[], %(ys)s::int[]) AS c(x, y)"
            " WHERE EXISTS (SELECT 1 FROM {t} s"
            "  WHERE s.geom && ST_Transform(ST_TileEnvelope(%(z)s, c.x, c.y), 4326))"
            " ORDER BY c.y, c.x"
        ).format(t=sql.Identifier(COPY_SCHEMA, layer_id)),
        {"xs": [t.x for t in cover], "ys": [t.y for t in cover], "z": z},
    ).fetchall()
    return [TileRequest(z, x, y) for x, y in rows]


def split_evenly(total: int, sizes: list[int]) -> list[int]:
    """``total`` spread as evenly as the pools allow (a full pool passes its share on)."""
    quota = [0] * len(sizes)
    left = total
    for _ in range(total + len(sizes) + 1):
        open_ = [i for i, n in enumerate(sizes) if quota[i] < n]
        if left <= 0 or not open_:
            break
        share = max(1, left // len(open_))
        for i in open_:
            take = min(share, sizes[i] - quota[i], left)
            quota[i] += take
            left -= take
    return quota


@dataclass
class Workload:
    layer: str
    tiles: list[TileRequest]  # distinct, in request order
    requests: list[TileRequest]  # tiles with the hot tile every HOT_EVERY-th request
    warmup: list[TileRequest]
    by_zoom: dict[int, int]


def build_workload(dsn: str, layer_id: str, n: int, hot: TileRequest) -> Workload:
    """All tiles with data at the layer's two lowest zooms (>= 12), the rest split evenly over
    the zooms up to 16; when those run out, z17 (then z18) tiles fill up to ``n``."""
    rng = random.Random(f"{SEED}:{layer_id}")
    low = max(MIN_ZOOM, BY_ID[layer_id].minzoom)
    pools: dict[int, list[TileRequest]] = {}
    with psycopg.connect(dsn) as conn:
        bbox = conn.execute(
            sql.SQL(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
                " FROM (SELECT ST_Extent(geom)::geometry AS e FROM {}) s"
            ).format(sql.Identifier(COPY_SCHEMA, layer_id))
        ).fetchone()

        def pool(z: int) -> list[TileRequest]:
            if z not in pools:
                pools[z] = [t for t in tiles_with_data(conn, layer_id, z, bbox) if t != hot]
            return pools[z]

        main = list(range(low, TOP_ZOOM + 1))
        chosen: list[TileRequest] = []
        for z in main[:2]:
            chosen += pool(z)
        rest = main[2:]
        for z, q in zip(
            rest, split_evenly(n - len(chosen), [len(pool(z)) for z in rest]), strict=True
        ):
            chosen += rng.sample(pool(z), q)
        for z in OVERFLOW_ZOOMS:
            need = n - len(chosen)
            if need <= 0:
                break
            chosen += rng.sample(pool(z), min(need, len(pool(z))))
        if len(chosen) > n:
            chosen = rng.sample(chosen, n)
        taken = set(chosen)
        spare: list[TileRequest] = []
        for z in (*reversed(main), *OVERFLOW_ZOOMS):
            if len(spare) >= WARMUP:
                break
            spare += [t for t in pool(z) if t not in taken]
    rng.shuffle(chosen)
    warmup = rng.sample(spare, min(WARMUP, len(spare)))
    requests: list[TileRequest] = []
    for t in chosen:
        requests.append(t)
        if len(requests) % HOT_EVERY == HOT_EVERY - 1:
            requests.append(hot)
    by_zoom: dict[int, int] = {}
    for t in chosen:
        by_zoom[t.z] = by_zoom.get(t.z, 0) + 1
    return Workload(layer_id, chosen, requests, warmup, dict(sorted(by_zoom.items())))


# ---------------------------------------------------------------- measurement


@dataclass
class Rec:
    tile: TileRequest
    ms: float
    status: int = 0
    size: int = 0  # decompressed bytes
    wire: int = 0  # bytes on the wire
    error: str | None = None


@dataclass
class Run:
    server: str
    layer: str
    wall: float
    recs: list[Rec]
    gzip: int = 0
    client_cpu: float = 0.0  # CPU seconds of this benchmark process during the timed pass
    errors: list[str] = field(default_factory=list)

    @property
    def done(self) -> list[Rec]:
        return [r for r in self.recs if r.error is None]

    def tps(self) -> float:
        return len(self.done) / self.wall if self.wall > 0 else 0.0

    def pct(self, q: float) -> float:
        ms = sorted(r.ms for r in self.done)
        return ms[max(0, math.ceil(q * len(ms)) - 1)] if ms else float("nan")

    def biggest(self) -> Rec | None:
        return max(self.done, key=lambda r: r.size, default=None)


async def _http_pass(
    base: str, paths: list[tuple[TileRequest, str]], concurrency: int, limit_s: float
) -> tuple[float, float, list[Rec], int]:
    recs: list[Rec | None] = [None] * len(paths)
    gz = 0
    # bodies stay compressed while timed: the client's gunzip would only take CPU from the
    # servers on these two cores; sizes are worked out after the pass
    conns = [
        Connection(base, headers={"Accept-Encoding": "gzip"}, decode=False)
        for _ in range(concurrency)
    ]
    bodies: dict[int, bytes] = {}
    todo = iter(range(len(paths)))
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    stop = t0 + limit_s

    async def worker(client: Connection) -> None:
        nonlocal gz
        for i in todo:
            tile, path = paths[i]
            if time.perf_counter() > stop:
                recs[i] = Rec(tile, 0.0, error=f"not sent: pass exceeded {limit_s:.0f} s")
                continue
            t = time.perf_counter()
            try:
                r = await client.request("GET", path)
            except HTTPError as exc:
                recs[i] = Rec(tile, (time.perf_counter() - t) * 1000, error=str(exc))
                continue
            ms = (time.perf_counter() - t) * 1000
            gzipped = r.headers.get("content-encoding", "") == "gzip"
            gz += gzipped
            if gzipped:
                bodies[i] = r.body
            err = None if r.status in (200, 204) else (f"{path}: HTTP {r.status} {r.body[:200]!r}")
            recs[i] = Rec(tile, ms, r.status, len(r.body), r.wire, err)

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        for c in conns:
            await c.close()
    for i, body in bodies.items():
        recs[i].size = len(zlib.decompress(body, 16 + zlib.MAX_WBITS))
    return wall, cpu, [r for r in recs if r is not None], gz


def http_run(
    server: str,
    base: str,
    wl: Workload,
    url_of: Callable[[str, TileRequest], str],
    concurrency: int,
    limit_s: float,
) -> Run:
    warm = [(t, url_of(wl.layer, t)) for t in wl.warmup]
    http_client.run(_http_pass(base, warm, concurrency, limit_s))
    paths = [(t, url_of(wl.layer, t)) for t in wl.requests]
    wall, cpu, recs, gz = http_client.run(_http_pass(base, paths, concurrency, limit_s))
    run = Run(server, wl.layer, wall, recs, gz, cpu)
    run.errors = [r.error for r in run.recs if r.error]
    return run


def merge_runs(into: Run | None, run: Run) -> Run:
    """Passes of one server over one workload, added up."""
    if into is None:
        return run
    into.wall += run.wall
    into.client_cpu += run.client_cpu
    into.gzip += run.gzip
    into.recs += run.recs
    into.errors += run.errors
    return into


def floor_run(dsn: str, wl: Workload, threads: int, limit_s: float) -> Run:
    """cimtwin's statements straight to PostgreSQL, ``threads`` connections, no HTTP."""
    layer = BY_ID[wl.layer]

    def one_pass(tiles: list[TileRequest]) -> tuple[float, float, list[Rec]]:
        queries = [layer_query(layer, t, MAX_FEATURES) for t in tiles]
        recs: list[Rec | None] = [None] * len(tiles)
        todo = iter(range(len(tiles)))
        lock = threading.Lock()
        conns = [psycopg.connect(dsn, autocommit=True) for _ in range(threads)]
        try:
            for c in conns:
                c.execute("SET statement_timeout = 15000")
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            stop = t0 + limit_s

            def work(conn: psycopg.Connection) -> None:
                while True:
                    with lock:
                        i = next(todo, None)
                    if i is None:
                        return
                    if time.perf_counter() > stop:
                        recs[i] = Rec(tiles[i], 0.0, error=f"not run: pass over {limit_s:.0f} s")
                        continue
                    t = time.perf_counter()
                    q = queries[i]
                    try:
                        row = (
                            conn.execute(q[0], q[1], prepare=True, binary=True).fetchone()
                            if q
                            else None
                        )
                    except psycopg.Error as exc:
                        recs[i] = Rec(
                            tiles[i],
                            (time.perf_counter() - t) * 1000,
                            error=f"{tiles[i]}: {type(exc).__name__}: {exc}",
                        )
                        continue
                    size = len(row[0]) if row and row[0] else 0
                    recs[i] = Rec(tiles[i], (time.perf_counter() - t) * 1000, 200, size, size)

            workers = [threading.Thread(target=work, args=(c,)) for c in conns]
            for w in workers:
                w.start()
            for w in workers:
                w.join(limit_s + 120)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
        finally:
            for c in conns:
                c.close()
        return wall, cpu, [r for r in recs if r is not None]

    one_pass(wl.warmup)
    wall, cpu, recs = one_pass(wl.requests)
    run = Run(f"raw SQL floor ({threads} conns)", wl.layer, wall, recs, client_cpu=cpu)
    run.errors = [r.error for r in recs if r.error]
    if len(recs) < len(wl.requests):
        run.errors.append(f"{len(wl.requests) - len(recs)} statements never finished")
    return run


# ---------------------------------------------------------------- servers


@contextlib.contextmanager
def private_redis(log: Path) -> Iterator[str]:
    """A throw-away redis-server on a free loopback port (no persistence), for the shared
    tile cache pass; its URL."""
    import redis

    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            client = redis.Redis(host=HOST, port=port, socket_timeout=1)
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"redis-server did not start; see {log}")
                time.sleep(0.1)
            yield f"redis://{HOST}:{port}/0"
        finally:
            stop_process(proc)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """The environment without any earlier CIMTWIN_/TIPG_/database settings or proxies."""
    drop = (
        "CIMTWIN_",
        "TIPG_",
        "POSTGRES_",
        "DATABASE_URL",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    )
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


@contextlib.contextmanager
def server(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    cwd: Path,
    port: int,
    ready_paths: list[str],
    log: Path,
    timeout_s: float = 90.0,
) -> Iterator[str]:
    """Start one server in its own session, wait until ``ready_paths`` answer 200, yield its
    base URL; then terminate it (SIGKILL to its process group after a grace period)."""
    base = f"http://{HOST}:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout_s
            pending = list(ready_paths)
            with httpx.Client(base_url=base, timeout=5.0, trust_env=False) as client:
                while pending:
                    if proc.poll() is not None:
                        raise SystemExit(
                            f"{name} exited with {proc.returncode}:\n"
                            + log.read_text(errors="replace")[-3000:]
                        )
                    if time.monotonic() > deadline:
                        raise SystemExit(
                            f"{name} not ready after {timeout_s:.0f} s:\n"
                            + log.read_text(errors="replace")[-3000:]
                        )
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(pending[0]).status_code == 200:
                            pending.pop(0)
                            continue
                    time.sleep(0.5)
            yield base
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # uvicorn's worker processes live in the same (new) session as their manager
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 0)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)


def tipg_version(python: Path) -> str | None:
    if not python.exists():
        return None
    r = subprocess.run(
        [str(python), "-c", "import tipg; print(tipg.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_tipg() -> Path:
    """tipg in its own venv under benchmarks/.peers/tipg, from the pinned requirements."""
    python = PEER_VENV / "bin" / "python"
    if tipg_version(python) == TIPG_VERSION:
        return PEER_VENV
    print(f"installing tipg {TIPG_VERSION} into {PEER_VENV.relative_to(ROOT)} ...", flush=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(PEER_VENV)],
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(PEER_REQUIREMENTS),
        ],
    ]
    for cmd in steps:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            sys.exit(f"tipg install timed out: {' '.join(cmd)}")
        if r.returncode != 0:
            sys.exit(
                f"tipg install failed ({r.returncode}): {' '.join(cmd)}\n"
                f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
            )
    got = tipg_version(python)
    if got != TIPG_VERSION:
        sys.exit(f"tipg install gave version {got!r}, expected {TIPG_VERSION}")
    return PEER_VENV


def tipg_url(layer_id: str, t: TileRequest) -> str:
    """OGC API Tiles path of tipg 1.6.1; the layer's low-zoom generalisation as a CQL2 filter
    so tipg selects the same features cimtwin does."""
    path = f"/collections/{COPY_SCHEMA}.{layer_id}/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}"
    cond = zoom_filter(BY_ID[layer_id], t.z)
    return f"{path}?{urlencode({'filter': cond, 'filter-lang': 'cql2-text'})}" if cond else path


def cimtwin_url(layer_id: str, t: TileRequest) -> str:
    return f"/tiles/{layer_id}/{t.z}/{t.x}/{t.y}.mvt"


def check_tile(name: str, base: str, path: str) -> int:
    """One tile must answer 200 with content before anything is measured."""
    with httpx.Client(base_url=base, timeout=60.0, trust_env=False) as client:
        r = client.get(path, headers={"Accept-Encoding": "gzip"})
    if r.status_code != 200 or not r.content:
        sys.exit(
            f"{name}: {path} answered {r.status_code} with {len(r.content)} bytes; "
            f"expected 200 with a non-empty tile:\n{r.text[:1000]}"
        )
    return len(r.content)


# ---------------------------------------------------------------- report


def kb(n: float) -> str:
    return f"{n / 1024:,.1f}"


def print_table(runs: list[Run]) -> None:
    print(
        f"{'server':<26}{'layer':<12}{'requests':>9}{'tiles/s':>9}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'max tile KB':>13}{'errors':>8}"
    )
    for r in runs:
        big = r.biggest()
        print(
            f"{r.server:<26}{r.layer:<12}{len(r.recs):>9,}{r.tps():>9,.1f}{r.pct(0.5):>9.1f}"
            f"{r.pct(0.99):>9.1f}{kb(big.size if big else 0):>13}{len(r.errors):>8}"
        )


def print_zooms(layer: str, runs: list[Run]) -> None:
    """Per zoom: median latency and largest tile of each server (decompressed)."""
    zooms = sorted({rec.tile.z for rec in runs[0].recs})
    heads = "".join(f"{_short(r.server):>22}" for r in runs)
    print(f"  {layer}: p50 ms / max KB per zoom{'':<3}{heads}")
    for z in zooms:
        cells = []
        n = 0
        for r in runs:
            recs = [x for x in r.done if x.tile.z == z]
            n = max(n, len(recs))
            ms = sorted(x.ms for x in recs)
            p50 = ms[max(0, math.ceil(0.5 * len(ms)) - 1)] if ms else float("nan")
            top = max((x.size for x in recs), default=0)
            cells.append(f"{p50:>11.1f} /{kb(top):>8}")
        print(f"    z{z:<3}{n:>6,} requests{'':<12}" + "".join(f"{c:>22}" for c in cells))


def _short(name: str) -> str:
    return name.split(" (")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=2000, help="distinct tiles per layer")
    ap.add_argument("--concurrency", type=int, default=8, help="HTTP requests in flight")
    ap.add_argument(
        "--layers",
        default=",".join(LAYER_CHOICES),
        help=f"comma-separated, among {', '.join(LAYER_CHOICES)}",
    )
    ap.add_argument(
        "--reuse", action="store_true", help=f"keep {DB_NAME} when it already holds the data"
    )
    ap.add_argument("--drop", action="store_true", help="drop the scratch database at the end")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed passes over the request list per server (the floor too), "
        "for steadier figures; cimtwin with its cache on makes one pass, as "
        "later ones would be cache hits (default 3)",
    )
    ap.add_argument(
        "--cimtwin-env",
        action="append",
        default=[],
        metavar="CIMTWIN_X=V",
        help="extra setting for the cimtwin servers (repeatable), e.g. "
        "CIMTWIN_TILE_DB_CONCURRENCY=1; defaults otherwise",
    )
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated subset of tipg,off,on,redis,floor to run (default: "
        "all; redis when redis-server is installed; ratios need tipg, off and "
        "floor)",
    )
    ap.add_argument(
        "--time-limit",
        type=float,
        default=600.0,
        help="seconds per timed pass; requests not sent by then count as errors",
    )
    args = ap.parse_args()
    layers = [x.strip() for x in args.layers.split(",") if x.strip()]
    if not layers or any(x not in LAYER_CHOICES for x in layers):
        ap.error(f"--layers: choose among {', '.join(LAYER_CHOICES)}")
    if (
        not 1 <= args.tiles <= 20000
        or not 1 <= args.concurrency <= 64
        or not 1 <= args.repeat <= 20
    ):
        ap.error("--tiles must be 1..20000, --concurrency 1..64 and --repeat 1..20")

    url = sqlalchemy_url().set(database=DB_NAME).render_as_string(hide_password=False)
    dsn = libpq_dsn(url)
    pg_url = sqlalchemy_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    peer = ensure_tipg()
    ignored = (
        subprocess.run(
            ["git", "check-ignore", "-q", str(peer)], cwd=ROOT, capture_output=True, timeout=30
        ).returncode
        == 0
    )
    prepare_database(url, layers, args.reuse)
    print(
        f"EPSG:4326 copy for tipg (tipg {TIPG_VERSION} answers empty tiles and empty bbox "
        f"queries for EPSG:4547 and EPSG:3857 tables): schema {COPY_SCHEMA}",
        flush=True,
    )
    kinds = build_4326_copy(dsn, layers)
    prewarm(dsn, layers)

    hot_xyz = WEB_MERCATOR.tile(*STATION, HOT_ZOOM)
    hot = TileRequest(hot_xyz.z, hot_xyz.x, hot_xyz.y)
    workloads = [build_workload(dsn, layer, args.tiles, hot) for layer in layers]
    for wl in workloads:
        zooms = ", ".join(f"z{z}: {n}" for z, n in wl.by_zoom.items())
        print(
            f"workload {wl.layer}: {len(wl.tiles):,} distinct tiles ({zooms}) + hot tile "
            f"{hot.z}/{hot.x}/{hot.y} every {HOT_EVERY}th request = {len(wl.requests):,} "
            f"requests; warm-up {len(wl.warmup)} other tiles",
            flush=True,
        )

    logs = ROOT / "benchmarks" / ".peers" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    extra_env = dict(kv.split("=", 1) for kv in args.cimtwin_env if "=" in kv)
    if len(extra_env) != len(args.cimtwin_env) or any(
        not k.startswith("CIMTWIN_") for k in extra_env
    ):
        ap.error("--cimtwin-env takes CIMTWIN_NAME=VALUE")
    if extra_env:
        print("cimtwin settings: " + ", ".join(f"{k}={v}" for k, v in extra_env.items()))
    only = {x.strip() for x in args.only.split(",") if x.strip()} or {
        "tipg",
        "off",
        "on",
        "floor",
        *(["redis"] if shutil.which("redis-server") else []),
    }

    # every server runs for the whole benchmark and the passes take turns round by round, so
    # that drift in the machine's speed (other tenants, turbo, page cache) falls on all alike
    targets: dict[str, tuple[str, Callable[[str, TileRequest], str]]] = {}
    with contextlib.ExitStack() as stack:
        if "tipg" in only:
            port = free_port()
            name = f"tipg {TIPG_VERSION} (4326 copy)"
            env = {
                **clean_env(),
                "DATABASE_URL": pg_url,
                "TIPG_DB_SCHEMAS": f'["{COPY_SCHEMA}"]',
                "TIPG_MAX_FEATURES_PER_TILE": str(MAX_FEATURES),
                "TIPG_TILE_BUFFER": str(BUFFER),
            }
            cmd = [
                str(peer / "bin" / "uvicorn"),
                "tipg.main:app",
                "--workers",
                "2",
                "--host",
                HOST,
                "--port",
                str(port),
            ]
            ready = ["/healthz", *(f"/collections/{COPY_SCHEMA}.{x}" for x in layers)]
            print(f"starting {name} on port {port} ...", flush=True)
            base = stack.enter_context(server(name, cmd, env, peer, port, ready, logs / "tipg.log"))
            targets[name] = (base, tipg_url)
        configs = [("cimtwin cache off", {"CIMTWIN_TILE_CACHE_MB": "0"}), ("cimtwin cache on", {})]
        if "redis" in only:
            redis_url = stack.enter_context(private_redis(logs / "redis.log"))
            configs.append(("cimtwin cache redis", {"CIMTWIN_TILE_CACHE_URL": redis_url}))
        for label, cache_env in configs:
            if label.split()[-1] not in only:
                continue
            env = {
                **clean_env(),
                "CIMTWIN_DATABASE_URL": url,
                "CIMTWIN_TILE_MAX_FEATURES": str(MAX_FEATURES),
                **extra_env,
                **cache_env,
            }
            port = free_port()
            cmd = [str(CIMTWIN), "serve", "--workers", "2", "--host", HOST, "--port", str(port)]
            print(f"starting {label} on port {port} ...", flush=True)
            log = logs / f"cimtwin-cache-{label.split()[-1]}.log"
            targets[label] = (
                stack.enter_context(server(label, cmd, env, ROOT, port, ["/healthz"], log)),
                cimtwin_url,
            )
        for label, (base, url_of) in targets.items():
            for wl in workloads:
                n = check_tile(label, base, url_of(wl.layer, hot))
                print(f"  check {label}: {url_of(wl.layer, hot)} -> 200, {n:,} bytes", flush=True)

        threads = sorted({2, 4, args.concurrency}) if "floor" in only else []
        if threads:
            print(
                "raw SQL floor: cimtwin's layer_query statements over "
                f"{', '.join(map(str, threads))} connections (one thread each); the fastest "
                "counts",
                flush=True,
            )
        runs: list[Run] = []
        for wl in workloads:
            merged: dict[str, Run] = {}
            for rnd in range(args.repeat):
                for label, (base, url_of) in targets.items():
                    if label.startswith(("cimtwin cache on", "cimtwin cache redis")) and rnd:
                        continue  # later passes would be cache hits
                    merged[label] = merge_runs(
                        merged.get(label),
                        http_run(label, base, wl, url_of, args.concurrency, args.time_limit),
                    )
                for n in threads:
                    key = f"floor {n}"
                    merged[key] = merge_runs(
                        merged.get(key), floor_run(dsn, wl, n, args.time_limit)
                    )
                print(
                    f"  {wl.layer} round {rnd + 1}/{args.repeat}: "
                    + ", ".join(f"{_short(r.server)} {r.tps():,.0f}" for r in merged.values())
                    + " tiles/s so far",
                    flush=True,
                )
            floors = [merged.pop(f"floor {n}") for n in threads]
            for r in floors:
                print(f"  {wl.layer}, {r.server}: {r.tps():,.1f} tiles/s", flush=True)
            runs += merged.values()
            if floors:
                runs.append(max(floors, key=Run.tps))

    order = [
        "tipg",
        "cimtwin cache off",
        "cimtwin cache on",
        "cimtwin cache redis",
        "raw SQL floor",
    ]
    runs.sort(
        key=lambda r: (
            layers.index(r.layer),
            next(i for i, o in enumerate(order) if r.server.startswith(o)),
        )
    )
    print()
    print(
        f"tipg serves {COPY_SCHEMA}.* (EPSG:4326, 2D copy of the same rows: "
        + ", ".join(f"{k} geometry({v},4326)" for k, v in kinds.items())
        + f"); cimtwin serves cim.* (EPSG:4547). max features per tile {MAX_FEATURES:,} "
        f"and tile buffer {BUFFER} px on both; {args.concurrency} requests in flight, "
        "Accept-Encoding: gzip; 2 workers each."
    )
    print_table(runs)
    print()

    def find(prefix: str, layer: str | None) -> list[Run]:
        return [r for r in runs if r.server.startswith(prefix) and layer in (None, r.layer)]

    def tps(rs: list[Run]) -> float:
        wall = sum(r.wall for r in rs)
        return sum(len(r.done) for r in rs) / wall if wall else 0.0

    for layer in [*layers, None]:
        what = layer or "all layers"
        t_tipg, t_off, t_floor = (
            tps(find(p, layer)) for p in ("tipg", "cimtwin cache off", "raw SQL floor")
        )
        ratio = t_off / t_tipg if t_tipg else float("nan")
        over = (t_floor / t_off - 1) * 100 if t_off else float("nan")
        print(
            f"{what:<11} cimtwin uncached / tipg = {ratio:5.2f} (target >= 1.5)   "
            f"cimtwin overhead over the floor = {over:5.1f} % (target <= 25 %)"
        )
    print()

    for prefix in ("cimtwin cache off", "tipg"):
        for r in find(prefix, None):
            b = r.biggest()
            if b:
                big = sum(1 for x in r.done if x.size > BIG_TILE_KB * 1024)
                print(
                    f"largest {_short(r.server)} {r.layer} tile: {b.tile.z}/{b.tile.x}/"
                    f"{b.tile.y} {kb(b.size)} KB ({kb(b.wire)} KB gzip); tiles > "
                    f"{BIG_TILE_KB} KB: {big}"
                )
    off = [x for r in find("cimtwin cache off", None) for x in r.done]
    top = max(off, key=lambda x: x.size, default=None)
    if top:
        verdict = "ok" if top.size <= BIG_TILE_KB * 1024 else "OVER TARGET"
        print(
            f"largest cimtwin tile in the list: {top.tile.z}/{top.tile.x}/{top.tile.y} "
            f"{kb(top.size)} KB (target: none > {BIG_TILE_KB} KB: {verdict})"
        )
    print()

    for wl in workloads:
        print_zooms(wl.layer, [r for r in runs if r.layer == wl.layer])
    for wl in workloads:
        by_server = {r.server: r for r in runs if r.layer == wl.layer}
        notes = []
        for r in by_server.values():
            non_empty = sum(1 for x in r.done if x.size > 0)
            mb = sum(x.wire for x in r.done) / 2**20
            gz = f", gzip {r.gzip}/{non_empty}" if not r.server.startswith("raw") else ""
            notes.append(
                f"{_short(r.server)}: {non_empty:,} non-empty, {mb:,.1f} MB received{gz}, "
                f"client CPU {r.client_cpu:.1f} s in {r.wall:.1f} s"
            )
        print(f"  {wl.layer}: " + "; ".join(notes))
        off_run = next(
            (r for r in by_server.values() if r.server.startswith("cimtwin cache off")), None
        )
        floor = next((r for r in by_server.values() if r.server.startswith("raw SQL floor")), None)
        if off_run is None or floor is None:
            continue
        sizes = {x.tile: x.size for x in floor.done}
        same = sum(1 for x in off_run.done if sizes.get(x.tile) == x.size)
        print(
            f"  {wl.layer}: cimtwin tile sizes equal to the floor's for {same:,}/"
            f"{len(off_run.done):,} requests"
        )
    print(
        "the floor has no HTTP, no gzip and no client: the overhead includes all three "
        "(the client shares the 2 cores with the servers); its p50/p99 are at the statements "
        f"in flight named above, the servers' at {args.concurrency} requests in flight "
        "(queueing included)"
    )

    errors = [e for r in runs for e in r.errors]
    print(f"errors: {len(errors)}")
    for r in runs:
        for e in r.errors[:10]:
            print(f"  {r.server} {r.layer}: {e}")
    if not ignored:
        print(
            f"note: {peer.relative_to(ROOT)} is not git-ignored; add benchmarks/.peers/ to "
            ".gitignore"
        )
    if args.drop:
        bootstrap.drop_database(url)
        print(f"dropped {DB_NAME}")
    else:
        print(f"kept database {DB_NAME} (rerun with --reuse, or --drop to remove it)")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()

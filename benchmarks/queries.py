"""Use-case query latency under load: 20 concurrent clients against `cimtwin serve`.

Loads the district-scale data (benchmarks/data/district) into the scratch database
``cimtwin_bench_q`` (layers already there are skipped), starts the API with two workers on a
free loopback port, and runs concurrent HTTP clients over a mix of endpoints for a while:
grid locate, grid summary, district summary, parcel report, incident context, OGC features
items, a vector tile, and the pipeline isolation / trace endpoints when the service has them.
Prints p50 / p99 per endpoint and requests per second, against the targets: p99 < 100 ms for
lookups and summaries, < 500 ms for network analyses.

    .venv/bin/python benchmarks/queries.py [--seconds 60] [--clients 20] [--workers 2]

Only loopback traffic; every loop is bounded by time and by a request cap.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import http_client  # noqa: E402
from benchmarks.api_server import stop_server, wait_until_healthy  # noqa: E402
from benchmarks.http_client import Connection, HTTPError  # noqa: E402
from cimtwin.db import bootstrap, migrate  # noqa: E402
from cimtwin.db.engine import libpq_dsn, sqlalchemy_url  # noqa: E402

CIMTWIN = str(ROOT / ".venv" / "bin" / "cimtwin")
DB_NAME = "cimtwin_bench_q"
LOOKUP, ANALYSIS = "lookup/summary", "network analysis"
TARGET_MS = {LOOKUP: 100.0, ANALYSIS: 500.0}
MAX_REQUESTS = 5_000_000
SAMPLES = 300


@dataclass
class Endpoint:
    name: str
    kind: str
    weight: float
    make: Any  # () -> (method, url, kwargs)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))


# --- database and parameters ----------------------------------------------------------------


def database_url(name: str) -> str:
    """The service's database URL with the database name replaced by ``name``."""
    return sqlalchemy_url().set(database=name).render_as_string(hide_password=False)


def prepare_database(url: str, data: Path, load: bool) -> None:
    bootstrap.create_database(url)
    bootstrap.create_extensions(url)
    migrate.upgrade(url)
    if load:
        load_district(url, data)
    analyze_unanalyzed(url)


def analyze_unanalyzed(url: str) -> None:
    """ANALYZE the twin's tables that have no statistics yet. A server without autovacuum
    (this one) never gathers them after a bulk load, and without them the planner walks the
    whole network index for every building of an isolation (28 ms of database CPU per
    request instead of 6): the benchmark would measure missing statistics, not the service."""
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        tables = conn.execute(
            "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables "
            "WHERE schemaname = 'cim' AND last_analyze IS NULL AND last_autoanalyze IS NULL "
            "AND n_live_tup > 0"
        ).fetchall()
        if tables:
            print(f"analysing {len(tables)} tables without statistics ...", flush=True)
        for (name,) in tables:
            conn.execute(f"ANALYZE {name}")  # names from the catalogue, quoted by format()


def load_district(url: str, data: Path) -> None:
    if not (data / "manifest.json").exists():
        print(f"generating the district sample into {data} ...", flush=True)
        subprocess.run(
            [CIMTWIN, "samples", "generate", str(data), "--scale", "district"], check=True
        )
    print(f"loading {data} (unchanged layers are skipped) ...", flush=True)
    t0 = time.perf_counter()
    subprocess.run(
        [CIMTWIN, "samples", "load", str(data)],
        check=True,
        env={**os.environ, "CIMTWIN_DATABASE_URL": url},
        stdout=subprocess.DEVNULL,
    )
    print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)


def pick_parameters(url: str, seed: int) -> dict[str, list]:
    """Random but repeatable request parameters from the loaded data."""
    with psycopg.connect(libpq_dsn(url)) as conn:
        conn.execute("SELECT setseed(%s)", (seed / 2**31,))

        def col(sql: str) -> list:
            return [r if len(r) > 1 else r[0] for r in conn.execute(sql).fetchall()]

        p = {
            "points": col(f"""
                SELECT ST_X(p), ST_Y(p) FROM (
                  SELECT ST_Transform(ST_PointOnSurface(geom), 4490) p
                  FROM cim.work_grid ORDER BY random() LIMIT {SAMPLES}) s"""),
            "grids": col(f"SELECT code FROM cim.work_grid ORDER BY random() LIMIT {SAMPLES}"),
            "districts": col("SELECT slug FROM cim.district ORDER BY slug"),
            "parcels": col(f"SELECT id FROM cim.parcel ORDER BY random() LIMIT {SAMPLES}"),
            "incidents": col(f"SELECT id FROM cim.incident ORDER BY random() LIMIT {SAMPLES}"),
            "segments": col(f"""SELECT id FROM cim.pipeline_segment WHERE network = 'JS'
                                ORDER BY random() LIMIT {SAMPLES}"""),
            "drain_nodes": col(f"""SELECT id FROM cim.pipeline_node WHERE network = 'PS'
                                   ORDER BY random() LIMIT {SAMPLES}"""),
        }
    if not p["grids"]:
        sys.exit("the database holds no work grids: run without --no-load")
    return p


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 1 << z
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return z, x, y


# --- endpoints ------------------------------------------------------------------------------


def endpoints(p: dict[str, list], rng: random.Random) -> list[Endpoint]:
    def point() -> tuple[float, float]:
        return rng.choice(p["points"])

    def locate():
        lon, lat = point()
        return "GET", "/grids/locate", {"params": {"lon": lon, "lat": lat}}

    def features():
        lon, lat = point()
        bbox = f"{lon - 0.002},{lat - 0.002},{lon + 0.002},{lat + 0.002}"
        return "GET", "/collections/buildings/items", {"params": {"bbox": bbox, "limit": 100}}

    def tile():
        z, x, y = tile_of(*point(), 16)
        return "GET", f"/tiles/buildings,pipelines/{z}/{x}/{y}.mvt", {}

    return [
        Endpoint("grid locate", LOOKUP, 2, locate),
        Endpoint(
            "grid summary", LOOKUP, 2, lambda: ("GET", f"/grids/{rng.choice(p['grids'])}", {})
        ),
        Endpoint(
            "district summary",
            LOOKUP,
            1,
            lambda: ("GET", f"/districts/{rng.choice(p['districts'])}", {}),
        ),
        Endpoint(
            "parcel report",
            LOOKUP,
            2,
            lambda: ("GET", f"/parcels/{rng.choice(p['parcels'])}/report", {}),
        ),
        Endpoint("features items", LOOKUP, 2, features),
        Endpoint("tile", LOOKUP, 2, tile),
        Endpoint(
            "incident context",
            ANALYSIS,
            1,
            lambda: ("GET", f"/incidents/{rng.choice(p['incidents'])}/context", {}),
        ),
    ]


async def pipeline_endpoints(
    client: Connection, p: dict[str, list], rng: random.Random
) -> list[Endpoint]:
    """POST /pipelines/isolation (a water pipe bursts) and /pipelines/trace (downstream from a
    drainage point), when the service answers them (probed once)."""
    cases = [
        (
            "pipeline isolation",
            "/pipelines/isolation",
            lambda: {"segment_id": rng.choice(p["segments"]), "max_features": 100},
        ),
        (
            "pipeline trace",
            "/pipelines/trace",
            lambda: {
                "network": "PS",
                "start": {"node_id": rng.choice(p["drain_nodes"])},
                "direction": "downstream",
                "max_features": 100,
            },
        ),
    ]
    found = []
    for name, path, body in cases:
        try:
            r = await client.request("POST", path, json=body())
        except HTTPError as exc:
            print(f"  {path}: {exc.__class__.__name__}, left out")
            continue
        if r.status != 200:
            print(f"  {path}: answered {r.status}, left out")
            continue

        def make(path=path, body=body):
            return "POST", path, {"json": body()}

        found.append(Endpoint(name, ANALYSIS, 1, make))
    return found


# --- load -----------------------------------------------------------------------------------


async def client_loop(
    client: Connection,
    mix: list[Endpoint],
    weights: list[float],
    rng: random.Random,
    deadline: float,
    record: bool,
    budget: list[int],
) -> None:
    while time.perf_counter() < deadline and budget[0] > 0:
        budget[0] -= 1
        ep = rng.choices(mix, weights)[0]
        method, url, kw = ep.make()
        t0 = time.perf_counter()
        try:
            status = (await client.request(method, url, **kw)).status
        except HTTPError:
            status = 0
        ms = (time.perf_counter() - t0) * 1000
        if not record:
            continue
        ep.statuses[status] += 1
        if status == 200:
            ep.latencies.append(ms)
        else:
            ep.errors += 1


async def run_load(base: str, p: dict[str, list], args: argparse.Namespace) -> float:
    rng = random.Random(args.seed)
    conns = [Connection(base, timeout=30) for _ in range(args.clients)]
    try:
        mix = endpoints(p, rng)
        if not args.no_pipelines:
            mix += await pipeline_endpoints(conns[0], p, rng)
        weights = [e.weight for e in mix]
        budget = [MAX_REQUESTS]
        print(f"warming up {args.warmup:.0f} s ...", flush=True)
        end = time.perf_counter() + args.warmup
        await asyncio.gather(
            *(
                client_loop(c, mix, weights, random.Random(i), end, False, budget)
                for i, c in enumerate(conns)
            )
        )
        if args.baseline:
            print(
                f"one client, {args.baseline} requests per endpoint (service time, no "
                "queueing) ...",
                flush=True,
            )
            await baseline(conns[0], mix, args.baseline)
        print(f"{args.clients} clients for {args.seconds:.0f} s ...", flush=True)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        end = t0 + args.seconds
        await asyncio.gather(
            *(
                client_loop(c, mix, weights, random.Random(args.seed + i), end, True, budget)
                for i, c in enumerate(conns)
            )
        )
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        for c in conns:
            await c.close()
    report(mix, wall)
    print(
        f"load generator CPU: {cpu:.1f} s in {wall:.1f} s ({cpu / wall * 50:.0f} % of the 2 cores)"
    )
    return wall


async def baseline(client: Connection, mix: list[Endpoint], n: int) -> None:
    print(f"{'endpoint':<20} {'p50 ms':>8} {'p99 ms':>8}")
    for e in mix:
        lat = []
        for _ in range(n):
            method, url, kw = e.make()
            t0 = time.perf_counter()
            r = await client.request(method, url, **kw)
            if r.status == 200:
                lat.append((time.perf_counter() - t0) * 1000)
        print(f"{e.name:<20} {pct(lat, 0.5):>8.1f} {pct(lat, 0.99):>8.1f}")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def report(mix: list[Endpoint], wall: float) -> None:
    total = sum(len(e.latencies) + e.errors for e in mix)
    print(
        f"\n{'endpoint':<20} {'class':<17} {'requests':>8} {'errors':>6} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8} {'req/s':>7}  target"
    )
    failed = []
    for e in mix:
        n = len(e.latencies)
        p50, p99 = pct(e.latencies, 0.5), pct(e.latencies, 0.99)
        target = TARGET_MS[e.kind]
        ok = n > 0 and p99 < target and e.errors == 0
        if not ok:
            failed.append(e.name)
        print(
            f"{e.name:<20} {e.kind:<17} {n:>8} {e.errors:>6} {p50:>8.1f} {p99:>8.1f} "
            f"{max(e.latencies, default=float('nan')):>8.1f} {n / wall:>7.1f}  "
            f"p99 < {target:.0f} ms {'ok' if ok else 'MISSED'}"
        )
        if e.errors:
            print(f"{'':<20} statuses: {dict(e.statuses)}")
    print(f"\ntotal {total} requests in {wall:.1f} s: {total / wall:.1f} requests/s")
    print("all targets met" if not failed else f"targets missed: {', '.join(failed)}")


# --- server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: str, port: int, workers: int) -> subprocess.Popen:
    # the code of this checkout, not whatever the shared virtualenv has installed
    path = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x)
    env = {**os.environ, "CIMTWIN_DATABASE_URL": url, "PYTHONPATH": path}
    proc = subprocess.Popen(
        [CIMTWIN, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    return wait_until_healthy(proc, port)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measured run (default 60)")
    ap.add_argument("--warmup", type=float, default=5.0, help="unmeasured run before it")
    ap.add_argument(
        "--baseline",
        type=int,
        default=30,
        help="requests per endpoint from one client first (0: none)",
    )
    ap.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    ap.add_argument("--workers", type=int, default=2, help="API worker processes (default 2)")
    ap.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data" / "district")
    ap.add_argument(
        "--no-load",
        action="store_true",
        help="use what the database holds (skip `cimtwin samples load`)",
    )
    ap.add_argument(
        "--no-pipelines",
        action="store_true",
        help="leave the /pipelines/isolation and /pipelines/trace endpoints out",
    )
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--database", default=DB_NAME, help=f"scratch database (default {DB_NAME})")
    args = ap.parse_args()
    if not (
        0 < args.seconds <= 3600
        and 0 < args.clients <= 200
        and 0 <= args.warmup <= 600
        and 0 <= args.baseline <= 10_000
    ):
        sys.exit("--seconds 1..3600, --clients 1..200, --warmup 0..600, --baseline 0..10000")
    url = database_url(args.database)
    prepare_database(url, args.data, not args.no_load)
    params = pick_parameters(url, args.seed)
    port = free_port()
    print(f"starting `cimtwin serve --workers {args.workers}` on 127.0.0.1:{port} ...", flush=True)
    proc = start_server(url, port, args.workers)
    try:
        http_client.run(run_load(f"http://127.0.0.1:{port}", params, args))
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()

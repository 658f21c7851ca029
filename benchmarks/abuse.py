"""What abuse costs a running server: memory, answers, and the latency of everyone else.

Loads the committed North Station sample into the scratch database ``cimtwin_bench_abuse``
(unchanged layers are skipped), starts ``cimtwin serve`` from this checkout on a free loopback
port, and runs one abuse after another:

- oversized bodies: 8 MB JSON to a district volume query (over ``CIMTWIN_MAX_BODY_KB``; half
  of them chunked) and 70 MB to ``/grids/assign`` (over ``CIMTWIN_ASSIGN_MAX_BODY_MB``): 413s
  expected ("reset" when the server closed on unread body bytes before the 413 was read);
- 60 000 distinct empty tiles (below the rooms layer's zoom range): 204s, and the in-memory
  tile cache must stay within ``CIMTWIN_TILE_CACHE_MB``;
- 6 concurrent ~16 MB ``/grids/assign`` bulk requests (bulk slots, then 503 + Retry-After);
- 30 concurrent district volume queries with a 5 000-vertex polygon (analysis slots);
- a slowloris: 200 connections trickling their headers a byte a second (closed by the
  header deadline, ``CIMTWIN_HEADER_TIMEOUT_S``).

Throughout, one client asks for a few (cached) vector tiles every 10 ms: the route abuse must
not slow down. For each phase it prints the server's RSS before, at peak and after, the status
codes, and that probe's p50/p99.

    .venv/bin/python benchmarks/abuse.py [--quick] [--workers 1]

Only loopback traffic; every phase is bounded by a request count and by time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import http_client  # noqa: E402
from benchmarks.api_server import stop_server, wait_until_healthy  # noqa: E402
from benchmarks.http_client import Connection, HTTPError  # noqa: E402
from cimtwin.db import bootstrap, migrate  # noqa: E402
from cimtwin.db.engine import libpq_dsn, sqlalchemy_url  # noqa: E402

DB_NAME = "cimtwin_bench_abuse"
SAMPLE = ROOT / "data_samples" / "north_station"
SERVE = "import sys; sys.argv[0] = 'cimtwin'; from cimtwin.cli import main; main()"
STATION = (114.02389, 22.61194)
EMPTY_Z = 15  # the rooms layer starts at z16: every tile below is empty, no query


@dataclass
class Phase:
    name: str
    statuses: Counter = field(default_factory=Counter)
    probe_ms: list[float] = field(default_factory=list)
    probe_statuses: Counter = field(default_factory=Counter)
    rss_before: float = 0.0
    rss_peak: float = 0.0
    rss_after: float = 0.0
    wall: float = 0.0
    note: str = ""


# --- server and database --------------------------------------------------------------------


def prepare_database(url: str) -> None:
    bootstrap.create_database(url)
    bootstrap.create_extensions(url)
    migrate.upgrade(url)
    from cimtwin.samples.loader import load_sample

    print(f"loading {SAMPLE.name} into {DB_NAME} (unchanged layers are skipped) ...", flush=True)
    load_sample(SAMPLE, url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, port: int, args: argparse.Namespace) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CIMTWIN_DATABASE_URL": url,
        "CIMTWIN_ACCESS_LOG": "false",
        "CIMTWIN_TILE_CACHE_MB": str(args.tile_cache_mb),
        "CIMTWIN_HEADER_TIMEOUT_S": str(args.header_timeout),
    }
    cmd = [sys.executable, "-c", SERVE, "serve", "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--workers", str(args.workers)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return wait_until_healthy(proc, port)


def rss_mb(pid: int) -> float:
    """Summed RSS of the server process and its workers, MB."""
    try:
        top = psutil.Process(pid)
        procs = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**20


# --- request bodies -------------------------------------------------------------------------


def district_and_centre(url: str) -> tuple[str, float, float, float]:
    """A district's slug, a point inside it (lon, lat) and a radius (degrees) that stays in."""
    with psycopg.connect(libpq_dsn(url)) as conn:
        row = conn.execute(
            """SELECT slug, ST_X(c), ST_Y(c), sqrt(ST_Area(g)) / 4 FROM (
                 SELECT slug, ST_Transform(geom, 4326) g,
                        ST_Transform(ST_PointOnSurface(geom), 4326) c
                 FROM cim.district ORDER BY slug LIMIT 1) s"""
        ).fetchone()
    if row is None:
        sys.exit(f"{DB_NAME} holds no district")
    return str(row[0]), float(row[1]), float(row[2]), float(row[3])


def polygon_query(lon: float, lat: float, radius: float, vertices: int) -> bytes:
    ring = [
        [
            round(lon + radius * math.cos(2 * math.pi * i / vertices), 7),
            round(lat + radius * math.sin(2 * math.pi * i / vertices), 7),
        ]
        for i in range(vertices)
    ]
    ring.append(ring[0])
    body = {
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "elevation": {"from": -10, "to": 30},
        "limit": 100,
    }
    return json.dumps(body).encode()


def assign_body(lon: float, lat: float, megabytes: float) -> bytes:
    """``{"rows": [...]}`` of about ``megabytes``: positions around the district, padded."""
    row = '{"id":%d,"lon":%.6f,"lat":%.6f,"note":"abuse benchmark row padding text"}'
    parts, size, i = [], 0, 0
    while size < megabytes * 2**20:
        r = row % (i, lon + (i % 400) * 1e-5, lat + (i // 400 % 400) * 1e-5)
        parts.append(r)
        size += len(r) + 1
        i += 1
    return ('{"rows":[' + ",".join(parts) + "]}").encode()


async def send_body(
    host: str,
    port: int,
    path: str,
    body: bytes,
    chunked: bool = False,
    expect: bool = False,
    timeout: float = 180,
) -> int | str:
    """POST ``body`` on a fresh connection; the status, or what happened instead.

    As HTTP clients do, the body is held back for a moment after the headers: a server that
    refuses on ``Content-Length`` alone answers then, and its 413 is read before it closes
    (once it closes with unread body bytes, the kernel resets the connection and the answer
    is lost: "reset"). ``chunked`` sends the body without a length, so the server must count
    what it reads. ``expect`` sends ``Expect: 100-continue`` (as curl does for large bodies)
    and the body only on the server's 100, so an answer given before the body was read (a 503
    for want of a slot) reaches the client."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return "refused"
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    if expect:
        framing += "\r\nExpect: 100-continue"
    go = asyncio.Event()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"{framing}\r\nConnection: close\r\n\r\n"
    ).encode()

    async def write() -> None:
        try:
            writer.write(head)
            if expect:
                await go.wait()
            else:
                await asyncio.sleep(0.2)  # an answer on the headers alone comes now
            for i in range(0, len(body), 1 << 20):
                piece = body[i : i + (1 << 20)]
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
        except OSError:
            pass

    sender = asyncio.create_task(write())
    status: int | str
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if expect and line.startswith(b"HTTP/1.1 100"):
            while (await asyncio.wait_for(reader.readline(), timeout)).strip():
                pass
            go.set()
            line = await asyncio.wait_for(reader.readline(), timeout)
        status = int(line.split()[1]) if line.startswith(b"HTTP/1.") else "closed"
        while await asyncio.wait_for(reader.read(1 << 20), timeout):  # the rest, until close
            pass
    except TimeoutError:
        status = "no answer"
    except OSError:
        status = "reset"
    finally:
        sender.cancel()
        writer.close()
    return status


# --- the probe ------------------------------------------------------------------------------


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 1 << z
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return z, x, y


def probe_tiles() -> list[str]:
    z, x, y = tile_of(*STATION, 16)
    return [
        f"/tiles/buildings,pipelines/{z}/{x + dx}/{y + dy}.mvt"
        for dx in (-1, 0, 1)
        for dy in (-1, 0, 1)
    ]


def _probe_main(base: str, stop: Event, out: Queue) -> None:
    """The probe process: its own loop and CPU, so the load generator's work (building 16 MB
    bodies, 200 sockets) is not counted as the server's latency. Puts its samples on ``out``:
    (wall-clock time, ms, status) per request."""
    samples: list[tuple[float, float, int]] = []

    async def loop() -> None:
        conn = Connection(base, timeout=30)
        tiles = probe_tiles()
        i = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                status = (await conn.request("GET", tiles[i % len(tiles)])).status
            except HTTPError:
                status = 0
            samples.append((time.time(), (time.perf_counter() - t0) * 1000, status))
            i += 1
            await asyncio.sleep(0.01)
        await conn.close()

    http_client.run(loop())
    out.put(samples)


class Probe:
    """A process asking for cached tiles every 10 ms, and a thread sampling the server's RSS
    every 0.25 s; both are sliced into phases by wall-clock time afterwards."""

    def __init__(self, base: str, pid: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop, self.out = ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=_probe_main, args=(base, self.stop, self.out))
        self.pid = pid
        self.rss: list[tuple[float, float]] = []
        self._sampling = True
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self._sampling:
            self.rss.append((time.time(), rss_mb(self.pid)))
            time.sleep(0.25)

    def start(self) -> None:
        self.proc.start()
        self._thread.start()

    def finish(self, phases: list[tuple[Phase, float, float]]) -> None:
        """Stop, then give each phase (with its start and end time) its samples."""
        self.stop.set()
        samples = self.out.get(timeout=60)
        self.proc.join(30)
        self._sampling = False
        self._thread.join(5)
        for phase, t0, t1 in phases:
            for at, ms, status in samples:
                if t0 <= at <= t1:
                    phase.probe_statuses[status] += 1
                    if status in (200, 204):
                        phase.probe_ms.append(ms)
            inside = [mb for at, mb in self.rss if t0 <= at <= t1]
            phase.rss_peak = max([phase.rss_before, phase.rss_after, *inside])


# --- the abuses -----------------------------------------------------------------------------


async def oversized(host: str, port: int, phase: Phase, slug: str, n: int) -> None:
    big_json = b'{"elevation":{"from":0,"to":1},"x":"' + b"a" * (8 << 20) + b'"}'
    huge_assign = b'{"rows":[' + b'{"lon":114.02,"lat":22.61},' * ((70 << 20) // 26) + b"{}]}"
    query = f"/districts/{slug}/query"
    jobs = [send_body(host, port, query, big_json, chunked=i % 2 == 1) for i in range(n)]
    jobs += [send_body(host, port, "/grids/assign", huge_assign) for _ in range(2)]
    sem = asyncio.Semaphore(6)

    async def one(job: Coroutine[None, None, int | str]) -> None:
        async with sem:
            phase.statuses[await job] += 1

    await asyncio.gather(*(one(j) for j in jobs))


async def empty_tiles(base: str, phase: Phase, n: int, clients: int) -> None:
    conns = [Connection(base, timeout=30) for _ in range(clients)]
    counter = iter(range(n))

    async def loop(conn: Connection) -> None:
        for i in counter:
            x, y = 1000 + i % 1000, 1000 + i // 1000
            try:
                status = (await conn.request("GET", f"/tiles/rooms/{EMPTY_Z}/{x}/{y}.mvt")).status
            except HTTPError:
                status = 0
            phase.statuses[status] += 1

    try:
        await asyncio.gather(*(loop(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    health = httpx.get(f"{base}/healthz", timeout=10).json()
    phase.note = f"cache {health.get('tile_cache')}"


async def bulk_assigns(
    host: str, port: int, phase: Phase, lon: float, lat: float, n: int, mb: float
) -> None:
    body = await asyncio.to_thread(assign_body, lon, lat, mb)
    phase.note = f"{len(body) / 2**20:.1f} MB each"
    for status in await asyncio.gather(
        *(send_body(host, port, "/grids/assign", body, expect=True) for _ in range(n))
    ):
        phase.statuses[status] += 1


async def volume_queries(
    host: str, port: int, phase: Phase, slug: str, body: bytes, n: int
) -> None:
    for status in await asyncio.gather(
        *(send_body(host, port, f"/districts/{slug}/query", body, expect=True) for _ in range(n))
    ):
        phase.statuses[status] += 1


async def slowloris(host: str, port: int, phase: Phase, n: int, limit_s: float) -> None:
    """``n`` connections sending a request line and then a header a byte a second."""
    closed_after: list[float] = []

    async def one() -> None:
        t0 = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            phase.statuses["refused"] += 1
            return
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            while time.monotonic() - t0 < limit_s:
                try:
                    data = await asyncio.wait_for(reader.read(1024), 1.0)
                except TimeoutError:
                    writer.write(b"a")
                    continue
                if data.startswith(b"HTTP/1."):
                    phase.statuses[int(data.split()[1])] += 1
                else:
                    phase.statuses["closed by server"] += 1
                closed_after.append(time.monotonic() - t0)
                return
            phase.statuses["still open"] += 1
        except OSError:
            phase.statuses["closed by server"] += 1
            closed_after.append(time.monotonic() - t0)
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(n)))
    if closed_after:
        closed_after.sort()
        phase.note = (
            f"closed after {closed_after[len(closed_after) // 2]:.1f} s median, "
            f"{closed_after[-1]:.1f} s max"
        )


# --- run and report -------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


async def run(base: str, pid: int, url: str, args: argparse.Namespace) -> list[Phase]:
    host, port = "127.0.0.1", int(base.rsplit(":", 1)[1])
    slug, lon, lat, radius = district_and_centre(url)
    volume_body = polygon_query(lon, lat, radius, 5000)
    warm = Connection(base, timeout=30)
    for path in probe_tiles():  # the probe's tiles rendered and cached once
        await warm.request("GET", path)
    await warm.close()
    probe = Probe(base, pid)
    probe.start()
    await asyncio.sleep(2)  # the probe process is up
    quick = args.quick
    steps = [
        ("idle (probe alone)", lambda ph: asyncio.sleep(3 if quick else 5)),
        ("oversized bodies", lambda ph: oversized(host, port, ph, slug, 10 if quick else 30)),
        (
            f"{args.empty_tiles} empty tiles",
            lambda ph: empty_tiles(base, ph, args.empty_tiles, 6),
        ),
        ("6 bulk assigns", lambda ph: bulk_assigns(host, port, ph, lon, lat, 6, args.assign_mb)),
        ("30 volume queries", lambda ph: volume_queries(host, port, ph, slug, volume_body, 30)),
        (
            f"slowloris x{args.slowloris}",
            lambda ph: slowloris(host, port, ph, args.slowloris, args.header_timeout + 5),
        ),
    ]
    timed: list[tuple[Phase, float, float]] = []
    try:
        for name, step in steps:
            phase = Phase(name)
            phase.rss_before = rss_mb(pid)
            print(f"{name} ...", flush=True)
            t0, wall0 = time.time(), time.perf_counter()
            await step(phase)
            phase.wall = time.perf_counter() - wall0
            phase.rss_after = rss_mb(pid)
            timed.append((phase, t0, time.time()))
            await asyncio.sleep(1)
    finally:
        probe.finish(timed)
    return [phase for phase, _, _ in timed]


def fmt(counts: Counter) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])))


def report(phases: list[Phase]) -> None:
    print(
        f"\n{'phase':<22} {'wall s':>6} {'RSS MB before':>13} {'peak':>6} {'after':>6}  "
        f"{'probe p50':>9} {'p99 ms':>7}  statuses"
    )
    for p in phases:
        print(
            f"{p.name:<22} {p.wall:>6.1f} {p.rss_before:>13.0f} {p.rss_peak:>6.0f} "
            f"{p.rss_after:>6.0f}  {pct(p.probe_ms, 0.5):>9.1f} {pct(p.probe_ms, 0.99):>7.1f}  "
            f"{fmt(p.statuses) or '-'}"
        )
        bad = {k: v for k, v in p.probe_statuses.items() if k not in (200, 204)}
        extra = [p.note] if p.note else []
        if bad:
            extra.append(f"probe failures {fmt(Counter(bad))}")
        if extra:
            print(f"{'':<22} {'; '.join(extra)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests (about 2 minutes)")
    ap.add_argument("--workers", type=int, default=1, help="API worker processes (default 1)")
    ap.add_argument("--empty-tiles", type=int, default=None, help="default 60 000 (quick 20 000)")
    ap.add_argument("--assign-mb", type=float, default=16.5, help="size of each bulk body")
    ap.add_argument("--slowloris", type=int, default=200, help="half-open connections")
    ap.add_argument("--tile-cache-mb", type=int, default=16, help="CIMTWIN_TILE_CACHE_MB")
    ap.add_argument("--header-timeout", type=float, default=10, help="CIMTWIN_HEADER_TIMEOUT_S")
    ap.add_argument("--no-load", action="store_true", help="skip loading the sample")
    args = ap.parse_args()
    if args.empty_tiles is None:
        args.empty_tiles = 20_000 if args.quick else 60_000
    if not (
        1 <= args.workers <= 8
        and 1 <= args.empty_tiles <= 1_000_000
        and 0.1 <= args.assign_mb <= 60
        and 1 <= args.slowloris <= 900
        and args.tile_cache_mb >= 1
    ):
        sys.exit("--workers 1..8, --empty-tiles 1..10^6, --assign-mb 0.1..60, --slowloris 1..900")
    url = sqlalchemy_url().set(database=DB_NAME).render_as_string(hide_password=False)
    if not args.no_load:
        prepare_database(url)
    port = free_port()
    print(f"starting `cimtwin serve --workers {args.workers}` on 127.0.0.1:{port} ...", flush=True)
    proc = start_server(url, port, args)
    t0 = time.perf_counter()
    try:
        phases = http_client.run(run(f"http://127.0.0.1:{port}", proc.pid, url, args))
    finally:
        stop_server(proc)
    report(phases)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; tile cache budget {args.tile_cache_mb} MB")


if __name__ == "__main__":
    main()

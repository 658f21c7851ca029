"""What one request costs, on one client: the analyses beside the lookups, before and after.

``queries.py`` measures latency under 20 clients, which on a shared two-core machine mostly
measures the neighbours. This script measures what each request costs instead, so that a
change can be judged on a busy machine:

* against ``cimtwin serve --workers 1`` (sequential requests, one keep-alive connection):
  the median and p90 wall time per endpoint, the server process's CPU per request and the
  PostgreSQL backends' CPU per request (from ``/proc``);
* in process (the app on an ASGI transport): SQL statements per request and the time spent
  waiting on them, and with ``--profile`` the functions that cost the most Python time;
* the network graph: load time and memory of the water graph in a fresh process (what every
  API worker pays on its first analysis).

    .venv/bin/python benchmarks/request_cost.py --database cimtwin_bench_cost --save before.json
    .venv/bin/python benchmarks/request_cost.py --database cimtwin_bench_cost --compare before.json

The database is prepared as by ``queries.py`` (district data, loaded when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import http_client  # noqa: E402
from benchmarks.api_server import stop_server  # noqa: E402
from benchmarks.http_client import Connection  # noqa: E402
from benchmarks.queries import (  # noqa: E402
    Endpoint,
    database_url,
    endpoints,
    free_port,
    pick_parameters,
    pipeline_endpoints,
    prepare_database,
    start_server,
)
from cimtwin.db.engine import libpq_dsn  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
APP_NAME = "cimtwin-api"
#: endpoints that are shown (the rest of the mix is measured too, but these answer the issue)
FOCUS = ("pipeline isolation", "incident context", "grid locate", "parcel report", "tile")


# --- process CPU from /proc ------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return out


def backends(url: str) -> list[int]:
    """The server's PostgreSQL backends (its pool's connections to this database)."""
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = %s",
                (APP_NAME,),
            ).fetchall()
        ]


def snapshot(pids: list[int]) -> dict[int, float]:
    return {p: cpu_s(p) for p in pids}


def spent(before: dict[int, float], pids: list[int]) -> float:
    return sum(cpu_s(p) - before.get(p, 0.0) for p in pids)


# --- against the server ----------------------------------------------------------------------


async def measure_server(base: str, url: str, server_pid: int, p: dict, n: int) -> dict:
    rng = random.Random(7)
    client = Connection(base, timeout=60)
    out: dict[str, dict[str, float]] = {}
    try:
        mix: list[Endpoint] = endpoints(p, rng) + await pipeline_endpoints(client, p, rng)
        for e in mix:
            for _ in range(5):  # warm: graph loads, pool growth, plans
                method, path, kw = e.make()
                await client.request(method, path, **kw)
            server = tree(server_pid)
            db = backends(url)
            s0, d0 = snapshot(server), snapshot(db)
            wall = []
            for _ in range(n):
                method, path, kw = e.make()
                t0 = time.perf_counter()
                r = await client.request(method, path, **kw)
                if r.status == 200:
                    wall.append((time.perf_counter() - t0) * 1000)
            db = sorted(set(db) | set(backends(url)))
            out[e.name] = {
                "wall_ms": statistics.median(wall) if wall else float("nan"),
                "p90_ms": sorted(wall)[int(0.9 * (len(wall) - 1))] if wall else float("nan"),
                "server_cpu_ms": spent(s0, server) * 1000 / n,
                "db_cpu_ms": spent(d0, db) * 1000 / n,
                "ok": len(wall),
            }
    finally:
        await client.close()
    return out


# --- in process: statements and Python time --------------------------------------------------


class StatementLog:
    """Counts and times every statement a psycopg async cursor runs."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.by_statement: dict[str, list[float]] = {}
        self._orig = psycopg.AsyncCursor.execute

    def __enter__(self) -> StatementLog:
        log, orig = self, self._orig

        async def execute(cur: Any, *args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await orig(cur, *args, **kw)
            finally:
                dt = time.perf_counter() - t0
                log.count += 1
                log.seconds += dt
                text = str(args[0]) if args else ""
                key = " ".join(text.split())[:90]
                entry = log.by_statement.setdefault(key, [0, 0.0])
                entry[0] += 1
                entry[1] += dt

        psycopg.AsyncCursor.execute = execute  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        psycopg.AsyncCursor.execute = self._orig  # type: ignore[method-assign]


async def measure_inprocess(url: str, p: dict, n: int, profile: bool) -> tuple[dict, dict]:
    import httpx

    from cimtwin.api.app import create_app
    from cimtwin.settings import Settings

    app = create_app(Settings(database_url=url, access_log=False))
    out: dict[str, dict[str, float]] = {}
    profiles: dict[str, str] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cost") as client:

            class Adapter:  # pipeline_endpoints probes with the lean client's interface
                async def request(self, method: str, path: str, **kw: Any) -> Any:
                    r = await client.request(method, path, **kw)
                    r.status = r.status_code  # type: ignore[attr-defined]
                    return r

            rng = random.Random(7)
            mix = endpoints(p, rng) + await pipeline_endpoints(Adapter(), p, rng)  # type: ignore[arg-type]
            for e in mix:
                for _ in range(5):
                    method, path, kw = e.make()
                    await client.request(method, path, **kw)
                prof = cProfile.Profile() if profile and e.name in FOCUS[:2] else None
                with StatementLog() as log:
                    c0 = time.process_time()
                    if prof:
                        prof.enable()
                    for _ in range(n):
                        method, path, kw = e.make()
                        await client.request(method, path, **kw)
                    if prof:
                        prof.disable()
                    cpu = time.process_time() - c0
                out[e.name] = {
                    "statements": log.count / n,
                    "sql_ms": log.seconds * 1000 / n,
                    "python_cpu_ms": cpu * 1000 / n,
                }
                if e.name in FOCUS[:2]:
                    top = sorted(log.by_statement.items(), key=lambda kv: -kv[1][1])
                    profiles[f"{e.name} statements"] = "\n".join(
                        f"{c / n:5.2f}/req {t * 1000 / n:7.2f} ms/req  {q}" for q, (c, t) in top
                    )
                if prof:
                    text = io.StringIO()
                    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
                    profiles[e.name] = text.getvalue()
    return out, profiles


# --- graph load in a fresh process -----------------------------------------------------------

GRAPH_PROBE = """
import asyncio, json, sys, time
import psycopg
from cimtwin.spatial.pipelines.graph import network_graph

def memory():
    found = {}
    for line in open("/proc/self/smaps_rollup"):
        name, _, rest = line.partition(":")
        if name in ("Rss", "Private_Clean", "Private_Dirty"):
            found[name] = int(rest.split()[0]) / 1024
    return found["Rss"], found["Private_Clean"] + found["Private_Dirty"]
async def main():
    async with await psycopg.AsyncConnection.connect(sys.argv[1], autocommit=True) as conn:
        (r0, p0), c0, t0 = memory(), time.process_time(), time.perf_counter()
        g = await network_graph(conn, "JS")
        # touch what an isolation touches, so mapped pages count
        _ = int(g.valve_segments.labels.sum()) + int(g.incidence[1].sum())
        t1, c1, (r1, p1) = time.perf_counter(), time.process_time(), memory()
        print(json.dumps({"load_ms": (t1 - t0) * 1000, "cpu_ms": (c1 - c0) * 1000,
                          "rss_mb": r1 - r0, "private_mb": p1 - p0, "segments": len(g.seg_id)}))
asyncio.run(main())
"""


def measure_graph(url: str, runs: int = 3) -> dict[str, dict[str, float]]:
    """The water graph's first load in fresh processes sharing one graph folder, as API
    workers do: the first process ("first worker") and the median of the others ("other
    workers"; before graphs were shared, every worker was a first one)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cimtwin-graph-cost-") as shared:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CIMTWIN_PIPELINE_GRAPH_DIR": shared}
        found = []
        for _ in range(runs):
            done = subprocess.run(
                [sys.executable, "-c", GRAPH_PROBE, libpq_dsn(url)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            found.append(json.loads(done.stdout.strip().splitlines()[-1]))
    rest = found[1:] or found
    return {
        "first worker": found[0],
        "other workers": {k: statistics.median(f[k] for f in rest) for k in found[0]},
    }


# --- report ----------------------------------------------------------------------------------

COLUMNS = (
    ("wall_ms", "server", "wall"),
    ("server_cpu_ms", "server", "API CPU"),
    ("db_cpu_ms", "server", "DB CPU"),
    ("statements", "inprocess", "SQL stmts"),
    ("sql_ms", "inprocess", "SQL wait"),
    ("python_cpu_ms", "inprocess", "py CPU"),
)


def show(now: dict, before: dict | None) -> None:
    names = list(now["server"])
    print("\nper request, one client (ms; medians of wall; CPU and SQL are means)")
    head = f"{'endpoint':<20}" + "".join(f"{c[2]:>20}" for c in COLUMNS)
    print(head)
    for name in names:
        line = f"{name:<20}"
        for key, part, _ in COLUMNS:
            v = now.get(part, {}).get(name, {}).get(key, float("nan"))
            if before is not None:
                b = before.get(part, {}).get(name, {}).get(key, float("nan"))
                line += f"{f'{b:.1f} -> {v:.1f}':>20}"
            else:
                line += f"{v:>20.1f}"
        print(line)
    graph, was = now.get("graph", {}), (before or {}).get("graph", {})
    if graph:
        print("\nwater graph, first load in a fresh process (a worker's first analysis)")
        for who, g in graph.items():
            # figures saved before the graphs were shared: every worker was a first one
            gb = was.get(who, {}) if isinstance(was.get(who), dict) else was
            print(f"  {who} ({g['segments']:.0f} segments)")
            for key in ("load_ms", "cpu_ms", "rss_mb", "private_mb"):
                old = f"{gb[key]:.1f} -> " if key in gb else ""
                print(f"    {key:<10} {old}{g.get(key, float('nan')):.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database", default="cimtwin_bench_cost")
    ap.add_argument("--requests", type=int, default=50, help="per endpoint (default 50)")
    ap.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data" / "district")
    ap.add_argument("--no-load", action="store_true", help="use what the database holds")
    ap.add_argument("--profile", action="store_true", help="cProfile isolation and context")
    ap.add_argument("--save", type=Path, help="write the figures to this JSON file")
    ap.add_argument("--compare", type=Path, help="print beside the figures of this JSON file")
    ap.add_argument("--seed", type=int, default=20261123)
    args = ap.parse_args()
    if not 1 <= args.requests <= 10_000:
        sys.exit("--requests 1..10000")
    before = json.loads(args.compare.read_text()) if args.compare else None
    url = database_url(args.database)
    prepare_database(url, args.data, not args.no_load)
    params = pick_parameters(url, args.seed)
    now: dict[str, Any] = {"graph": measure_graph(url)}
    port = free_port()
    proc = start_server(url, port, 1)
    try:
        now["server"] = http_client.run(
            measure_server(f"http://127.0.0.1:{port}", url, proc.pid, params, args.requests)
        )
    finally:
        stop_server(proc)
    now["inprocess"], profiles = asyncio.run(
        measure_inprocess(url, params, args.requests, args.profile)
    )
    for name, text in profiles.items():
        print(f"\n--- {name}: Python time by function ---\n{text}")
    show(now, before)
    if args.save:
        args.save.write_text(json.dumps(now, indent=1))


if __name__ == "__main__":
    main()

"""Pipeline graph analyses on the district-scale network (~220 000 segments): graph build,
then isolation and trace latencies, in-process and through the HTTP app.

Loads work grids, buildings and pipelines of ``benchmarks/data/district`` into a scratch
database once (``--reload`` to load again), then times random bursts and traces and prints
p50 / p99 (ms).

    .venv/bin/python benchmarks/pipeline_graph.py [--data DIR] [--runs 200] [--reload]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402

from cimtwin.db import bootstrap  # noqa: E402
from cimtwin.db.engine import libpq_dsn, sqlalchemy_url  # noqa: E402
from cimtwin.importers.registry import importer_for  # noqa: E402
from cimtwin.importers.runner import ImportOptions, run_import  # noqa: E402
from cimtwin.settings import Settings  # noqa: E402
from cimtwin.spatial.pipelines.graph import clear_graph_cache, network_graph  # noqa: E402
from cimtwin.spatial.pipelines.isolation import isolate  # noqa: E402
from cimtwin.spatial.pipelines.trace import trace  # noqa: E402

DATABASE = "cimtwin_pipeline_bench"
STEPS = (
    ("grids", ("gpkg/admin.gpkg",), None),
    ("buildings", ("gpkg/buildings.gpkg",), None),
    ("pipelines", ("pipelines/points.csv", "pipelines/lines.csv"), "EPSG:4547"),
)


def load(url: str, data: Path, reload: bool) -> None:
    if not reload and bootstrap.server_reachable(url):
        try:
            with psycopg.connect(libpq_dsn(url)) as conn:
                n = conn.execute("SELECT count(*) FROM cim.pipeline_segment").fetchone()[0]
            if n > 100_000:
                print(f"{DATABASE}: {n} segments already loaded")
                return
        except psycopg.Error:
            pass
    if not (data / "manifest.json").exists():
        print(f"generating the district sample into {data} ...", flush=True)
        subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "cimtwin"),
                "samples",
                "generate",
                str(data),
                "--scale",
                "district",
            ],
            check=True,
        )
    bootstrap.recreate_database(url)
    for kind, files, crs in STEPS:
        t0 = time.perf_counter()
        r = run_import(
            importer_for(kind),
            [data / f for f in files],
            ImportOptions(crs=crs, dataset=f"district:{kind}"),
            url,
        )
        print(f"loaded {kind}: {r.counts} in {time.perf_counter() - t0:.1f} s", flush=True)
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def pct(values: list[float]) -> str:
    ms = np.asarray(values) * 1000
    return (
        f"p50 {np.percentile(ms, 50):7.2f} ms  p99 {np.percentile(ms, 99):7.2f} ms  "
        f"mean {statistics.fmean(ms):7.2f} ms  (n={len(ms)})"
    )


async def in_process(url: str, runs: int, rng: np.random.Generator) -> dict[str, list[int]]:
    async with await psycopg.AsyncConnection.connect(libpq_dsn(url), autocommit=True) as conn:
        picks = {}
        for net in ("JS", "PS"):
            clear_graph_cache()
            t0 = time.perf_counter()
            g = await network_graph(conn, net)
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            await network_graph(conn, net)
            print(
                f"{net}: {len(g.seg_id)} segments, {len(g.node_id)} nodes, {len(g.valves)} "
                f"valve incidences: graph built in {build:.2f} s; cached lookup "
                f"{(time.perf_counter() - t0) * 1000:.1f} ms"
            )
            picks[net] = rng.choice(g.seg_id, runs, replace=False).tolist()
        g = await network_graph(conn, "JS")
        times = []
        for sid in picks["JS"]:
            t0 = time.perf_counter()
            isolate(g, g.seg_index(sid))
            times.append(time.perf_counter() - t0)
        print(f"isolate() on the cached JS graph     {pct(times)}")
        g = await network_graph(conn, "PS")
        times = []
        for sid in picks["PS"]:
            t0 = time.perf_counter()
            trace(g, start_segment=g.seg_index(sid), direction="upstream")
            times.append(time.perf_counter() - t0)
        print(f"trace() upstream on the cached PS graph {pct(times)}")
        return picks


def over_http(url: str, picks: dict[str, list[int]]) -> None:
    from fastapi.testclient import TestClient

    from cimtwin.api.app import create_app

    settings = Settings(database_url=url, tile_cache_mb=0)
    with TestClient(create_app(settings)) as client:
        client.post("/pipelines/isolation", json={"segment_id": picks["JS"][0]})  # warm
        for name, path, bodies in (
            (
                "POST /pipelines/isolation",
                "/pipelines/isolation",
                [{"segment_id": s} for s in picks["JS"]],
            ),
            (
                "POST /pipelines/trace upstream",
                "/pipelines/trace",
                [
                    {"network": "PS", "start": {"segment_id": s}, "direction": "upstream"}
                    for s in picks["PS"]
                ],
            ),
            (
                "POST /pipelines/trace connected 500 m",
                "/pipelines/trace",
                [
                    {
                        "network": "JS",
                        "start": {"segment_id": s},
                        "direction": "connected",
                        "max_distance_m": 500,
                    }
                    for s in picks["JS"]
                ],
            ),
        ):
            times, sizes = [], []
            for body in bodies:
                t0 = time.perf_counter()
                r = client.post(path, json=body)
                times.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    sys.exit(f"{path} {body}: {r.status_code} {r.text[:300]}")
                sizes.append(len(r.content))
            print(f"{name:38s} {pct(times)}  median body {int(np.median(sizes)):,} B")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data" / "district")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--reload", action="store_true", help="load the data again")
    args = ap.parse_args()
    url = sqlalchemy_url().set(database=DATABASE).render_as_string(hide_password=False)
    load(url, args.data, args.reload)
    rng = np.random.default_rng(20261123)
    picks = asyncio.run(in_process(url, args.runs, rng))
    over_http(url, picks)


if __name__ == "__main__":
    main()

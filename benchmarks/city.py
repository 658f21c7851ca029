"""City scale: 3D Tiles builds of 1, 2 and 4 districts on a Dask LocalCluster of 1 and 2
workers, and the query mix of benchmarks/queries.py on the primary alone and with a replica.

1. `cimtwin samples generate --scale city --districts MAX` once into benchmarks/data/city-SCALE
   (district k's files do not depend on MAX, so the first N districts of it are a city of N);
   for each N, the first N district folders loaded into the scratch database
   ``cimtwin_bench_city_SCALE_N`` (unchanged layers are skipped on a re-run);
2. for each N and each worker count W: every 3D tileset (``--layers``) built from scratch by
   ``build_tileset`` on a fresh LocalCluster of W single-threaded workers (started and warmed
   up before the clock starts): wall time, tiles, tiles/s, and the peak RSS of each worker
   (its VmHWM, read on the worker itself); then how time grows with N (target: linear in the
   data) and with W (target: >= 1.7x with 2 workers where CPU-bound), per-worker memory
   (target: flat in N), and the least-squares line through the points projected to 10;
3. the query mix (benchmarks/queries.py's endpoints and clients) against a private primary
   (initdb, holding the smallest city) alone, then with a streaming standby made from it
   (tests/replica_pair.py) in ``CIMTWIN_DATABASE_REPLICA_URLS``: p50 / p99 and requests/s.
   Same machine, same cores: this shows correctness and no regression, not the gain of a
   replica on its own machine.

    .venv/bin/python benchmarks/city.py [--districts 1,2,4] [--workers 1,2]
        [--district-scale district|sample] [--duration 30] [--skip-queries] [--skip-build]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import http_client, queries  # noqa: E402
from benchmarks.api_server import stop_server  # noqa: E402
from cimtwin.db import bootstrap, migrate  # noqa: E402
from cimtwin.db.engine import sqlalchemy_url  # noqa: E402
from cimtwin.samples.city import MAX_DISTRICTS, generate_city  # noqa: E402
from cimtwin.samples.loader import load_sample  # noqa: E402
from cimtwin.tiles.threed.registry import TILESETS  # noqa: E402
from tests.replica_pair import available, replica_pair  # noqa: E402

PROJECT_TO = 10  # Shenzhen's districts


@dataclass
class Build:
    districts: int
    workers: int
    wall_s: float
    tiles: int
    peak_mib: list[float]
    layer_s: dict[str, float]  # wall seconds per tileset

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.wall_s if self.wall_s else float("nan")


def ints(text: str) -> list[int]:
    try:
        out = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        sys.exit(f"not a list of whole numbers: {text!r}")
    if not out or out[0] < 1:
        sys.exit(f"give whole numbers from 1: {text!r}")
    return out


# --- data -----------------------------------------------------------------------------------


def city_folder(data: Path, most: int, scale: str, seed: int) -> list[Path]:
    """The district folders of a city of ``most`` districts, generated unless already there."""
    manifest = data / "manifest.json"
    doc = json.loads(manifest.read_text("utf-8")) if manifest.is_file() else {}
    if (
        doc.get("district_scale") != scale
        or doc.get("seed") != seed
        or len(doc.get("districts", [])) < most
    ):
        print(f"generating a city of {most} {scale}-scale districts into {data} ...", flush=True)
        t0 = time.perf_counter()
        generate_city(data, most, scale, seed)
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
        doc = json.loads(manifest.read_text("utf-8"))
    return [data / d["folder"] for d in doc["districts"]]


def prepare(url: str, folders: list[Path]) -> None:
    """A migrated database holding these district folders (unchanged layers skipped)."""
    bootstrap.create_database(url)
    bootstrap.create_extensions(url)
    migrate.upgrade(url)
    t0 = time.perf_counter()
    results = [r for f in folders for r in load_sample(f, url)]
    loaded = sum(r.status == "succeeded" for r in results)
    print(
        f"  {len(folders)} districts in {url.rsplit('/', 1)[-1]}: {loaded} layers imported, "
        f"{len(results) - loaded} unchanged, {time.perf_counter() - t0:.0f} s",
        flush=True,
    )


# --- 3D builds ------------------------------------------------------------------------------


def _peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM: reset at exec, unlike ru_maxrss)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _warm_up() -> None:
    """Import what a tile job needs, so the first job's imports are not on the clock."""
    import cimtwin.tiles.threed.plan  # noqa: F401
    from cimtwin.tiles.threed import registry

    for target in registry.TILESETS.values():
        registry.source_for(target)


def build_once(url: str, layers: list[str], workers: int, memory_limit: str) -> Build:
    """Every tileset from scratch on a fresh LocalCluster of ``workers`` processes."""
    from distributed import Client, LocalCluster

    from cimtwin.tiles import cluster as tcluster
    from cimtwin.tiles.threed.build import build_tileset

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as lc,
        Client(lc) as client,
        tempfile.TemporaryDirectory(prefix="cimtwin-city-3d-") as out,
    ):
        client.run(_warm_up)
        tiles, layer_s = 0, {}
        t0 = time.perf_counter()
        for name in layers:
            t1 = time.perf_counter()
            # through the scheduler's address: even one worker runs on the cluster
            result = build_tileset(
                name, Path(out), database_url=url, scheduler=lc.scheduler_address
            )
            layer_s[name] = time.perf_counter() - t1
            tiles += result.built
        wall = time.perf_counter() - t0
        peaks = sorted(client.run(_peak_rss_mib).values())
        # the builds' own client of this cluster (kept for the process's life by design)
        tcluster._close_all()
    return Build(0, workers, wall, tiles, peaks, layer_s)


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope); a single point: a line through the origin."""
    if len(xs) == 1:
        return 0.0, ys[0] / xs[0]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - slope * mx, slope


def report_builds(builds: list[Build], workers: list[int]) -> None:
    print(
        f"\n{'districts':>9} {'workers':>7} {'wall s':>8} {'tiles':>7} {'tiles/s':>8} "
        f"{'s/district':>10}  peak RSS per worker (MiB)"
    )
    for b in builds:
        peaks = ", ".join(f"{p:.0f}" for p in b.peak_mib)
        print(
            f"{b.districts:>9} {b.workers:>7} {b.wall_s:>8.1f} {b.tiles:>7} "
            f"{b.tiles_per_s:>8.1f} {b.wall_s / b.districts:>10.1f}  {peaks}"
        )
    layers = list(builds[0].layer_s)
    print(
        f"\nwall s per tileset\n{'districts':>9} {'workers':>7} "
        + " ".join(f"{n:>15}" for n in layers)
    )
    for b in builds:
        print(
            f"{b.districts:>9} {b.workers:>7} " + " ".join(f"{b.layer_s[n]:>15.1f}" for n in layers)
        )
    print("\ngrowth with districts (target: linear in the data, flat per-worker memory):")
    for w in workers:
        row = [b for b in builds if b.workers == w]
        base = row[0]
        steps = ", ".join(
            f"{b.districts}: {b.wall_s / base.wall_s:.2f}x time for "
            f"{b.districts / base.districts:.0f}x data, {b.tiles / base.tiles:.2f}x tiles"
            for b in row[1:]
        )
        a, s = fit([b.districts for b in row], [b.wall_s for b in row])
        mem = [max(b.peak_mib) for b in row]
        print(
            f"  {w} worker(s): {steps or 'one point only'}; worker peak "
            f"{min(mem):.0f}-{max(mem):.0f} MiB; fit {a:.1f} s + {s:.1f} s/district -> "
            f"{PROJECT_TO} districts about {a + s * PROJECT_TO:.0f} s "
            f"({(a + s * PROJECT_TO) / 60:.1f} min)"
        )
    if len(workers) > 1:
        print("\nspeed-up with workers (target: >= 1.7x with 2 workers where CPU-bound):")
        for n in sorted({b.districts for b in builds}):
            by_w = {b.workers: b for b in builds if b.districts == n}
            one = by_w[workers[0]]
            ups = ", ".join(f"{w} workers {one.wall_s / by_w[w].wall_s:.2f}x" for w in workers[1:])
            print(f"  {n} district(s): {ups}")


# --- queries on the primary alone and with a replica ----------------------------------------


def query_mix(folders: list[Path], args: argparse.Namespace) -> None:
    if not available():
        print("\nquery mix: PostgreSQL 15 server programs missing, left out")
        return
    ns = argparse.Namespace(
        seed=args.seed,
        clients=args.clients,
        no_pipelines=False,
        warmup=min(5.0, args.duration / 4),
        baseline=0,
        seconds=args.duration,
    )
    with replica_pair() as pair:
        print(f"\nquery mix: {len(folders)} district(s) into a private primary ...", flush=True)
        prepare(pair.url, folders)
        pair.primary_sql("CHECKPOINT")
        pair.caught_up(timeout_s=600)
        params = queries.pick_parameters(pair.url, args.seed)
        for label, replicas in (("primary alone", ""), ("primary + 1 replica", pair.replica_url)):
            saved = os.environ.pop("CIMTWIN_DATABASE_REPLICA_URLS", None)
            if replicas:
                os.environ["CIMTWIN_DATABASE_REPLICA_URLS"] = replicas
            os.environ.setdefault("PYTHONPATH", str(ROOT))  # the server runs this checkout
            port = queries.free_port()
            print(f"\n--- {label}: `cimtwin serve --workers {args.api_workers}` ---", flush=True)
            proc = queries.start_server(pair.url, port, args.api_workers)
            try:
                http_client.run(queries.run_load(f"http://127.0.0.1:{port}", params, ns))
                if replicas:
                    import httpx

                    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
                    print(f"/healthz replicas: {health.get('replicas')}")
                    (served,) = pair.replica_sql(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE application_name = 'cimtwin-api-replica'"
                    )[0]
                    print(f"API connections on the standby: {served}")
            finally:
                stop_server(proc)
                if saved is None:
                    os.environ.pop("CIMTWIN_DATABASE_REPLICA_URLS", None)
                else:
                    os.environ["CIMTWIN_DATABASE_REPLICA_URLS"] = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--districts", default="1,2,4", help="city sizes to build (default 1,2,4)")
    ap.add_argument("--workers", default="1,2", help="LocalCluster sizes (default 1,2)")
    ap.add_argument(
        "--district-scale",
        choices=("district", "sample"),
        default="district",
        help="size of each district (sample: a quick run)",
    )
    ap.add_argument("--layers", default=",".join(TILESETS), help="3D tilesets (default: all six)")
    ap.add_argument("--memory-limit", default="2GiB", help="per worker (default 2GiB)")
    ap.add_argument("--duration", type=float, default=30.0, help="measured query run, s")
    ap.add_argument("--clients", type=int, default=20, help="concurrent query clients")
    ap.add_argument("--api-workers", type=int, default=2, help="`cimtwin serve` workers")
    ap.add_argument("--data", type=Path, default=None, help="city folder (generated on first use)")
    ap.add_argument("--skip-build", action="store_true", help="leave the 3D builds out")
    ap.add_argument("--skip-queries", action="store_true", help="leave the query mix out")
    ap.add_argument("--keep", action="store_true", help="keep the scratch databases")
    ap.add_argument("--seed", type=int, default=20261123)
    args = ap.parse_args()
    districts, workers = ints(args.districts), ints(args.workers)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()]
    unknown = [name for name in layers if name not in TILESETS]
    if unknown:
        sys.exit(f"--layers: unknown {', '.join(unknown)}; choose from {', '.join(TILESETS)}")
    if districts[-1] > MAX_DISTRICTS or not (1 <= args.duration <= 3600):
        sys.exit(f"--districts up to {MAX_DISTRICTS}; --duration 1..3600")
    data = args.data or ROOT / "benchmarks" / "data" / f"city-{args.district_scale}"
    folders = city_folder(data, districts[-1], args.district_scale, args.seed)
    print(
        f"machine: {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} at the start",
        flush=True,
    )
    urls = []
    if not args.skip_build:
        builds = []
        for n in districts:
            url = (
                sqlalchemy_url()
                .set(database=f"cimtwin_bench_city_{args.district_scale}_{n}")
                .render_as_string(hide_password=False)
            )
            urls.append(url)
            prepare(url, folders[:n])
            for w in workers:
                print(
                    f"  build-3d {','.join(layers)}: {n} district(s), {w} worker(s) ...", flush=True
                )
                b = build_once(url, layers, w, args.memory_limit)
                b.districts = n
                builds.append(b)
                print(f"    {b.wall_s:.1f} s, {b.tiles} tiles", flush=True)
        report_builds(builds, workers)
    if not args.skip_queries:
        query_mix(folders[: districts[0]], args)
    print(
        f"\nload average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
        f"(other work on the machine inflates every figure)"
    )
    if not args.keep:
        for url in urls:
            bootstrap.drop_database(url)


if __name__ == "__main__":
    main()

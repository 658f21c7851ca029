"""Where a 3D build's time goes on 1 and 2 Dask workers, back to back: wall time, the plan's
wall time, and the CPU seconds of the driver (with the LocalCluster's in-process scheduler),
of each worker and of the database's PostgreSQL backends (read from /proc while it runs).

On a machine shared with other work the wall times swing with the load; the CPU seconds
repeat, and bound what an idle machine gives (docs/scaling.md).

    .venv/bin/python benchmarks/threed_workers.py --database-url URL [--layers components]
        [--workers 1,2]
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.city import _warm_up, ints  # noqa: E402
from cimtwin.tiles import cluster as tcluster  # noqa: E402
from cimtwin.tiles.threed import build  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: str) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def backends(database: str) -> dict[str, float]:
    """CPU seconds so far of each PostgreSQL backend serving ``database``."""
    out = {}
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd.startswith(b"postgres: ") and f" {database} ".encode() in cmd:
            pid = path.split("/")[2]
            cpu = _cpu_s(pid)
            if cpu is not None:
                out[pid] = cpu
    return out


class BackendMeter:
    """The backends' CPU seconds while it runs (finds new backends every 3 s, reads the known
    ones every 0.3 s: backends that end keep their last reading)."""

    def __init__(self, database: str) -> None:
        self.database, self.before = database, backends(database)
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            found = backends(self.database) if n % 10 == 0 else {}
            for pid in set(found) | set(self.seen):
                cpu = found.get(pid) or _cpu_s(pid)
                if cpu is not None:
                    self.seen[pid] = max(cpu, self.seen.get(pid, 0.0))
            n += 1
            time.sleep(0.3)

    def __enter__(self) -> BackendMeter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def cpu_s(self) -> float:
        return sum(v - self.before.get(k, 0.0) for k, v in self.seen.items())


def measure(url: str, layers: list[str], workers: int) -> str:
    from distributed import Client, LocalCluster

    database = url.rsplit("/", 1)[1].split("?")[0]
    planned: list[float] = []
    plan_tree = build.plan_tree

    def timed_plan(*args, **kwargs):
        t = time.perf_counter()
        try:
            return plan_tree(*args, **kwargs)
        finally:
            planned.append(time.perf_counter() - t)

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit="2GiB",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as lc,
        Client(lc) as client,
        tempfile.TemporaryDirectory(prefix="cimtwin-3d-workers-") as out,
    ):
        client.run(_warm_up)
        worker_cpu0 = client.run(time.process_time)
        load0 = os.getloadavg()[0]
        build.plan_tree = timed_plan
        try:
            with BackendMeter(database) as pg:
                d0, t0, tiles = time.process_time(), time.perf_counter(), 0
                for name in layers:
                    result = build.build_tileset(
                        name, Path(out), database_url=url, scheduler=lc.scheduler_address
                    )
                    tiles += result.built
                wall, driver = time.perf_counter() - t0, time.process_time() - d0
        finally:
            build.plan_tree = plan_tree
        per_worker = [v - worker_cpu0[k] for k, v in client.run(time.process_time).items()]
        tcluster._close_all()  # the build's own client of this cluster
    return (
        f"{','.join(layers)} W={workers}: wall {wall:.1f} s, {tiles} tiles, plan "
        f"{sum(planned):.1f} s; CPU s: driver+scheduler {driver:.1f}, workers "
        f"{sum(per_worker):.1f} ({' + '.join(f'{v:.1f}' for v in per_worker)}), PostgreSQL "
        f"{pg.cpu_s:.1f}; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", required=True, help="a loaded database (samples load)")
    ap.add_argument("--layers", default="components", help="3D tilesets, comma-separated")
    ap.add_argument("--workers", default="1,2", help="LocalCluster sizes, run in this order")
    args = ap.parse_args()
    layers = [s.strip() for s in args.layers.split(",") if s.strip()]
    for w in ints(args.workers):
        print(measure(args.database_url, layers, w), flush=True)


if __name__ == "__main__":
    main()

"""3D tile jobs on Dask distributed: the sample's buildings built in this process, on a
LocalCluster of 1 worker and on one of 2 write the same bytes in every file, and the tileset
validates; ``build-3d --workers 2`` runs on a LocalCluster, ``--scheduler`` reaches an
existing one and an unreachable one is one clear line; jobs go in cost-balanced batches, and
level-0 subtrees planned on the workers make the same tree."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from tests.threed_check import validate

TILESET = "buildings"
#: a content budget that splits the sample's buildings into several tiles (jobs to share out)
BUDGET = dict(max_content_bytes=60_000)


def _files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _dsns_opened_by_workers(client: Client) -> dict[str, list[str]]:
    """Per worker, the DSNs its tile jobs connected to (its kept connections)."""

    def opened() -> list[str]:
        from cimtwin.tiles import cluster

        return sorted(cluster.WORKER_CONNECTIONS)

    return client.run(opened)


def test_one_and_two_dask_workers_write_the_same_bytes(settings, loaded_sample, tmp_path):
    from cimtwin.db.engine import libpq_dsn
    from cimtwin.tiles import cluster
    from cimtwin.tiles.threed.build import build_tileset

    # earlier builds in this process (default workers: one per CPU) keep their LocalCluster,
    # whose workers hold connections to those tests' databases: start from no cluster, so the
    # DSNs the workers opened below are this build's alone
    cluster._close_all()

    url = settings.database_url
    timings: dict[str, float] = {}

    t = time.perf_counter()
    local = build_tileset(TILESET, tmp_path / "inproc", database_url=url, workers=1, **BUDGET)
    timings["in-process"] = time.perf_counter() - t
    assert local.path is not None and local.built > 1

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, dashboard_address=None, processes=True
        ) as one,
        Client(one) as client_one,
    ):
        t = time.perf_counter()
        r1 = build_tileset(
            TILESET, tmp_path / "one", database_url=url, scheduler=one.scheduler_address, **BUDGET
        )
        timings["1 worker"] = time.perf_counter() - t
        # the jobs ran on the cluster's worker (it connected to the database), not here
        assert list(_dsns_opened_by_workers(client_one).values()) == [[libpq_dsn(url)]]

    t = time.perf_counter()
    r2 = build_tileset(TILESET, tmp_path / "two", database_url=url, workers=2, **BUDGET)
    timings["2 workers"] = time.perf_counter() - t
    client_two = cluster.client_for(2)  # the LocalCluster build_tileset started, kept
    opened = _dsns_opened_by_workers(client_two)
    assert len(opened) == 2 and all(v == [libpq_dsn(url)] for v in opened.values()), opened

    print("buildings build:", {k: f"{v:.1f} s" for k, v in timings.items()})
    assert r1.built == r2.built == local.built
    base = _files(tmp_path / "inproc" / TILESET)
    assert len([p for p in base if p.endswith(".glb")]) > 1
    assert "tileset.json" in base and "build.json" in base
    assert _files(tmp_path / "one" / TILESET) == base
    assert _files(tmp_path / "two" / TILESET) == base
    validate(tmp_path / "two" / TILESET / "tileset.json")


def _cli(args: list[str], settings, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cimtwin.cli import app
    from cimtwin.settings import Settings

    s = Settings(database_url=settings.database_url, tiles_dir=str(tmp_path))
    monkeypatch.setattr("cimtwin.settings.get_settings", lambda: s)
    return CliRunner().invoke(app, ["tiles", "build-3d", *args])


def test_build_3d_workers_2_and_scheduler(settings, loaded_sample, tmp_path, monkeypatch):
    from cimtwin.tiles import cluster

    # --workers 2 runs on a LocalCluster of 2 (the one the test above left, or a new one)
    layers = "buildings,pipelines,components"
    r = _cli(["--layers", layers, "--workers", "2"], settings, tmp_path / "a", monkeypatch)
    assert r.exit_code == 0, r.output
    print(r.output)
    assert (tmp_path / "a" / TILESET / "tileset.json").is_file()
    client = cluster._CLIENTS[("local", "2/auto")]
    assert len(client.scheduler_info()["workers"]) == 2

    # an existing cluster through the environment variable: same files as --workers 2
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as other:
        monkeypatch.setenv(cluster.SCHEDULER_ENV, other.scheduler_address)
        r = _cli(["--layers", layers], settings, tmp_path / "b", monkeypatch)
        assert r.exit_code == 0, r.output
        assert ("scheduler", other.scheduler_address) in cluster._CLIENTS
    assert _files(tmp_path / "b") == _files(tmp_path / "a")


def test_build_3d_help_lists_the_dask_options():
    from typer.testing import CliRunner

    from cimtwin.cli import app

    r = CliRunner().invoke(app, ["tiles", "build-3d", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for option in ("--workers", "--scheduler", "--memory-limit", "CIMTWIN_DASK_SCHEDULER"):
        assert option in r.output, option


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scheduler", "tcp://127.0.0.1:9"], "no Dask scheduler answers there"),
        (["--workers", "2", "--memory-limit", "lots"], "--memory-limit 'lots'"),
    ],
)
def test_dask_mistakes_are_one_line(settings, loaded_sample, tmp_path, args, message):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "CIMTWIN_DATABASE_URL": settings.database_url}
    env.pop("CIMTWIN_DASK_SCHEDULER", None)
    env["CIMTWIN_DASK_CONNECT_TIMEOUT_S"] = "2"  # the unreachable scheduler: a short wait
    proc = subprocess.run(
        [sys.executable, "-m", "cimtwin.cli", "tiles", "build-3d", "--layers", TILESET]
        + ["--out", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_jobs_go_to_the_cluster_in_batches_of_about_equal_cost():
    from cimtwin.tiles.store import open_store
    from cimtwin.tiles.threed.plan import TileJob, batches

    def job(i: int) -> TileJob:
        return TileJob(
            "m:C", "dsn", open_store("/tmp"), (4, i, 0), (0, 0, 1, 1), 0.0, {}, "none", 0
        )

    # 100 cheap leaves, then 4 parents each as costly as 25 leaves (the district's shape)
    jobs = [job(i) for i in range(104)]
    costs = [1] * 100 + [25] * 4
    groups = batches(jobs, costs, 8)
    assert sorted(j.key for g in groups for j in g) == sorted(j.key for j in jobs)
    weight = {j.key: c for j, c in zip(jobs, costs, strict=True)}
    sums = [sum(weight[j.key] for j in g) for g in groups]
    assert len(groups) <= 8 and max(sums) <= 2 * 200 / 8, sums
    assert sums == sorted(sums, reverse=True)  # the costliest go first
    assert batches([], [], 8) == [] and len(batches(jobs, costs, 1)) == 1


def test_a_plan_across_level_0_tiles_is_the_same_on_the_cluster(database_url, tmp_path):
    """The level-0 subtrees planned as jobs on 2 workers: the same tree and files as planned
    and built in this process."""
    import psycopg

    from cimtwin.db.engine import libpq_dsn
    from cimtwin.tiles.threed.build import build_tileset, plan_mapper
    from cimtwin.tiles.threed.placement import Placement
    from cimtwin.tiles.threed.plan import plan_tree
    from cimtwin.tiles.threed.registry import source_for
    from tests.threed_fake import create_table, fill_grid

    target, dsn = "tests.threed_fake:FakeSource", libpq_dsn(database_url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_table(conn)
        fill_grid(conn, 12, x0=503600.0)  # across two level-0 tiles (503808 = 123 * 4096)
        source = source_for(target)
        here = plan_tree(conn, source, max_depth=12)
        there = plan_tree(
            conn, source, max_depth=12, on_cluster=(plan_mapper(2, None, "auto"), target, dsn)
        )
    assert here is not None and len(here.roots) == 2
    assert there == here

    build = dict(database_url=database_url, target=target, max_depth=12)
    build["placement"] = Placement(geoid="none")
    build_tileset("fakeboxes", tmp_path / "one", workers=1, **build)
    build_tileset("fakeboxes", tmp_path / "two", workers=2, **build)
    assert _files(tmp_path / "two") == _files(tmp_path / "one")

"""Tile builds written to an fsspec URL: an S3-compatible server (moto's, started here on a
free loopback port) gets the same bytes as a local folder, from this process and from 2 Dask
workers writing their own tiles; ``--changed`` reads build.json back from the bucket; the
vector-tile archive uploads the same file; a bad URL or a process-private store is one line."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.s3_server import moto_s3

BUCKET = "cimtwin-tiles"
TILESET = "buildings"
#: a content budget that splits the sample's buildings into several tiles (jobs to share out)
BUDGET = dict(max_content_bytes=60_000)


@pytest.fixture(scope="module")
def s3() -> Iterator[dict]:
    """A moto S3 server on a free loopback port with one bucket; its storage options."""
    with moto_s3(BUCKET) as options:
        yield options


def _local_files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _bucket_files(options: dict, prefix: str) -> dict[str, str]:
    import s3fs

    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    base = f"{BUCKET}/{prefix}/"
    return {
        key[len(base) :]: hashlib.sha256(fs.cat_file(key)).hexdigest()
        for key in sorted(fs.find(base))
    }


def test_a_build_to_s3_writes_the_bytes_of_a_local_build(settings, loaded_sample, tmp_path, s3):
    from cimtwin.tiles import cluster, store
    from cimtwin.tiles.store import open_store
    from cimtwin.tiles.threed.build import build_tileset

    url = settings.database_url
    local = build_tileset(TILESET, tmp_path, database_url=url, workers=1, **BUDGET)
    base = _local_files(tmp_path / TILESET)
    assert local.built > 1 and "tileset.json" in base and "build.json" in base

    one = build_tileset(
        TILESET, open_store(f"s3://{BUCKET}/one", s3), database_url=url, workers=1, **BUDGET
    )
    assert one.path == f"s3://{BUCKET}/one/{TILESET}/tileset.json"
    assert one.built == local.built
    assert _bucket_files(s3, f"one/{TILESET}") == base

    # 2 workers of a LocalCluster, each writing its own tiles to the bucket
    cluster._close_all()  # no worker left from an earlier test with the filesystem open
    two = build_tileset(
        TILESET, open_store(f"s3://{BUCKET}/two", s3), database_url=url, workers=2, **BUDGET
    )
    assert two.built == local.built
    assert _bucket_files(s3, f"two/{TILESET}") == base

    def filesystems_opened() -> int:
        return store._filesystem.cache_info().currsize

    # each worker opened the store itself (the tiles went from it to the bucket, not via here)
    per_worker = cluster.client_for(2).run(filesystems_opened)
    assert len(per_worker) == 2 and all(n >= 1 for n in per_worker.values()), per_worker

    # --changed reads build.json back from the bucket: nothing imported since, nothing built
    again = build_tileset(
        TILESET,
        open_store(f"s3://{BUCKET}/two", s3),
        database_url=url,
        workers=2,
        changed=True,
        **BUDGET,
    )
    manifest = json.loads((tmp_path / TILESET / "build.json").read_text())
    assert again.built == 0 and again.kept == len(manifest["tiles"])
    # a tile and tileset.json gone from the bucket: the next --changed build makes a plan, lists
    # the bucket once, and builds that tile again, only that one
    gone = sorted(p for p in base if p.endswith(".glb"))[0]
    import s3fs

    fs = s3fs.S3FileSystem(**s3, skip_instance_cache=True)
    fs.rm([f"{BUCKET}/two/{TILESET}/{gone}", f"{BUCKET}/two/{TILESET}/tileset.json"])
    mended = build_tileset(
        TILESET,
        open_store(f"s3://{BUCKET}/two", s3),
        database_url=url,
        workers=1,
        changed=True,
        **BUDGET,
    )
    assert mended.built == 1
    assert _bucket_files(s3, f"two/{TILESET}") == base


def _cli(args: list[str], settings, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "CIMTWIN_DATABASE_URL": settings.database_url, "COLUMNS": "300"}
    full_env.pop("CIMTWIN_DASK_SCHEDULER", None)
    full_env.pop("CIMTWIN_TILES_STORAGE_OPTIONS", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cimtwin.cli", "tiles", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=full_env,
        cwd=ROOT,
    )


def test_the_cli_builds_and_exports_to_s3(settings, loaded_sample, tmp_path, s3):
    options = json.dumps(s3)
    # build-3d: the options from the environment variable, in this process (--workers 1)
    env = {"CIMTWIN_TILES_STORAGE_OPTIONS": options}
    for out in (f"s3://{BUCKET}/cli", str(tmp_path / "cli")):
        args = ["build-3d", "--layers", "components", "--out", out, "--workers", "1"]
        proc = _cli(args, settings, env)
        assert proc.returncode == 0, proc.stderr
        assert f"{out}/components/tileset.json: " in proc.stderr, proc.stderr
    assert _bucket_files(s3, "cli/components") == _local_files(tmp_path / "cli" / "components")

    # export-mvt: the archive uploaded whole, the same bytes as the local file
    export = ["export-mvt", "--layers", "pipelines,components", "--minzoom", "14", "--maxzoom"]
    for out, more in (
        (f"s3://{BUCKET}/mvt/sample.pmtiles", ["--storage-options", options]),
        (str(tmp_path / "sample.pmtiles"), []),
    ):
        proc = _cli([*export, "15", "--out", out, "--workers", "1", *more], settings)
        assert proc.returncode == 0, proc.stderr
    assert _bucket_files(s3, "mvt") == {
        "sample.pmtiles": hashlib.sha256((tmp_path / "sample.pmtiles").read_bytes()).hexdigest()
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", "nosuch://a/b"], "unknown storage protocol 'nosuch'"),
        (["--out", "memory://tiles", "--workers", "2"], "memory:// is private to one process"),
        (["--out", "s3://"], "give a place after s3://"),
        (["--out", "s3://a/b", "--storage-options", "[1]"], "give a JSON object"),
        (["--out", "s3://a/b", "--storage-options", "{nope"], "--storage-options: not JSON"),
        (["--out", "file:///tmp/x", "--storage-options", '{"a": 1}'], "takes no storage options"),
    ],
)
def test_bad_outputs_are_one_line(settings, loaded_sample, args, message):
    layers = [] if "--layers" in args else ["--layers", TILESET]
    proc = _cli(["build-3d", *layers, *args], settings)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_a_bucket_that_is_not_there_is_one_line(settings, loaded_sample, s3):
    options = json.dumps(s3)
    for command in (
        ["build-3d", "--layers", TILESET, "--workers", "1"],
        ["export-mvt", "--layers", "components", "--minzoom", "15", "--maxzoom", "15"],
    ):
        out = "s3://no-such-bucket/tiles" + ("/a.pmtiles" if command[0] == "export-mvt" else "")
        proc = _cli([*command, "--out", out, "--storage-options", options], settings)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot write there" in lines[-1], proc.stderr


def test_the_api_serves_the_tilesets_a_build_wrote_to_the_bucket(settings, loaded_sample, s3):
    """``CIMTWIN_TILES_DIR`` set to the build's ``--out`` URL: ``/3dtiles`` lists the tileset
    and serves every object of it byte for byte, the build's manifest not at all."""
    from fastapi.testclient import TestClient

    from cimtwin.api.app import create_app
    from cimtwin.tiles.store import open_store
    from cimtwin.tiles.threed.build import build_tileset

    url = f"s3://{BUCKET}/served"
    build_tileset(
        TILESET, open_store(url, s3), database_url=settings.database_url, workers=1, **BUDGET
    )
    stored = _bucket_files(s3, f"served/{TILESET}")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CIMTWIN_TILES_STORAGE_OPTIONS", json.dumps(s3))
        app = create_app(settings.model_copy(update={"tiles_dir": url}))
    with TestClient(app) as c:
        listed = c.get("/3dtiles").json()
        served = {
            path: c.get(f"/3dtiles/{TILESET}/{path}", headers={"Accept-Encoding": "identity"})
            for path in stored
        }
    assert [t["id"] for t in listed] == [TILESET]
    assert listed[0]["url"].endswith(f"/3dtiles/{TILESET}/tileset.json")
    glbs = [p for p in stored if p.endswith(".glb")]
    assert len(glbs) > 1 and "tileset.json" in stored
    for path, r in served.items():
        if path == "build.json":
            assert r.status_code == 404
            continue
        assert r.status_code == 200, (path, r.text)
        assert hashlib.sha256(r.content).hexdigest() == stored[path], path

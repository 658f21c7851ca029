"""Tile folders converted in parallel (the same files for 1 and 2 workers, a worker's error
names its file, an import then writes nothing; progress per folder) and a production of many
folders grouped under parent tiles (fan-out bound, bounds the union of the children's, still
valid)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import psycopg
import pytest

from cimtwin.db.engine import libpq_dsn
from cimtwin.importers.base import ImportOptions
from cimtwin.importers.oblique.georef import ToStorage, read_metadata
from cimtwin.importers.oblique.importer import ObliqueImporter
from cimtwin.importers.oblique.osgb import OsgbError
from cimtwin.importers.oblique.pyramid import (
    FANOUT,
    GROUP_OVER,
    PyramidWriter,
    group,
    production_roots,
)
from cimtwin.importers.report import Report
from cimtwin.importers.runner import ImportFailed, run_import
from cimtwin.spatial.model import SCHEMA
from tests.test_oblique_read import production
from tests.test_oblique_read import pytestmark as _read_marks
from tests.threed_check import validate

pytestmark = _read_marks
TILE = "Tile_+000_+012"


def copies(out: Path, n: int, only_root: bool = False) -> Path:
    """The sample's tile folder copied to ``n`` folders (``only_root``: its coarsest file
    only, the children then missing, for a cheap production of many folders)."""
    src = production() / "Data" / TILE
    (out / "Data").mkdir(parents=True)
    shutil.copyfile(production() / "metadata.xml", out / "metadata.xml")
    for k in range(n):
        name = f"Tile_+{k // 10:03d}_+{k % 10:03d}"
        folder = out / "Data" / name
        folder.mkdir()
        for f in src.iterdir():
            if only_root and f.name != f"{TILE}.osgb":
                continue
            target = folder / (f"{name}.osgb" if f.name == f"{TILE}.osgb" else f.name)
            shutil.copyfile(f, target)
            target.chmod(0o644)
    return out


def build(production_dir: Path, out: Path, workers: int, steps: list[int] | None = None):
    meta = read_metadata(production_dir / "metadata.xml")
    out.mkdir()
    report = Report()
    result = PyramidWriter(
        production_dir,
        ToStorage(meta.srs, meta.origin, None),
        out,
        report,
        advance=steps.append if steps is not None else None,
        workers=workers,
    ).build(production_roots(production_dir), {"title": "t"})
    return result, report


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_one_and_two_workers_write_the_same_files(tmp_path: Path) -> None:
    two_folders = copies(tmp_path / "two", 2)
    serial, serial_report = build(two_folders, tmp_path / "serial", 1)
    steps: list[int] = []
    parallel, parallel_report = build(two_folders, tmp_path / "parallel", 2, steps)
    a, b = files(tmp_path / "serial"), files(tmp_path / "parallel")
    assert len(a) == 1 + 80 and sorted(a) == sorted(b)  # tileset.json and every tile's glb
    assert [k for k in a if a[k] != b[k]] == []
    assert steps == [1, 1]  # one step per finished tile folder
    assert [(r.number, r.parent, r.uri, r.source) for r in serial.records] == [
        (r.number, r.parent, r.uri, r.source) for r in parallel.records
    ]
    assert len({r.number for r in parallel.records}) == 80
    assert parallel.files_read == 18
    assert [p.message for p in serial_report.problems] == [
        p.message for p in parallel_report.problems
    ]
    assert any("missing" in p.message for p in parallel_report.problems)
    validate(tmp_path / "parallel" / "tileset.json")
    # the sample production itself (one folder) is the same with a pool of 2
    build(production(), tmp_path / "one1", 1)
    build(production(), tmp_path / "one2", 2)
    assert files(tmp_path / "one1") == files(tmp_path / "one2")


def test_an_error_in_a_worker_names_the_file(tmp_path: Path) -> None:
    two_folders = copies(tmp_path / "two", 2)
    broken = two_folders / "Data" / "Tile_+000_+001" / f"{TILE}_L16_0uu.osgb"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(OsgbError, match=re.escape(str(broken))):
        build(two_folders, tmp_path / "out", 2)


def _tiles(tile: dict):
    yield tile
    for child in tile.get("children", []):
        yield from _tiles(child)


def test_many_tile_folders_are_grouped_under_parent_tiles(tmp_path: Path) -> None:
    n = 80
    assert n > GROUP_OVER
    many = copies(tmp_path / "many", n, only_root=True)
    result, _ = build(many, tmp_path / "out", 2)
    validate(tmp_path / "out" / "tileset.json")
    doc = json.loads((tmp_path / "out" / "tileset.json").read_text())
    tiles = list(_tiles(doc["root"]))
    assert max(len(t.get("children", [])) for t in tiles) <= FANOUT
    with_content = [t for t in tiles if "content" in t]
    assert len(with_content) == len([r for r in result.records if r.uri]) >= n
    for t in tiles:
        kids = t.get("children", [])
        if "content" in t or not kids:
            continue
        # an empty parent: the union of its children, twice the largest child's error
        region = t["boundingVolume"]["region"]
        regions = [c["boundingVolume"]["region"] for c in kids]
        assert region[:2] == [min(r[i] for r in regions) for i in (0, 1)]
        assert region[2:4] == [max(r[i] for r in regions) for i in (2, 3)]
        assert t["geometricError"] == max(c["geometricError"] for c in kids) * 2


def test_group_bounds_the_fan_out_of_folders_spread_on_a_grid() -> None:
    items = []
    for k in range(1000):
        x, y = (k % 40) * 0.001, (k // 40) * 0.001
        items.append(({"k": k}, 1.0 + k % 7, [x, y, x + 0.001, y + 0.001, 0.0, 10.0]))
    top = group(items)
    assert len(top) <= FANOUT
    seen: list[int] = []

    def walk(tile: dict, region: list[float], depth: int) -> None:
        assert depth < 10
        if "k" in tile:
            seen.append(tile["k"])
            return
        assert 2 <= len(tile["children"]) <= FANOUT
        for child in tile["children"]:
            cr = child["boundingVolume"]["region"] if "boundingVolume" in child else None
            if cr is not None:
                assert region[0] <= cr[0] and cr[2] <= region[2]
            walk(child, region, depth + 1)

    for tile, _, region in top:
        walk(tile, region, 0)
    assert sorted(seen) == list(range(1000))
    # a group holds neighbours: a leaf group spans a small part of the grid
    leaf_groups = [
        t for t, _, _ in top for t in _tiles(t) if t.get("children") and "k" in t["children"][0]
    ]
    assert leaf_groups
    for t in leaf_groups:
        r = t["boundingVolume"]["region"]
        assert (r[2] - r[0]) * (r[3] - r[1]) < 0.04 * 0.025 / 8


def test_an_import_whose_worker_fails_writes_nothing(scratch_database: str, tmp_path: Path) -> None:
    """Through the runner, 2 workers: the error names the file, no rows, no tileset, no
    staging folder; then the intact copy imports with its parent rows linked across folders."""
    two_folders = copies(tmp_path / "two", 2)
    broken = two_folders / "Data" / "Tile_+000_+001" / f"{TILE}_L17_0uuu.osgb"
    data = broken.read_bytes()
    tiles = tmp_path / "tiles"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImportFailed, match=re.escape(str(broken))) as failed:
        run_import(
            ObliqueImporter(tiles_dir=tiles, workers=2),
            [two_folders],
            ImportOptions(dataset="broken2"),
            scratch_database,
        )
    assert "nothing was written" in str(failed.value)
    assert not tiles.exists() or not list(tiles.iterdir())
    broken.write_bytes(data)
    steps: list[int] = []

    def progress(_description: str, total: int):
        assert total == 2  # tile folders, not OSGB files
        return steps.append

    result = run_import(
        ObliqueImporter(tiles_dir=tiles, workers=2),
        [two_folders],
        ImportOptions(dataset="two", progress=progress),
        scratch_database,
    )
    assert result.counts["oblique_mesh_tile"] == 80 and steps == [1, 1]
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        linked = conn.execute(
            f"SELECT count(*), count(DISTINCT p.tile_path) FROM {SCHEMA}.oblique_mesh_tile c "
            f"JOIN {SCHEMA}.oblique_mesh_tile p ON p.id = c.parent_id WHERE c.dataset = 'two'"
        ).fetchone()
    assert linked is not None and linked[0] == 80 - 2  # every tile but the 2 roots
    assert not [p for p in tiles.iterdir() if p.name.startswith(".")]
    validate(tiles / "oblique-two" / "tileset.json")

"""``cimtwin import oblique``: the sample production imports with one ``oblique_mesh_tile``
row per tile and its tileset under CIMTWIN_TILES_DIR (listed by /3dtiles); the single-tile
production without metadata.xml is refused until --crs and --origin place it; a truncated
OSGB fails naming the file with nothing written (no rows, no tileset, no staging folder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from cimtwin.api.threed import list_tilesets
from cimtwin.db.engine import libpq_dsn
from cimtwin.importers.base import ImportOptions
from cimtwin.importers.oblique.importer import ObliqueImporter
from cimtwin.importers.oblique.rebuild import rebuild
from cimtwin.importers.runner import ImportFailed, run_import
from cimtwin.spatial.model import SCHEMA
from cimtwin.tiles.store import open_store
from tests.conftest import ROOT
from tests.test_oblique_read import OBLIQUE, production
from tests.threed_check import validate

pytestmark = [
    pytest.mark.skipif(
        OBLIQUE is None, reason="../shared/data/oblique (the OSGB sample) is absent"
    ),
    pytest.mark.skipif(
        shutil.which("osgconv") is None, reason="osgconv missing (apt-get install openscenegraph)"
    ),
]


def rows(url: str, dataset: str) -> list[tuple]:
    with psycopg.connect(libpq_dsn(url)) as conn:
        return conn.execute(
            f"SELECT level, geometric_error, vertex_count, texture_count, min_z, max_z, "
            f"tileset, content_uri, ST_XMin(footprint), ST_YMin(footprint), parent_id, id "
            f"FROM {SCHEMA}.oblique_mesh_tile WHERE dataset = %s ORDER BY id",
            (dataset,),
        ).fetchall()


def test_the_sample_production_imports(scratch_database: str, tmp_path: Path) -> None:
    importer = ObliqueImporter(tiles_dir=tmp_path)
    options = ImportOptions(dataset="sample_gk")
    result = run_import(importer, [production()], options, scratch_database)
    assert result.status == "succeeded"
    assert result.counts["oblique_mesh_tile"] == 40
    rules = {p.rule for p in result.report.warnings}
    assert {"oblique-srs-label", "oblique-missing-child"} <= rules

    folder = tmp_path / "oblique-sample_gk"
    validate(folder / "tileset.json")
    assert ("oblique-sample_gk", "Oblique photography sample_gk") in list_tilesets(
        open_store(tmp_path)
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left

    got = rows(scratch_database, "sample_gk")
    assert len(got) == 40
    root = got[0]
    assert root[0] == 0 and root[1] == pytest.approx(64.0, rel=1e-5) and root[10] is None
    assert root[2] == 6746 and root[3] == 1 and root[6] == "oblique-sample_gk"
    assert (folder / root[7]).is_file()
    # bounds in the storage CRS (EPSG:4547, CM 114): the WKT's CM 113.37 puts the
    # production about 64 km west of the label's false easting
    assert 430_000 < root[8] < 440_000 and 2_489_000 < root[9] < 2_491_000
    assert all(r[10] is not None for r in got[1:])  # every other tile has its parent
    assert sorted({r[0] for r in got}) == [0, 1, 2, 3, 4, 5]

    # unchanged: nothing to do; the tileset stays
    again = run_import(importer, [production()], options, scratch_database)
    assert again.status == "unchanged"
    assert (folder / "tileset.json").is_file()


def test_a_single_tile_without_metadata_needs_crs_and_origin(
    scratch_database: str, tmp_path: Path
) -> None:
    assert OBLIQUE is not None
    single = OBLIQUE / "single_tile"
    importer = ObliqueImporter(tiles_dir=tmp_path)
    with pytest.raises(ImportFailed, match="no metadata.xml") as refused:
        run_import(importer, [single], ImportOptions(dataset="single"), scratch_database)
    assert "--crs" in str(refused.value) and "--origin" in str(refused.value)
    assert not list(tmp_path.iterdir())

    options = ImportOptions(dataset="single", crs="EPSG:4547", origin="501027.524,2488718.808,0")
    result = run_import(importer, [single], options, scratch_database)
    assert result.status == "succeeded"
    assert [p.rule for p in result.report.warnings] == ["oblique-missing-child"]
    validate(tmp_path / "oblique-single" / "tileset.json")
    (row,) = rows(scratch_database, "single")
    assert row[2] == 200 and row[3] == 1 and row[1] == 0.0  # a leaf: its child is missing
    assert 430 < row[4] < row[5] < 460  # heights as given (1985)


def test_a_truncated_osgb_writes_nothing(scratch_database: str, tmp_path: Path) -> None:
    copy = tmp_path / "production"
    shutil.copytree(production(), copy)
    broken = copy / "Data" / "Tile_+000_+012" / "Tile_+000_+012_L17_0uuu.osgb"
    broken.chmod(0o644)
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    tiles = tmp_path / "tiles"
    with pytest.raises(ImportFailed, match=r"Tile_\+000_\+012_L17_0uuu\.osgb") as failed:
        run_import(
            ObliqueImporter(tiles_dir=tiles),
            [copy],
            ImportOptions(dataset="broken"),
            scratch_database,
        )
    assert "nothing was written" in str(failed.value)
    assert rows(scratch_database, "broken") == []
    assert not tiles.exists() or not list(tiles.iterdir())


def test_the_cli_prints_the_label_warning(scratch_database: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cimtwin.cli",
            "import",
            "oblique",
            str(production()),
            "--dataset",
            "cli_gk",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={
            **os.environ,
            "CIMTWIN_DATABASE_URL": scratch_database,
            "CIMTWIN_TILES_DIR": str(tmp_path),
            "COLUMNS": "400",
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert "oblique-srs-label" in proc.stderr and "EPSG:4547" in proc.stderr
    assert "oblique_mesh_tile 40" in proc.stderr
    doc = json.loads((tmp_path / "oblique-cli_gk" / "tileset.json").read_text())
    assert doc["asset"]["extras"]["height_datum"] == "1985"


def test_an_import_into_a_bucket_uploads_the_tileset_after_the_commit(
    scratch_database: str, tmp_path: Path
) -> None:
    """``CIMTWIN_TILES_DIR`` an object store: the tileset is built in a temporary folder and
    uploaded once the rows committed; what an older version left there is removed."""
    import tempfile

    import s3fs

    from tests.s3_server import moto_s3

    assert OBLIQUE is not None
    single = OBLIQUE / "single_tile"
    with moto_s3("cimtwin-oblique") as s3:
        store = open_store("s3://cimtwin-oblique/3d", s3)
        fs = s3fs.S3FileSystem(**s3, skip_instance_cache=True)
        fs.pipe_file("cimtwin-oblique/3d/oblique-single_s3/tiles/stale.glb", b"an older version")
        options = ImportOptions(
            dataset="single_s3", crs="EPSG:4547", origin="501027.524,2488718.808,0"
        )
        result = run_import(ObliqueImporter(tiles_dir=store), [single], options, scratch_database)
        uploaded = store.file_sizes("oblique-single_s3")
        for rel in uploaded:
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_bytes(fs.cat_file(f"cimtwin-oblique/3d/oblique-single_s3/{rel}"))
        (row,) = rows(scratch_database, "single_s3")
        # build-3d --layers oblique into the bucket: the production found by its footprint,
        # re-imported as a new batch, its tileset uploaded again
        x, y = row[8], row[9]
        built = rebuild(scratch_database, store, area=(x - 1, y - 1, x + 1, y + 1))
        again = store.file_sizes("oblique-single_s3")
        rebuilt = json.loads(fs.cat_file("cimtwin-oblique/3d/oblique-single_s3/tileset.json"))
    assert result.status == "succeeded"
    assert "tileset.json" in uploaded and "tiles/stale.glb" not in uploaded
    validate(tmp_path / "tileset.json")
    assert row[7] in uploaded and uploaded[row[7]] > 0
    # (other tests of the module may have imported the same tile under other names)
    (mine,) = [b for b in built if b.tileset == "oblique-single_s3"]
    assert mine.path == "s3://cimtwin-oblique/3d/oblique-single_s3/tileset.json"
    assert mine.built == 1 and mine.bytes == sum(again.values())
    assert again.keys() == uploaded.keys()
    assert rebuilt == json.loads((tmp_path / "tileset.json").read_text())
    (new_row,) = rows(scratch_database, "single_s3")
    assert new_row[11] != row[11]  # a new batch's row replaced the first
    assert not list(Path(tempfile.gettempdir()).glob("cimtwin-oblique-single_s3-*"))

"""What the import runner protects for every kind of import: a file without rows does not wipe
a dataset, and a default dataset name does not join two unrelated deliveries
(issue 9, defects 3 and 4)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from cimtwin.db.engine import libpq_dsn
from cimtwin.errors import UserError
from cimtwin.importers.registry import importer_for
from cimtwin.importers.runner import ImportOptions, default_dataset, run_import
from tests.conftest import table_fingerprint

POINTS = "物探点号,管线类别,管线小类,特征,附属物,X,Y,地面高程,井深,备注\n"
LINES = "起点点号,终点点号,管线类别,管线小类,起点埋深,终点埋深,管径,材质,状态\n"


def survey(folder: Path, rows: bool = True, y0: float = 503000) -> list[Path]:
    """A two-point, one-pipe CJJ 61 delivery (or just its headers) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pts, lns = folder / "clean_points.csv", folder / "clean_lines.csv"
    pts.write_text(
        POINTS
        + (
            f"A,JS,JP,三通,,2501000,{y0},10,,\nB,JS,JP,三通,,2501000,{y0 + 100},10,,\n"
            if rows
            else ""
        ),
        encoding="utf-8",
    )
    lns.write_text(
        LINES + ("A,B,JS,JP,1.2,1.2,200,球墨铸铁,在用\n" if rows else ""), encoding="utf-8"
    )
    return [pts, lns]


def rows_of(url: str, dataset: str) -> tuple[int, int]:
    with psycopg.connect(libpq_dsn(url)) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM cim.pipeline_node WHERE dataset = %s), "
            "(SELECT count(*) FROM cim.pipeline_segment WHERE dataset = %s)",
            (dataset, dataset),
        ).fetchone()


PIPES = importer_for("pipelines")
CRS = "EPSG:4547"


# --- defect 3: a file without rows --------------------------------------------------------------
def test_a_header_only_table_is_refused_and_the_dataset_kept(scratch_database: str, tmp_path: Path):
    run_import(
        PIPES,
        survey(tmp_path / "full"),
        ImportOptions(crs=CRS, dataset="keep-me"),
        scratch_database,
    )
    assert rows_of(scratch_database, "keep-me") == (2, 1)
    empty = survey(tmp_path / "full", rows=False)  # the same files, now header-only
    before = table_fingerprint(scratch_database)
    for dry_run in (True, False):
        with pytest.raises(
            UserError,
            match=r"no rows in clean_points\.csv, clean_lines\.csv.*"
            r"--allow-empty",
        ):
            run_import(
                PIPES,
                empty,
                ImportOptions(crs=CRS, dataset="keep-me", dry_run=dry_run),
                scratch_database,
            )
    assert table_fingerprint(scratch_database) == before
    # said on purpose, an empty delivery empties the dataset
    r = run_import(
        PIPES, empty, ImportOptions(crs=CRS, dataset="keep-me", allow_empty=True), scratch_database
    )
    assert r.status == "succeeded"
    assert (r.counts["pipeline_node"], r.counts["pipeline_segment"]) == (0, 0)
    assert rows_of(scratch_database, "keep-me") == (0, 0)


def test_one_header_only_table_among_full_ones_is_refused(scratch_database: str, tmp_path: Path):
    """A full point table with a header-only line table would drop the dataset's pipes."""
    run_import(
        PIPES, survey(tmp_path / "d"), ImportOptions(crs=CRS, dataset="half"), scratch_database
    )
    pts, lns = survey(tmp_path / "d", y0=503000)
    lns.write_text(LINES, encoding="utf-8")  # the line table lost its rows
    before = table_fingerprint(scratch_database)
    with pytest.raises(UserError, match="1 error") as failed:
        run_import(PIPES, [pts, lns], ImportOptions(crs=CRS, dataset="half"), scratch_database)
    problems = failed.value.report.errors
    assert [(p.file, p.rule) for p in problems] == [("clean_lines.csv", "no-rows")]
    assert "--allow-empty" in problems[0].message
    assert table_fingerprint(scratch_database) == before
    r = run_import(
        PIPES,
        [pts, lns],
        ImportOptions(crs=CRS, dataset="half", allow_empty=True),
        scratch_database,
    )
    assert rows_of(scratch_database, "half") == (2, 0) and r.status == "succeeded"


def test_empty_files_of_other_kinds_are_refused_too(scratch_database: str, tmp_path: Path):
    import geopandas as gpd

    valves = tmp_path / "valves.csv"
    valves.write_text(",link,node\n", encoding="utf-8")
    components = tmp_path / "components.gpkg"  # a layer with its columns and no features
    gpd.GeoDataFrame(
        {"comp_id": [], "class_cd": [], "name": []}, geometry=[], crs="EPSG:4547"
    ).to_file(components, driver="GPKG", engine="pyogrio")
    run_import(
        importer_for("components"),
        [Path(__file__).parents[1] / "data_samples" / "north_station" / "gpkg" / "components.gpkg"],
        ImportOptions(dataset="comp-keep"),
        scratch_database,
    )
    incidents = tmp_path / "incidents.geojson"  # no features, and so no columns either
    incidents.write_text('{"type": "FeatureCollection", "features": []}', encoding="utf-8")
    before = table_fingerprint(scratch_database)
    for kind, path, dataset in (
        ("valves", valves, "keep-me"),
        ("components", components, "comp-keep"),
        ("incidents", incidents, "no-incidents"),
    ):
        with pytest.raises(UserError, match=rf"{kind}: no rows in {path.name}"):
            run_import(importer_for(kind), [path], ImportOptions(dataset=dataset), scratch_database)
    assert table_fingerprint(scratch_database) == before
    for kind, path, dataset in (
        ("components", components, "comp-keep"),
        ("incidents", incidents, "no-incidents"),
    ):
        r = run_import(
            importer_for(kind),
            [path],
            ImportOptions(dataset=dataset, allow_empty=True, replace=True),
            scratch_database,
        )
        assert r.status == "succeeded", kind
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM cim.city_component c JOIN cim.import_batch b "
                "ON b.id = c.batch_id WHERE b.dataset = 'comp-keep'"
            ).fetchone()[0]
            == 0
        )


def test_cli_refuses_an_empty_file_unless_allow_empty(scratch_database: str, tmp_path: Path):
    empty = survey(tmp_path, rows=False)
    env = {**os.environ, "CIMTWIN_DATABASE_URL": scratch_database}
    cmd = [
        sys.executable,
        "-m",
        "cimtwin.cli",
        "import",
        "pipelines",
        *map(str, empty),
        "--crs",
        CRS,
        "--dataset",
        "cli-empty",
    ]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2
    assert "no rows in clean_points.csv, clean_lines.csv" in refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout
    allowed = subprocess.run(
        [*cmd, "--allow-empty"], capture_output=True, text=True, env=env, timeout=120
    )
    assert allowed.returncode == 0, allowed.stderr
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        row = conn.execute(
            "SELECT status, feature_count FROM cim.import_batch WHERE dataset = 'cli-empty'"
        ).fetchall()
    assert row == [("succeeded", 0)]


# --- defect 4: default dataset names ------------------------------------------------------------
def test_default_dataset_comes_from_the_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    names = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        names.append(default_dataset("pipelines", [Path("clean_points.csv")]))
    assert names == [
        f"pipelines:{tmp_path.resolve()}/a/clean_points",
        f"pipelines:{tmp_path.resolve()}/b/clean_points",
    ]
    # a path longer than the dataset column stays unique, and within it
    deep = tmp_path.joinpath(*["d" * 50] * 6, "clean_points.csv")
    other = tmp_path.joinpath(*["e" * 50] * 6, "clean_points.csv")
    long_a, long_b = (default_dataset("pipelines", [p]) for p in (deep, other))
    assert len(long_a) <= 200 and len(long_b) <= 200 and long_a != long_b
    assert long_a.startswith("pipelines:") and long_a.endswith("/clean_points")


def test_same_named_files_from_two_folders_stay_two_datasets(
    scratch_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    results = []
    for folder, y0 in (("site1", 503000), ("site2", 504000)):
        survey(tmp_path / folder / "pipelines", y0=y0)
        monkeypatch.chdir(tmp_path / folder)
        rel = [Path("pipelines/clean_points.csv"), Path("pipelines/clean_lines.csv")]
        results.append(run_import(PIPES, rel, ImportOptions(crs=CRS), scratch_database))
    assert results[0].dataset != results[1].dataset
    for r in results:
        assert r.status == "succeeded"
        assert rows_of(scratch_database, r.dataset) == (2, 1)  # neither replaced the other
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        recorded = conn.execute(
            "SELECT source_files FROM cim.import_batch WHERE id = %s", (results[1].batch_id,)
        ).fetchone()[0]
    assert recorded == [
        str(tmp_path.resolve() / "site2" / "pipelines" / f)
        for f in ("clean_points.csv", "clean_lines.csv")
    ]


def test_a_dataset_from_other_files_is_replaced_only_with_replace(
    scratch_database: str, tmp_path: Path
):
    first = survey(tmp_path / "north", y0=503000)
    second = survey(tmp_path / "south", y0=504000)
    run_import(PIPES, first, ImportOptions(crs=CRS, dataset="shared-name"), scratch_database)
    before = table_fingerprint(scratch_database)
    with pytest.raises(UserError) as exc:
        run_import(PIPES, second, ImportOptions(crs=CRS, dataset="shared-name"), scratch_database)
    message = str(exc.value)
    assert "shared-name" in message and "--replace" in message
    assert str(first[0].resolve()) in message and str(second[0].resolve()) in message
    assert table_fingerprint(scratch_database) == before
    # the same files again (changed) replace as before, without --replace
    survey(tmp_path / "north", y0=503500)
    again = run_import(
        PIPES, first, ImportOptions(crs=CRS, dataset="shared-name"), scratch_database
    )
    assert again.status == "succeeded"
    forced = run_import(
        PIPES, second, ImportOptions(crs=CRS, dataset="shared-name", replace=True), scratch_database
    )
    assert forced.status == "succeeded"
    assert rows_of(scratch_database, "shared-name") == (2, 1)

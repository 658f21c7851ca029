"""Importing the sample district and the dirty sample into the real PostGIS."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pyogrio
import pytest
import shapely
from sqlalchemy import Engine, text

from cimtwin.db.engine import libpq_dsn
from cimtwin.errors import UserError
from cimtwin.importers.registry import importer_for
from cimtwin.importers.runner import ImportFailed, ImportOptions, run_import
from cimtwin.samples.loader import OPTIONAL_KINDS, SAMPLE_STEPS, load_sample
from cimtwin.spatial.base import SCHEMA
from tests.conftest import DIRTY, SAMPLE, table_fingerprint


def csv_rows(path: Path) -> int:
    with path.open(encoding="utf-8") as fh:
        return sum(1 for _ in csv.reader(fh)) - 1


def test_sample_loads_without_errors_and_counts_match_files(loaded_sample, engine: Engine):
    for kind, result in loaded_sample.items():
        assert result.status == "succeeded", kind
        assert result.report.errors == [], kind
    expect = {
        "work_grid": pyogrio.read_info(SAMPLE / "gpkg/admin.gpkg", layer="work_grid")["features"],
        "community": pyogrio.read_info(SAMPLE / "gpkg/admin.gpkg", layer="community")["features"],
        "street": pyogrio.read_info(SAMPLE / "gpkg/admin.gpkg", layer="street")["features"],
        "parcel": pyogrio.read_info(SAMPLE / "gpkg/parcels.gpkg")["features"],
        "building": pyogrio.read_info(SAMPLE / "gpkg/buildings.gpkg", layer="building")["features"],
        "city_component": pyogrio.read_info(SAMPLE / "gpkg/components.gpkg")["features"],
        "pipeline_node": csv_rows(SAMPLE / "pipelines/points.csv"),
        "pipeline_segment": csv_rows(SAMPLE / "pipelines/lines.csv"),
        "incident": len(json.loads((SAMPLE / "incidents.geojson").read_text())["features"]),
    }
    with engine.connect() as c:
        for table, n in expect.items():
            got = c.execute(
                text(
                    f"SELECT count(*) FROM cim.{table} t JOIN cim.import_batch b ON b.id = "
                    "t.batch_id"
                    " WHERE b.dataset LIKE 'sample:north_station:%'"
                )
            ).scalar()
            assert got == n > 0, table
        # every component and building got its work grid at import time (进格入块)
        assert (
            c.execute(
                text("SELECT count(*) FROM cim.city_component WHERE grid_code IS NULL")
            ).scalar()
            == 0
        )
        # provenance: file hash, CRS and counts recorded
        rows = c.execute(
            text(
                "SELECT kind, sha256, source_crs, counts FROM cim.import_batch "
                "WHERE dataset LIKE 'sample:north_station:%'"
            )
        ).all()
    assert {r.kind for r in rows} == {k for k, _, _ in SAMPLE_STEPS}
    assert all(len(r.sha256) == 64 and r.source_crs for r in rows)


def test_pipes_are_3d_with_topology(loaded_sample, engine: Engine):
    with engine.connect() as c:
        bad_ends = c.execute(
            text(
                "SELECT count(*) FROM cim.pipeline_segment s JOIN cim.pipeline_node a ON "
                "a.id = s.from_node_id JOIN cim.pipeline_node b ON b.id = s.to_node_id WHERE "
                "ST_Distance(ST_StartPoint(s.geom), a.geom) > 0.001 OR "
                "ST_Distance(ST_EndPoint(s.geom), b.geom) > 0.001"
            )
        ).scalar()
        below = c.execute(
            text(
                "SELECT bool_and(ST_ZMax(s.geom) < a.ground_elevation_m) FROM "
                "cim.pipeline_segment s"
                " JOIN cim.pipeline_node a ON a.id = s.from_node_id"
            )
        ).scalar()
        uphill = c.execute(
            text(
                "SELECT count(*) FROM cim.pipeline_segment WHERE network = 'PS' AND "
                "flow_direction * (to_elevation_m - from_elevation_m) > 0.005"
            )
        ).scalar()
    assert bad_ends == 0
    assert below  # every pipe lies below the ground at its start
    assert uphill == 0


def test_reimport_replaces_instead_of_duplicating(loaded_sample, engine: Engine, database_url: str):
    paths = [SAMPLE / "incidents.geojson"]
    opts = ImportOptions(dataset="sample:north_station:incidents")
    again = run_import(importer_for("incidents"), paths, opts, database_url)
    assert again.status == "unchanged"
    forced = run_import(
        importer_for("incidents"),
        paths,
        ImportOptions(dataset="sample:north_station:incidents", replace=True),
        database_url,
    )
    assert forced.status == "succeeded"
    with engine.connect() as c:
        n = c.execute(text("SELECT count(*) FROM cim.incident")).scalar()
        statuses = dict(
            c.execute(
                text(
                    "SELECT id, status FROM cim.import_batch WHERE dataset = "
                    "'sample:north_station:incidents'"
                )
            ).all()
        )
    assert n == forced.counts["incident"] == 40
    assert statuses[forced.batch_id] == "succeeded"
    assert list(statuses.values()).count("replaced") >= 1


def test_gbk_and_xlsx_tables_import_the_same_rows(loaded_sample, engine: Engine, database_url: str):
    p = SAMPLE / "pipelines"
    variants = {"gbk": [p / "points_gbk.csv", p / "lines_gbk.csv"], "xlsx": [p / "pipelines.xlsx"]}
    for name, paths in variants.items():
        r = run_import(
            importer_for("pipelines"),
            paths,
            ImportOptions(crs="EPSG:4547", dataset=f"variant-{name}"),
            database_url,
        )
        assert r.report.errors == []
    cols = (
        "point_no, network, subtype, feature, appurtenance, ground_elevation_m, "
        "well_depth_m, ST_AsEWKT(geom)"
    )
    seg = (
        "network, subtype, from_depth_m, to_depth_m, diameter_mm, width_mm, height_mm, "
        "material, burial, owner, build_year, pressure_class, flow_direction, status, road, "
        "ST_AsEWKT(geom)"
    )
    with engine.connect() as c:
        for name in variants:
            for table, what in (("pipeline_node", cols), ("pipeline_segment", seg)):
                diff = c.execute(
                    text(
                        f"SELECT count(*) FROM ((SELECT {what} FROM cim.{table} WHERE dataset = "
                        f"'sample:north_station:pipelines' EXCEPT SELECT {what} FROM cim.{table} "
                        f"WHERE dataset = :d) UNION ALL (SELECT {what} FROM cim.{table} WHERE "
                        f"dataset = :d EXCEPT SELECT {what} FROM cim.{table} WHERE dataset = "
                        "'sample:north_station:pipelines')) x"
                    ),
                    {"d": f"variant-{name}"},
                ).scalar()
                assert diff == 0, (name, table)
            n = c.execute(
                text("SELECT count(*) FROM cim.pipeline_segment WHERE dataset = :d"),
                {"d": f"variant-{name}"},
            ).scalar()
            assert n == csv_rows(p / "lines.csv")
        c.execute(text("DELETE FROM cim.pipeline_node WHERE dataset LIKE 'variant-%'"))
        c.commit()


# --- the dirty sample -----------------------------------------------------------------------
def _problems_by_rule(report) -> dict[str, list]:
    out: dict[str, list] = {}
    for p in report.problems:
        out.setdefault(p.rule, []).append(p)
    return out


DEFECT_RULES = {
    "duplicate_point_no": ("duplicate-point-no",),
    "line_end_missing": ("line-end-unknown",),
    "gravity_uphill": ("gravity-uphill",),
    "line_start_equals_end": ("line-self-loop",),
    "depth_out_of_range": ("depth-range", "depth-typical"),
    "unknown_material": ("material-unknown",),
    "unknown_component_class": ("component-class-unknown",),
    "invalid_geometry": ("geometry-invalid",),
}


@pytest.fixture(scope="module")
def dirty_attempts(scratch_database: str):
    """Try every layer of the dirty sample on a database holding the clean sample."""
    load_sample(SAMPLE, scratch_database)
    attempts = {}
    for kind, files, crs in SAMPLE_STEPS:
        if kind in OPTIONAL_KINDS and not all((DIRTY / f).exists() for f in files):
            continue  # the defect sample has no DEM
        before = table_fingerprint(scratch_database)
        try:
            result = run_import(
                importer_for(kind),
                [DIRTY / f for f in files],
                ImportOptions(crs=crs, strict=True),
                scratch_database,
            )
            outcome = ("succeeded", result.report)
        except ImportFailed as exc:
            outcome = ("failed", exc.report)
        attempts[kind] = (*outcome, before, table_fingerprint(scratch_database))
    return attempts


def test_every_planted_defect_is_reported_with_file_and_row(dirty_attempts):
    defects = json.loads((DIRTY / "defects.json").read_text(encoding="utf-8"))["defects"]
    by_file = {
        "pipelines/points.csv": "pipelines",
        "pipelines/lines.csv": "pipelines",
        "gpkg/components.gpkg#component": "components",
        "gpkg/parcels.gpkg#parcel": "parcels",
    }
    checked = 0
    for d in defects:
        if d["rule"] == "missing_crs":
            continue
        kind = by_file[d["file"]]
        status, report, _, _ = dirty_attempts[kind]
        assert status == "failed", d
        found = [
            p for rule in DEFECT_RULES[d["rule"]] for p in _problems_by_rule(report).get(rule, [])
        ]
        fname = Path(d["file"].split("#")[0]).name
        if "rows" in d:  # table rows: the line a surveyor sees (header = line 1)
            want = {str(r + 1) for r in d["rows"]}
            got = {p.row for p in found if p.file == fname}
            assert want <= got, (d, [(p.file, p.row) for p in found])
        else:
            assert any(p.file.split(":")[0] == fname and d["feature"] in p.row for p in found), (
                d,
                found,
            )
        checked += 1
    assert checked == len(defects) - 1


def test_failed_imports_leave_the_database_unchanged(dirty_attempts):
    for kind, (status, _, before, after) in dirty_attempts.items():
        if status == "failed":
            assert after == before, kind
    assert {k for k, v in dirty_attempts.items() if v[0] == "failed"} >= {
        "pipelines",
        "components",
        "parcels",
    }


def test_a_file_without_crs_is_refused(scratch_database: str):
    with pytest.raises(UserError, match=r"component_nocrs\.shp.*no CRS"):
        run_import(
            importer_for("components"),
            [DIRTY / "shp/component_nocrs.shp"],
            ImportOptions(),
            scratch_database,
        )
    # with --crs it reads, and then stops at the unknown class code
    with pytest.raises(ImportFailed):
        run_import(
            importer_for("components"),
            [DIRTY / "shp/component_nocrs.shp"],
            ImportOptions(crs="EPSG:4547"),
            scratch_database,
        )


def test_dirty_pipelines_in_gbk_and_xlsx_report_the_same_defects(scratch_database: str):
    p = DIRTY / "pipelines"
    seen = []
    for paths in (
        [p / "points.csv", p / "lines.csv"],
        [p / "points_gbk.csv", p / "lines_gbk.csv"],
        [p / "pipelines.xlsx"],
    ):
        with pytest.raises(ImportFailed) as exc:
            run_import(
                importer_for("pipelines"), paths, ImportOptions(crs="EPSG:4547"), scratch_database
            )
        seen.append(sorted((pr.rule, pr.row) for pr in exc.value.report.errors))
    assert seen[0] == seen[1] == seen[2]


# --- robustness ------------------------------------------------------------------------------
def _big_components(path: Path, n: int, first: int = 0) -> None:
    rng = np.random.default_rng(7)
    x = 502_456 + rng.uniform(-700, 700, n)
    y = 2_501_564 + rng.uniform(-500, 500, n)
    import geopandas as gpd

    gpd.GeoDataFrame(
        {
            "comp_id": [f"4403090118{first + i:06d}" for i in range(n)],
            "class_cd": ["0118"] * n,
            "name": ["路灯"] * n,
            "status": ["完好"] * n,
        },
        geometry=shapely.points(x, y),
        crs="EPSG:4547",
    ).to_file(path, driver="GPKG", engine="pyogrio")


def test_a_killed_import_leaves_no_partial_rows(scratch_database: str, tmp_path: Path):
    big = tmp_path / "big_components.gpkg"
    _big_components(big, 400_000)
    before = table_fingerprint(scratch_database)
    env = {**os.environ, "CIMTWIN_DATABASE_URL": scratch_database}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cimtwin.cli",
            "import",
            "components",
            str(big),
            "--dataset",
            "kill-test",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    copying = False
    with psycopg.connect(libpq_dsn(scratch_database), autocommit=True) as conn:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name IN "
                "('cimtwin-import components', 'cimtwin-staging') "
                "AND query ILIKE 'COPY%city_component%'"
            ).fetchone()
            if row[0]:
                copying = True
                break
            time.sleep(0.02)
        assert copying, "the import never reached its COPY"
        time.sleep(0.3)  # let some rows stream in
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        # the server notices the dead client and rolls its transaction back
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                "'cimtwin-import%' OR application_name = 'cimtwin-staging'"
            ).fetchone()[0]
        ):
            time.sleep(0.1)
    assert proc.returncode == -signal.SIGKILL
    assert table_fingerprint(scratch_database) == before
    # the partition it was staging (a committed table outside the twin) is dropped by the
    # next import of the table
    small = tmp_path / "small_components.gpkg"
    _big_components(small, 50, first=900_000)  # ids neither the sample nor the kill test uses
    run_import(
        importer_for("components"),
        [small],
        ImportOptions(dataset="after-the-kill"),
        scratch_database,
    )
    assert _staged_tables(scratch_database) == []


def _staged_tables(url: str) -> list[str]:
    """Tables in the partition schema that are not partitions: staging left behind."""
    with psycopg.connect(libpq_dsn(url)) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r' AND NOT c.relispartition",
                (f"{SCHEMA}_part",),
            )
        ]


def test_two_datasets_import_at_once(scratch_database: str):
    p = SAMPLE / "pipelines"
    results, errors = {}, []

    def go(name: str) -> None:
        try:
            results[name] = run_import(
                importer_for("pipelines"),
                [p / "points.csv", p / "lines.csv"],
                ImportOptions(crs="EPSG:4547", dataset=name),
                scratch_database,
            )
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(n,)) for n in ("para-a", "para-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert results["para-a"].counts == results["para-b"].counts
    assert results["para-a"].batch_id != results["para-b"].batch_id


def test_epanet_net3_imports_as_many_nodes_and_links_as_wntr_reads(scratch_database: str):
    import wntr

    net3 = Path(wntr.__file__).parent / "library" / "networks" / "Net3.inp"
    wn = wntr.network.WaterNetworkModel(str(net3))
    r = run_import(
        importer_for("pipelines"),
        [net3],
        ImportOptions(
            crs="EPSG:4547", local_transform="500000,2500000,0,-695200", dataset="net3-counts"
        ),
        scratch_database,
    )
    assert r.report.errors == []
    assert r.counts["pipeline_node"] == wn.num_nodes
    assert r.counts["pipeline_segment"] == wn.num_links
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        kinds = dict(
            conn.execute(
                "SELECT link_type, count(*) FROM cim.pipeline_segment WHERE dataset = "
                "'net3-counts' GROUP BY 1"
            ).fetchall()
        )
    assert kinds.get("pipe", 0) == wn.num_pipes
    assert kinds.get("pump", 0) == wn.num_pumps
    assert kinds.get("valve", 0) == wn.num_valves


def test_components_replace_their_partition_and_ids_stay_unique(scratch_database: str):
    """Components live one partition per batch: a re-import swaps its partition; another
    dataset delivering the same 16-digit ids is refused, naming the ids and their dataset."""
    comp = [SAMPLE / "gpkg/components.gpkg"]
    name = "sample:north_station:components"  # may already be loaded by earlier tests
    first = run_import(
        importer_for("components"),
        comp,
        ImportOptions(dataset=name, replace=True),
        scratch_database,
    )
    again = run_import(
        importer_for("components"),
        comp,
        ImportOptions(dataset=name, replace=True),
        scratch_database,
    )
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        parts = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'city_component'"
        ).fetchall()
        n = conn.execute(
            "SELECT count(*) FROM cim.city_component WHERE batch_id IN (%s, %s)",
            (first.batch_id, again.batch_id),
        ).fetchone()[0]
    assert (f"city_component_b{again.batch_id}",) in parts
    assert (f"city_component_b{first.batch_id}",) not in parts
    assert n == again.counts["city_component"] == 5452
    before = table_fingerprint(scratch_database)
    with pytest.raises(ImportFailed, match=r"already held by another dataset: \d{16} \(in sample"):
        run_import(
            importer_for("components"), comp, ImportOptions(dataset="comp-b"), scratch_database
        )
    assert table_fingerprint(scratch_database) == before


def test_pipelines_reimport_swaps_partitions_and_keeps_the_valves(
    scratch_database: str, tmp_path: Path
):
    """A network lives one partition per batch (nodes and segments): a re-import attaches the
    new partitions and drops the old, and the valve layer on it moves onto the new pipes (same
    model links and nodes) instead of vanishing with the old rows."""
    import wntr

    net3 = Path(wntr.__file__).parent / "library" / "networks" / "Net3.inp"
    options = dict(crs="EPSG:4547", local_transform="500000,2500000,0,-695200")
    first = run_import(
        importer_for("pipelines"),
        [net3],
        ImportOptions(dataset="net3-swap", **options),
        scratch_database,
    )
    wn = wntr.network.WaterNetworkModel(str(net3))
    layer = wntr.network.layer.generate_valve_layer(wn, "strategic", 2, seed=7)
    layer.to_csv(tmp_path / "valves.csv")
    valves = run_import(
        importer_for("valves"),
        [tmp_path / "valves.csv"],
        ImportOptions(dataset="net3-swap"),
        scratch_database,
    )
    query = (
        "SELECT v.valve_no, s.source_id, n.point_no, v.network_batch_id, "
        "ST_AsText(v.geom) FROM cim.pipeline_valve v "
        "JOIN cim.pipeline_segment s ON (s.batch_id, s.id) = (v.network_batch_id, v.segment_id) "
        "JOIN cim.pipeline_node n ON (n.batch_id, n.id) = (v.network_batch_id, v.node_id) "
        "WHERE v.batch_id = %s ORDER BY v.valve_no"
    )
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        before = conn.execute(query, (valves.batch_id,)).fetchall()
    assert len(before) == len(layer) > 0 and {r[3] for r in before} == {first.batch_id}

    again = run_import(
        importer_for("pipelines"),
        [net3],
        ImportOptions(dataset="net3-swap", replace=True, **options),
        scratch_database,
    )
    assert again.batch_id != first.batch_id
    assert again.counts["pipeline_valve_relinked"] == len(layer)
    assert again.counts["pipeline_valve_dropped"] == 0
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        parts = {
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname LIKE 'pipeline_%%'"
            )
        }
        after = conn.execute(query, (valves.batch_id,)).fetchall()
        left = conn.execute(
            "SELECT count(*) FROM cim.pipeline_segment WHERE batch_id = %s", (first.batch_id,)
        ).fetchone()[0]
        status = conn.execute(
            "SELECT status FROM cim.import_batch WHERE id = %s", (first.batch_id,)
        ).fetchone()[0]
        # the import analysed what it wrote: column statistics exist for the new partition
        # (only ANALYZE makes them; autovacuum may be late, or off)
        stats = conn.execute(
            "SELECT count(*) FROM pg_stats WHERE tablename = %s",
            (f"pipeline_segment_b{again.batch_id}",),
        ).fetchone()[0]
    assert stats > 10
    for table in ("pipeline_node", "pipeline_segment"):
        assert f"{table}_b{again.batch_id}" in parts
        assert f"{table}_b{first.batch_id}" not in parts
    assert left == 0 and status == "replaced"
    # every valve on the same link and node as before, now in the new batch, same position
    assert [r[:3] + r[4:] for r in after] == [r[:3] + r[4:] for r in before]
    assert {r[3] for r in after} == {again.batch_id}


def test_a_reimport_analyses_its_own_partitions_a_new_dataset_the_whole_table(
    scratch_database: str,
):
    """PostgreSQL 15 analyses every partition again with a partitioned table: a re-import
    analyses only its new partitions (the tables keep their statistics as a whole), while a
    dataset added to the twin analyses the whole table, other networks' partitions too."""
    import wntr

    net3 = Path(wntr.__file__).parent / "library" / "networks" / "Net3.inp"
    options = dict(crs="EPSG:4547", local_transform="500000,2500000,0,-695200")

    def load(dataset: str, replace: bool = False) -> int:
        result = run_import(
            importer_for("pipelines"),
            [net3],
            ImportOptions(dataset=dataset, replace=replace, **options),
            scratch_database,
        )
        assert result.status == "succeeded"
        return result.batch_id

    def analysed(batch_id: int) -> dict[str, int]:
        with psycopg.connect(libpq_dsn(scratch_database)) as conn:
            rows = conn.execute(
                "SELECT relname, analyze_count FROM pg_stat_user_tables "
                "WHERE schemaname = %s AND relname = ANY(%s)",
                (
                    f"{SCHEMA}_part",
                    [f"pipeline_node_b{batch_id}", f"pipeline_segment_b{batch_id}"],
                ),
            ).fetchall()
        return {name.rsplit("_b", 1)[0]: n for name, n in rows}

    a = load("net3-stats-a")
    after_a = analysed(a)
    assert after_a == {"pipeline_node": 1, "pipeline_segment": 1}
    b = load("net3-stats-b")  # a dataset more: the whole tables, a's partitions again
    assert analysed(a) == {"pipeline_node": 2, "pipeline_segment": 2}
    assert analysed(b) == {"pipeline_node": 1, "pipeline_segment": 1}
    again = load("net3-stats-b", replace=True)  # a re-import: its own partitions only
    assert again != b and analysed(again) == {"pipeline_node": 1, "pipeline_segment": 1}
    assert analysed(a) == {"pipeline_node": 2, "pipeline_segment": 2}
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        whole = conn.execute(
            "SELECT DISTINCT tablename FROM pg_stats WHERE schemaname = %s AND inherited "
            "AND tablename IN ('pipeline_node', 'pipeline_segment')",
            (SCHEMA,),
        ).fetchall()
    assert sorted(r[0] for r in whole) == ["pipeline_node", "pipeline_segment"]

"""Components are imported a batch of CIMTWIN_IMPORT_CHUNK_ROWS features at a time, in one
pass over the file: each batch is checked and staged, and the import is refused before the
attach if any check failed. Batches must change nothing (the same problems, in the same order,
for a bad file; the same rows for a good one), and hold one batch of rows at a time."""

from __future__ import annotations

import gc
import math
import weakref
from dataclasses import asdict
from pathlib import Path

import geopandas as gpd
import psycopg
import pytest
import shapely

from cimtwin.db.engine import libpq_dsn
from cimtwin.importers import sources
from cimtwin.importers.base import ImportOptions
from cimtwin.importers.registry import importer_for
from cimtwin.importers.report import Report
from cimtwin.importers.runner import ImportFailed, run_import
from tests.conftest import SAMPLE

COMPONENTS = SAMPLE / "gpkg/components.gpkg"


@pytest.fixture(scope="module")
def bad_layer(tmp_path_factory) -> Path:
    """The sample's components with a defect of every kind the import checks, spread over
    the file: duplicates far apart (in different batches), ids of the wrong shape, class or
    county, unknown and missing classes, no geometry, a bow-tie polygon, a lon/lat point."""
    frame = gpd.read_file(COMPONENTS, engine="pyogrio")
    ids, classes, geoms = frame["comp_id"].copy(), frame["class_cd"].copy(), frame.geometry.copy()
    ids.iloc[4000] = ids.iloc[3]  # duplicate of an early id, far later in the file
    ids.iloc[4001] = ids.iloc[3]
    ids.iloc[10] = "44030901010000x1"  # not 16 digits
    ids.iloc[2500] = ids.iloc[10]  # and repeated
    ids.iloc[11] = "４４０３０９０１０１０００００１"  # full-width digits, not an ASCII id
    ids.iloc[12] = None  # a generated id
    classes.iloc[20] = "9999"  # unknown
    classes.iloc[21] = None
    ids.iloc[30] = "4403090999000030"  # class 0999 in the id
    ids.iloc[31] = "4403010101000031"  # another county (a warning)
    geoms.iloc[40] = None
    geoms.iloc[41] = shapely.Polygon(
        [(501700, 2501000), (501710, 2501010), (501710, 2501000), (501700, 2501010)]
    )
    geoms.iloc[5000] = shapely.Point(114.05, 22.6)
    out = frame.assign(comp_id=ids, class_cd=classes).set_geometry(geoms)
    path = tmp_path_factory.mktemp("stream") / "bad_components.gpkg"
    out.to_file(path, driver="GPKG", engine="pyogrio", layer="component")
    return path


def _problems(path: Path) -> list[dict]:
    report = Report()
    importer_for("components").prepare([path], ImportOptions(dry_run=True), report)
    return [asdict(p) for p in report.problems]


def test_a_bad_layer_in_tiny_batches_reports_what_one_batch_reports(bad_layer: Path, chunk_rows):
    chunk_rows(1_000_000)
    whole = _problems(bad_layer)
    chunk_rows(97)  # 57 batches: each pair of far-apart duplicates lies in two of them
    assert _problems(bad_layer) == whole
    rules = {p["rule"] for p in whole}
    assert rules >= {
        "duplicate-id",
        "component-id-format",
        "component-id-class",
        "component-id-county",
        "component-class-unknown",
        "component-class-missing",
        "geometry-missing",
        "geometry-invalid",
        "crs-lonlat-in-projected",
    }
    dups = [p["row"].split()[0] for p in whole if p["rule"] == "duplicate-id"]
    # FIDs count from 1: the copies of the 4th id and the malformed id repeated, in file order
    assert dups == ["4", "11", "2501", "4001", "4002"]


def _rows_of(ref: weakref.ref) -> int:
    frame = ref()
    return 0 if frame is None else len(frame)


def _held_rows(monkeypatch) -> dict[str, int]:
    """Instruments the layer reader: at each new batch, after a collection, how many rows of
    the batches read before are still alive (``held``, the most seen), and how many batches
    were read."""
    seen = {"held": 0, "batches": 0}
    alive: list[weakref.ref] = []
    read = sources.read_layer_batches

    def counted(*args, **kwargs):
        for layer in read(*args, **kwargs):
            gc.collect()
            held = sum(_rows_of(r) for r in alive)
            seen["held"] = max(seen["held"], held)
            seen["batches"] += 1
            alive.append(weakref.ref(layer.frame))
            yield layer

    monkeypatch.setattr(sources, "read_layer_batches", counted)
    return seen


def test_an_import_holds_one_batch_of_rows_at_a_time(
    scratch_database: str, chunk_rows, monkeypatch
):
    rows = 500
    chunk_rows(rows)
    seen = _held_rows(monkeypatch)
    done = run_import(
        importer_for("components"),
        [COMPONENTS],
        ImportOptions(dataset="stream-held"),
        scratch_database,
    )
    n = done.counts["city_component"]
    assert n > 4 * rows
    # checked and written in one pass: every batch read once ...
    assert seen["batches"] == math.ceil(n / rows)
    # ... and, when the next is read, at most the one before it still held
    assert 0 < seen["held"] <= rows
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        stored = conn.execute(
            "SELECT count(*) FROM cim.city_component WHERE batch_id = %s", (done.batch_id,)
        ).fetchone()
    assert stored == (n,)


def _points(path: Path, places: dict[str, tuple[float, float]]) -> Path:
    gpd.GeoDataFrame(
        {"comp_id": list(places), "class_cd": ["0118"] * len(places)},
        geometry=[shapely.Point(p) for p in places.values()],
        crs="EPSG:4490",
    ).to_file(path, driver="GPKG", engine="pyogrio")
    return path


def _stored_counties(url: str, batch_id: int) -> dict[str, str]:
    with psycopg.connect(libpq_dsn(url)) as conn:
        return dict(
            conn.execute(
                "SELECT component_id, county_code FROM cim.city_component WHERE batch_id = %s",
                (batch_id,),
            )
        )


def test_batches_place_rows_outside_the_grids_as_the_whole_import_does(
    two_county_twin,
    tmp_path: Path,
    chunk_rows,
) -> None:
    """In a twin of two counties a component outside every grid takes the county of the
    import's placed ones: known only after the batches that come later (batches of one)."""
    url, ((ax, ay), (bx, by)) = two_county_twin
    far = (114.100, 22.700)
    ids = [f"4403090118{i:06d}" for i in range(900001, 900004)]  # not the sample's
    one = _points(tmp_path / "one.gpkg", {ids[0]: far, ids[1]: (ax, ay), ids[2]: far})
    stored = {}
    for rows in (1_000_000, 1):
        chunk_rows(rows)
        done = run_import(
            importer_for("components"),
            [one],
            ImportOptions(dataset="stream-one-county", replace=True),
            url,
        )
        assert done.batch_id is not None
        stored[rows] = _stored_counties(url, done.batch_id)
    assert stored[1] == stored[1_000_000] == dict.fromkeys(ids, "440309")
    mixed = _points(tmp_path / "mixed.gpkg", {ids[0]: far, ids[1]: (ax, ay), ids[2]: (bx, by)})
    messages = []
    for rows in (1_000_000, 1):
        chunk_rows(rows)
        with pytest.raises(ImportFailed) as failed:
            run_import(
                importer_for("components"), [mixed], ImportOptions(dataset="stream-mixed"), url
            )
        messages.append(str(failed.value))
    assert messages[0] == messages[1]
    assert f"feature(s) {ids[0]} lie outside every work grid" in messages[0]
    assert "counties 440303, 440309" in messages[0]


def test_a_bad_layer_writes_nothing_and_reports_what_the_dry_run_reports(
    scratch_database: str, bad_layer: Path, chunk_rows
) -> None:
    """The import checks the batches as it stages them: a defect in the last batches (a
    lon/lat point at row 5001, duplicates at 4001-4002) comes after rows already staged. The
    import is refused with the dry run's report, nothing of it stays behind (no row, no
    staged table) and the twin is as it was."""
    from tests.conftest import table_fingerprint

    chunk_rows(997)
    dry = _problems(bad_layer)
    before = table_fingerprint(scratch_database)
    with pytest.raises(ImportFailed, match="components import refused") as failed:
        run_import(
            importer_for("components"),
            [bad_layer],
            ImportOptions(dataset="stream-bad"),
            scratch_database,
        )
    assert failed.value.report is not None
    assert [asdict(p) for p in failed.value.report.problems] == dry
    assert table_fingerprint(scratch_database) == before
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        staged = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'cim_part' AND c.relname LIKE 'city_component_b%' "
            "AND NOT c.relispartition"
        ).fetchone()
        batches = conn.execute(
            "SELECT count(*) FROM cim.import_batch WHERE dataset = 'stream-bad'"
        ).fetchone()
    assert staged == (0,) and batches == (0,)


def test_rows_without_an_id_get_the_next_free_ids_in_file_order(
    scratch_database: str, tmp_path: Path, chunk_rows
) -> None:
    """A component delivered without an id gets county + class + the next sequence of its
    class: after the twin's ids (another dataset's) and after the file's own, numbered in
    file order, also when the rows lie in different batches."""
    frame = gpd.read_file(COMPONENTS, engine="pyogrio").iloc[:600].copy()
    county = "440309"
    # sequences of their own (the scratch twin may hold the sample's ids already)
    frame["comp_id"] = [
        f"{county}{code}{800_000 + i:06d}" for i, code in enumerate(frame["class_cd"])
    ]
    first = frame.iloc[:300].copy()  # the twin's: another dataset
    rest = frame.iloc[300:].copy()
    blank = [5, 6, 120, 121, 250, 299]  # rows of the second file, in several batches
    rest.iloc[blank, rest.columns.get_loc("comp_id")] = None
    first_path, rest_path = tmp_path / "first.gpkg", tmp_path / "rest.gpkg"
    first.to_file(first_path, driver="GPKG", engine="pyogrio", layer="component")
    rest.to_file(rest_path, driver="GPKG", engine="pyogrio", layer="component")
    chunk_rows(50)
    run_import(
        importer_for("components"), [first_path], ImportOptions(dataset="ids-a"), scratch_database
    )
    done = run_import(
        importer_for("components"), [rest_path], ImportOptions(dataset="ids-b"), scratch_database
    )
    # the expected ids, worked out here from the twin's ids (as they were before the second
    # import) and the second file's
    twin = _component_ids(scratch_database, "batch_id <> %s", done.batch_id)
    held = [i for i in [*twin, *rest["comp_id"]] if isinstance(i, str)]
    top: dict[str, int] = {}
    for cid in held:
        if cid.startswith(county):
            top[cid[6:10]] = max(top.get(cid[6:10], 0), int(cid[10:]))
    want = []
    for k in blank:
        code = rest["class_cd"].iloc[k]
        top[code] = top.get(code, 0) + 1
        want.append(f"{county}{code}{top[code]:06d}")
    stored = _component_ids(scratch_database, "batch_id = %s", done.batch_id)
    assert len(stored) == len(rest)
    assert [stored[k] for k in blank] == want
    kept = [k for k in range(len(rest)) if k not in blank]
    assert [stored[k] for k in kept] == rest["comp_id"].iloc[kept].tolist()


def _component_ids(url: str, where: str, batch_id: int) -> list[str]:
    """The stored component ids of the rows ``where`` picks, in the order they were written."""
    with psycopg.connect(libpq_dsn(url)) as conn:
        rows = conn.execute(
            f"SELECT component_id FROM cim.city_component WHERE {where} ORDER BY id", (batch_id,)
        )
        return [r[0] for r in rows]


def test_a_warning_late_in_the_file_fails_a_strict_import_and_is_counted_otherwise(
    scratch_database: str, tmp_path: Path, chunk_rows
) -> None:
    """Under --strict a warning fails the import like an error, also when it is found in a
    batch after rows were staged; without --strict the import succeeds and its batch row
    counts the warning, which was only known once the last batch was read."""
    from tests.conftest import table_fingerprint

    frame = gpd.read_file(COMPONENTS, engine="pyogrio").iloc[:900].copy()
    frame["comp_id"] = [
        f"440309{code}{700_000 + i:06d}" for i, code in enumerate(frame["class_cd"])
    ]
    late = 850  # in the ninth batch of 97
    frame.iloc[late, frame.columns.get_loc("comp_id")] = (
        "440301" + frame["comp_id"].iloc[late][6:]
    )  # another county: a warning
    path = tmp_path / "late_warning.gpkg"
    frame.to_file(path, driver="GPKG", engine="pyogrio", layer="component")
    chunk_rows(97)
    before = table_fingerprint(scratch_database)
    with pytest.raises(ImportFailed, match=r"0 error\(s\), 1 warning\(s\) under --strict"):
        run_import(
            importer_for("components"),
            [path],
            ImportOptions(dataset="late-warning", strict=True),
            scratch_database,
        )
    assert table_fingerprint(scratch_database) == before
    done = run_import(
        importer_for("components"), [path], ImportOptions(dataset="late-warning"), scratch_database
    )
    assert [p.rule for p in done.report.warnings] == ["component-id-county"]
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        row = conn.execute(
            "SELECT feature_count, warning_count, format, source_crs FROM cim.import_batch "
            "WHERE id = %s",
            (done.batch_id,),
        ).fetchone()
    assert row == (900, 1, "gpkg", frame.crs.to_string())

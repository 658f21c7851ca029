"""Components are imported a batch of CIMTWIN_IMPORT_CHUNK_ROWS features at a time: checked in
one pass over the file, written in a second. Batches must change nothing (the same problems,
in the same order, for a bad file; the same rows for a good one), and hold one batch of rows
at a time."""

from __future__ import annotations

import gc
import math
import os
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
    importer_for("components").prepare([path], ImportOptions(), report)
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
    # checked in one pass, written in another: every batch read twice ...
    assert seen["batches"] == 2 * math.ceil(n / rows)
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


def test_a_file_changed_between_check_and_write_is_refused(
    scratch_database: str, tmp_path: Path, monkeypatch
) -> None:
    """The rows are read twice: a file rewritten after its check would store rows nobody
    checked, so the import stops and writes nothing."""
    from cimtwin.importers.components import ComponentsImporter
    from tests.conftest import table_fingerprint

    copy = tmp_path / "components.gpkg"
    copy.write_bytes(COMPONENTS.read_bytes())
    check = ComponentsImporter.prepare

    def check_then_touch(self, paths, options, report):
        prepared = check(self, paths, options, report)
        st = copy.stat()
        os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return prepared

    monkeypatch.setattr(ComponentsImporter, "prepare", check_then_touch)
    before = table_fingerprint(scratch_database)
    with pytest.raises(ImportFailed, match="the file changed while it was imported"):
        run_import(
            importer_for("components"),
            [copy],
            ImportOptions(dataset="stream-changed"),
            scratch_database,
        )
    assert table_fingerprint(scratch_database) == before

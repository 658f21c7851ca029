"""GCJ-02 (Chinese web-map coordinates): the inverse to centimetres, and incidents from web
maps warned about or converted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely

from cimtwin.importers import gcj02
from cimtwin.importers.base import ImportOptions
from cimtwin.importers.incidents import IncidentsImporter
from cimtwin.importers.report import Report
from tests.conftest import SAMPLE

# published test vectors (WGS 84 lat, lon -> GCJ-02 lat, lon), as in the eviltransform tests
PUBLISHED = [
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),  # Shenzhen
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),  # Shanghai
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),  # Beijing
]


def metres(lon_a, lat_a, lon_b, lat_b) -> np.ndarray:
    lat = np.radians(np.asarray(lat_a))
    return np.hypot(
        (np.asarray(lon_a) - lon_b) * 111_320 * np.cos(lat), (np.asarray(lat_a) - lat_b) * 110_574
    )


@pytest.mark.parametrize("w_lat, w_lon, g_lat, g_lon", PUBLISHED)
def test_published_pairs_both_ways(w_lat: float, w_lon: float, g_lat: float, g_lon: float) -> None:
    lon, lat = gcj02.from_wgs84(np.array([w_lon]), np.array([w_lat]))
    assert lon[0] == pytest.approx(g_lon, abs=1e-9) and lat[0] == pytest.approx(g_lat, abs=1e-9)
    lon, lat = gcj02.to_wgs84(np.array([g_lon]), np.array([g_lat]))
    assert metres(lon, lat, w_lon, w_lat)[0] < 0.01


def test_forward_then_inverse_is_within_a_centimetre_over_china() -> None:
    lon, lat = np.meshgrid(np.linspace(73.5, 134.5, 61), np.linspace(18.5, 53.0, 35))
    lon, lat = lon.ravel(), lat.ravel()
    g_lon, g_lat = gcj02.from_wgs84(lon, lat)
    assert metres(g_lon, g_lat, lon, lat).max() > 100  # there is an offset to undo
    back_lon, back_lat = gcj02.to_wgs84(g_lon, g_lat)
    assert metres(back_lon, back_lat, lon, lat).max() < 0.01


def test_no_offset_outside_china_and_several_hundred_metres_in_shenzhen() -> None:
    lon, lat = np.array([2.35, 114.03]), np.array([48.85, 22.61])
    g_lon, g_lat = gcj02.from_wgs84(lon, lat)
    assert (g_lon[0], g_lat[0]) == (2.35, 48.85)
    assert 300 < gcj02.shift_metres(lon, lat)[1] < 900


def _web_map_copy(tmp: Path, where: str) -> tuple[Path, np.ndarray]:
    """The sample incidents moved into GCJ-02 and labelled as from Amap ``where``; also the
    true (WGS 84) positions."""
    doc = json.loads((SAMPLE / "incidents.geojson").read_text(encoding="utf-8"))
    true = np.array([f["geometry"]["coordinates"][:2] for f in doc["features"]])
    g_lon, g_lat = gcj02.from_wgs84(true[:, 0], true[:, 1])
    for f, lon, lat in zip(doc["features"], g_lon, g_lat, strict=True):
        f["geometry"]["coordinates"] = [float(lon), float(lat)]
        if where == "property":
            f["properties"]["coord_type"] = "gcj02"
    if where == "member":
        doc["source"] = "高德地图 (Amap) 拾取"
    path = tmp / f"incidents_{where}.geojson"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path, true


@pytest.mark.parametrize("where", ["member", "property"])
def test_incidents_said_to_be_gcj02_are_warned_about_with_the_offset(
    tmp_path: Path,
    where: str,
) -> None:
    path, _ = _web_map_copy(tmp_path, where)
    report = Report()
    IncidentsImporter().prepare([path], ImportOptions(), report)
    found = [p for p in report.problems if p.rule == "gcj02-suspected"]
    assert len(found) == 1, report.problems
    assert "--from-gcj02" in found[0].message
    shift = int(found[0].message.split("about ")[1].split(" m")[0])
    assert 300 < shift < 900


def test_sample_incidents_are_not_warned_about() -> None:
    report = Report()
    IncidentsImporter().prepare([SAMPLE / "incidents.geojson"], ImportOptions(), report)
    assert [p for p in report.problems if p.rule == "gcj02-suspected"] == []


def test_from_gcj02_puts_incidents_back_where_they_are(tmp_path: Path) -> None:
    from cimtwin.spatial import crs as crs_mod

    path, true = _web_map_copy(tmp_path, "member")
    report = Report()
    prep = IncidentsImporter().prepare([path], ImportOptions(from_gcj02=True), report)
    assert [p for p in report.problems if p.rule == "gcj02-suspected"] == []
    geoms = next(iter(prep.extra["shapes"].values()))
    got = shapely.get_coordinates(geoms)
    x, y = crs_mod.transformer(4326, crs_mod.storage_srid()).transform(true[:, 0], true[:, 1])
    assert np.hypot(got[:, 0] - x, got[:, 1] - y).max() < 0.01
    raw = Report()
    moved = IncidentsImporter().prepare([path], ImportOptions(), raw)
    off = shapely.get_coordinates(next(iter(moved.extra["shapes"].values())))
    assert np.hypot(off[:, 0] - x, off[:, 1] - y).min() > 300


def test_the_import_command_takes_from_gcj02(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cimtwin.cli import app

    path, _ = _web_map_copy(tmp_path, "member")
    plain = CliRunner().invoke(app, ["import", "incidents", str(path), "--dry-run"])
    converted = CliRunner().invoke(
        app, ["import", "incidents", str(path), "--dry-run", "--from-gcj02"]
    )
    assert plain.exit_code == converted.exit_code == 0, plain.output + converted.output
    assert "gcj02-suspected" in plain.output
    assert "gcj02-suspected" not in converted.output and "features valid" in converted.output


@pytest.fixture(scope="module")
def district_db(database_url: str, migrated_template: str):
    """A database holding the sample's components: the features incidents sit at."""
    import os

    from cimtwin.db import bootstrap
    from cimtwin.db.engine import sqlalchemy_url
    from cimtwin.importers.registry import importer_for
    from cimtwin.importers.runner import run_import

    url = sqlalchemy_url(database_url).set(database=f"cimtwin_gcj_{os.getpid()}")
    url = bootstrap.copy_database(migrated_template, url.render_as_string(hide_password=False))
    run_import(
        importer_for("components"),
        [SAMPLE / "gpkg" / "components.gpkg"],
        ImportOptions(dataset="gcj-components"),
        url,
    )
    yield url
    bootstrap.drop_database(url)


def test_unlabelled_web_map_positions_are_caught_by_their_offset_from_features(
    district_db: str,
    tmp_path: Path,
) -> None:
    """A GCJ-02 file that does not say so: its points sit the offset away from the
    district's components, and on them once read as GCJ-02."""
    from cimtwin.importers.registry import importer_for
    from cimtwin.importers.runner import run_import

    path, _ = _web_map_copy(tmp_path, "none")
    doc = json.loads(path.read_text(encoding="utf-8"))
    for f in doc["features"]:  # other incidents than the sample's (ids are unique)
        f["id"] += "-web"
        f["properties"]["external_id"] += "-web"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    shifted = run_import(
        importer_for("incidents"), [path], ImportOptions(dataset="web"), district_db
    )
    found = [p.message for p in shifted.report.problems if p.rule == "gcj02-suspected"]
    assert len(found) == 1 and "--from-gcj02" in found[0], shifted.report.problems
    true = run_import(
        importer_for("incidents"),
        [SAMPLE / "incidents.geojson"],
        ImportOptions(dataset="true"),
        district_db,
    )
    assert [p for p in true.report.problems if p.rule == "gcj02-suspected"] == []

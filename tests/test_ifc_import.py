"""``cimtwin import ifc`` against PostGIS, on the real files in ../shared/data/ifc.

Placement is checked against coordinates computed here by hand from each file's map conversion
(the local vertex from IfcOpenShell's kernel, then the formula written out). Files whose map
CRS is not the Shenzhen storage CRS are imported, through the command line in a subprocess,
into scratch databases whose storage CRS is the file's map CRS (the storage CRS is fixed when a
database is created, and the models bind it when imported).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from cimtwin.db import bootstrap
from cimtwin.db.engine import libpq_dsn, sqlalchemy_url
from cimtwin.importers.base import ImportOptions
from cimtwin.importers.runner import ImportFailed, run_import
from tests.shared_data import IFC, needs_ifc

ROOT = Path(__file__).resolve().parents[1]
pytestmark = needs_ifc
DUPLEX = IFC / "Duplex_A_20110907.ifc"
DUPLEX_GEO = IFC / "Duplex_A_20110907_georeferenced.ifc"
BASIC = IFC / "ifcopenshell_basic.ifc"
UNIT1 = IFC / "ifcopenshell_geolocation-unit1.ifc"
ANGLE = IFC / "ifcopenshell_geolocation-mapconversion-angle.ifc"
NORTH_STATION = "114.0239,22.6080,5"
BIM_TABLES = ("bim_model", "bim_storey", "bim_space", "bim_element")
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_measurements() -> Iterator[None]:
    """What the module measured (timings, placement errors), shown with ``pytest -s``."""
    yield
    for k, v in TIMINGS.items():
        print(f"\n{k}: {v:.6g}", end="")


def rows(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(libpq_dsn(url)) as conn:
        return conn.execute(sql, params).fetchall()


def local_vertex(path: Path, guid: str) -> np.ndarray:
    """One vertex of an element in local coordinates (metres), from IfcOpenShell's kernel:
    the lowest-x, then lowest-y, then lowest-z corner."""
    import ifcopenshell
    import ifcopenshell.geom

    model = ifcopenshell.open(str(path))
    settings = ifcopenshell.geom.settings()
    settings.set("use-world-coords", True)
    shape = ifcopenshell.geom.create_shape(settings, model.by_guid(guid))
    verts = np.asarray(shape.geometry.verts, dtype=np.float64).reshape(-1, 3)
    return verts[np.lexsort((verts[:, 2], verts[:, 1], verts[:, 0]))[0]]


def nearest_vertex_error(url: str, guid: str, point: np.ndarray, schema: str = "cim") -> float:
    """3D distance (m) from ``point`` to the nearest stored vertex of the element."""
    (d,) = rows(
        url,
        f"SELECT min(ST_3DDistance((p).geom, ST_SetSRID(ST_MakePoint(%s, %s, %s), "
        "ST_SRID((p).geom)))) FROM "
        f"(SELECT ST_DumpPoints(geom) p FROM {schema}.bim_element WHERE ifc_guid = %s) s",
        (float(point[0]), float(point[1]), float(point[2]), guid),
    )[0]
    return float(d)


def first_guid(path: Path, ifc_class: str) -> str:
    import ifcopenshell

    return next(
        e.GlobalId
        for e in ifcopenshell.open(str(path)).by_type(ifc_class)
        if e.Representation is not None
    )


def counts(url: str) -> dict[str, int]:
    return {t: rows(url, f"SELECT count(*) FROM cim.{t}")[0][0] for t in BIM_TABLES}


# -- databases whose storage CRS is a file's map CRS ------------------------------------


def _in_subprocess(url: str, srid: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CIMTWIN_STORAGE_SRID": str(srid), "CIMTWIN_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )


def _crs_database(database_url: str, srid: int) -> Iterator[str]:
    base = sqlalchemy_url(database_url)
    url = base.set(database=f"{base.database}_ifc{srid}").render_as_string(hide_password=False)
    made = _in_subprocess(
        url,
        srid,
        "-c",
        "import os; from cimtwin.db import bootstrap; "
        "bootstrap.recreate_database(os.environ['CIMTWIN_DATABASE_URL'])",
    )
    assert made.returncode == 0, made.stderr[-3000:]
    yield url
    bootstrap.drop_database(url)


def cli_import(url: str, srid: int, *args: str) -> subprocess.CompletedProcess:
    t0 = time.perf_counter()
    done = _in_subprocess(
        url, srid, "-c", "from cimtwin.cli import main; main()", "import", "ifc", *args
    )
    TIMINGS[f"cli {Path(args[0]).name} {' '.join(args[1:])}"] = time.perf_counter() - t0
    return done


@pytest.fixture(scope="module")
def luxembourg(database_url: str) -> Iterator[str]:
    """Storage CRS LUREF / Luxembourg TM (EPSG:2169), the horizontal part of EPSG:9897."""
    yield from _crs_database(database_url, 2169)


@pytest.fixture(scope="module")
def mercator(database_url: str) -> Iterator[str]:
    """Storage CRS EPSG:3857, the IfcOpenShell samples' map CRS."""
    yield from _crs_database(database_url, 3857)


def test_duplex_by_property_sets_lands_where_the_map_conversion_says(
    luxembourg: str, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    done = cli_import(luxembourg, 2169, str(DUPLEX_GEO), "--report", str(report))
    assert done.returncode == 0, done.stderr[-3000:]
    problems = {p["rule"]: p["message"] for p in json.loads(report.read_text())["problems"]}
    assert problems["ifc-georeference"].startswith("placed by ePSet_MapConversion into EPSG:9897")
    assert "NG95" in problems["ifc-height-datum"]
    guid = first_guid(DUPLEX_GEO, "IfcWallStandardCase")
    x, y, z = local_vertex(DUPLEX_GEO, guid)
    # by hand from ePSet_MapConversion: E=76670 N=77179 H=293.700012207031,
    # XAxisAbscissa 0.325568154457152, XAxisOrdinate 0.945518575599318, Scale 1, metres
    a, o = 0.325568154457152, 0.945518575599318
    expected = np.array([76670 + a * x - o * y, 77179 + o * x + a * y, 293.700012207031 + z])
    error = nearest_vertex_error(luxembourg, guid, expected)
    TIMINGS["placement error Duplex ePSet_MapConversion (m)"] = error
    assert error < 0.001
    ((path, crs, n),) = rows(
        luxembourg, "SELECT georef_path, map_crs, element_count FROM cim.bim_model"
    )
    assert (path, crs, n) == ("ePSet_MapConversion", "EPSG:9897", 236)
    # the building row made from the model: 2 storeys with rooms... and the roof's space
    ((code, floors, height),) = rows(
        luxembourg, "SELECT building_code, floors, height_m FROM cim.building"
    )
    assert code.startswith("BIM-") and floors == 3 and height == pytest.approx(9.0, abs=0.01)


def test_unit1_millimetre_map_sizes_in_metres(mercator: str) -> None:
    done = cli_import(mercator, 3857, str(UNIT1))
    assert done.returncode == 0, done.stderr[-3000:]
    guid = first_guid(UNIT1, "IfcActuator")
    x, y, z = local_vertex(UNIT1, guid)
    # by hand: map (mm) = 10000 + 1000 * local (m); EPSG:3857 metres = map / 1000
    expected = np.array([(10000 + 1000 * x) / 1000, (1000 * y) / 1000, (1000 * z) / 1000])
    error = nearest_vertex_error(mercator, guid, expected)
    TIMINGS["placement error unit1 IfcMapConversion (m)"] = error
    assert error < 0.001
    ((dx, dy, dz),) = rows(
        mercator,
        "SELECT ST_XMax(geom) - ST_XMin(geom), ST_YMax(geom) - ST_YMin(geom), "
        "ST_ZMax(geom) - ST_ZMin(geom) FROM cim.bim_element WHERE ifc_guid = %s",
        (guid,),
    )
    assert (dx, dy, dz) == pytest.approx((2.0, 2.0, 2.0), abs=1e-3)  # the 2 m cube


def test_angle_file_millimetre_project_rotated(mercator: str) -> None:
    refused = cli_import(mercator, 3857, str(ANGLE))
    assert refused.returncode != 0 and "empty CRS name" in " ".join(refused.stderr.split())
    done = cli_import(mercator, 3857, str(ANGLE), "--crs", "EPSG:3857")
    assert done.returncode == 0, done.stderr[-3000:]
    guid = first_guid(ANGLE, "IfcActuator")
    x, y, z = local_vertex(ANGLE, guid)  # metres; the project is in millimetres
    # by hand: Scale empty -> mm to m; E = 15000 + x cos(-30) - y sin(-30), N = x sin + y cos
    c, s = 0.866025403784439, -0.5
    expected = np.array([15000 + c * x - s * y, s * x + c * y, z])
    error = nearest_vertex_error(mercator, guid, expected)
    TIMINGS["placement error angle IfcMapConversion (m)"] = error
    assert error < 0.001
    # sizes: the model's extent along its own axes is the same in metres as in the file
    ((length,),) = rows(
        mercator,
        "SELECT ST_XMax(geom) - ST_XMin(geom) FROM cim.bim_element WHERE ifc_guid = %s",
        (guid,),
    )
    assert 0.1 < length < 100  # a 1000x error would give kilometres or millimetres
    ((rot,),) = rows(
        mercator,
        "SELECT (georef->>'rotation_deg')::float FROM cim.bim_model WHERE name = %s",
        (ANGLE.name,),
    )
    assert rot == pytest.approx(-30.0)


# -- the Shenzhen database (storage EPSG:4547) ------------------------------------------


def imp(path: Path, url: str, **kw) -> object:
    t0 = time.perf_counter()
    from cimtwin.importers.ifc.importer import IfcImporter

    result = run_import(IfcImporter(), [path], ImportOptions(**kw), url)
    TIMINGS[f"import {path.name} {kw}"] = time.perf_counter() - t0
    return result


def test_far_away_models_are_refused_naming_where(scratch_database: str) -> None:
    with pytest.raises(
        ImportFailed, match=r"lon -87\.6394\d*, lat 41\.8744.*--origin.*nothing was written"
    ):
        imp(DUPLEX, scratch_database)
    with pytest.raises(ImportFailed, match=r"lon 6\.12\d*, lat 49\.62.*EPSG:4547.*--origin"):
        imp(DUPLEX_GEO, scratch_database)
    with pytest.raises(ImportFailed, match="no georeference.*--origin"):
        imp(BASIC, scratch_database)
    assert counts(scratch_database) == dict.fromkeys(BIM_TABLES, 0)


def test_origin_places_and_turns_the_model_at_north_station(scratch_database: str) -> None:
    from pyproj import Transformer

    result = imp(
        DUPLEX_GEO, scratch_database, origin=NORTH_STATION, rotation=30.0, dataset="duplex-ns"
    )
    assert result.status == "succeeded"
    guid = first_guid(DUPLEX_GEO, "IfcWallStandardCase")
    x, y, z = local_vertex(DUPLEX_GEO, guid)
    x0, y0 = Transformer.from_crs(4490, 4547, always_xy=True).transform(114.0239, 22.6080)
    # turned 30 degrees counter-clockwise about the origin; CM 114E's grid convergence at
    # 114.0239 E is 0.0092 degrees, 3 mm over the model's 20 m
    r = math.radians(30.0 + 0.0092)
    expected = np.array(
        [x0 + x * math.cos(r) - y * math.sin(r), y0 + x * math.sin(r) + y * math.cos(r), 5 + z]
    )
    error = nearest_vertex_error(scratch_database, guid, expected)
    TIMINGS["placement error Duplex --origin (m)"] = error
    assert error < 0.002
    ((path, rot, link),) = rows(
        scratch_database,
        "SELECT georef_path, (georef->>'rotation_deg')::float, building_link "
        "FROM cim.bim_model WHERE dataset = 'duplex-ns'",
    )
    assert path == "origin" and rot == pytest.approx(30.0) and link == "created"


def floor_face_area(space) -> float:
    """The area of a surface-model space's lowest horizontal faces, by the shoelace formula on
    the IFC polyloops themselves (no geometry kernel)."""
    faces = []
    for rep in space.Representation.Representations:
        for item in rep.Items:
            for shell in getattr(item, "FbsmFaces", []) or []:
                for face in shell.CfsFaces:
                    for bound in face.Bounds:
                        pts = np.array([p.Coordinates for p in bound.Bound.Polygon], dtype=float)
                        if np.ptp(pts[:, 2]) < 1e-6:
                            faces.append(pts)
    low = min(f[0, 2] for f in faces)
    total = 0.0
    for f in faces:
        if abs(f[0, 2] - low) < 1e-6:
            x, y = f[:, 0], f[:, 1]
            total += abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2
    return total


def test_rooms_per_storey_with_ifcopenshells_areas(scratch_database: str) -> None:
    """The Duplex's rooms (from the previous test's import) by storey; areas as IfcOpenShell
    computes them from the same spaces (ifcopenshell.util.shape.get_footprint_area)."""
    import ifcopenshell
    import ifcopenshell.geom
    import ifcopenshell.util.shape as shape_util

    found = rows(
        scratch_database,
        "SELECT st.name, s.name, s.ifc_guid, s.area_m2, ST_Area(s.footprint), s.area_source, "
        "s.floor_elevation_m, s.ceiling_elevation_m FROM cim.bim_space s JOIN cim.bim_storey st "
        "ON st.id = s.storey_id JOIN cim.bim_model m ON m.id = s.model_id "
        "WHERE m.dataset = 'duplex-ns' ORDER BY st.position, s.name",
    )
    by_storey: dict[str, list[str]] = {}
    for storey, name, *_ in found:
        by_storey.setdefault(storey, []).append(name)
    assert by_storey == {
        "Level 1": ["A101", "A102", "A103", "A104", "A105", "B101", "B102", "B103", "B104", "B105"],
        "Level 2": ["A201", "A202", "A203", "A204", "A205", "B201", "B202", "B203", "B204", "B205"],
        "Roof": ["R301"],
    }
    model = ifcopenshell.open(str(DUPLEX_GEO))
    settings = ifcopenshell.geom.settings()
    worst = 0.0
    for _, name, guid, area, plan_area, source, floor, ceiling in found:
        space = model.by_guid(guid)
        truth = shape_util.get_footprint_area(
            ifcopenshell.geom.create_shape(settings, space).geometry
        )
        if truth == 0:  # the two hallways are open surface models IfcOpenShell sees as flat
            truth = floor_face_area(space)
        assert area == pytest.approx(truth, rel=0.01), name
        assert plan_area == pytest.approx(truth, rel=0.01), name
        assert source == "geometry"  # the file has no NetFloorArea / GrossFloorArea
        assert ceiling - floor > 2.0
        worst = max(worst, abs(area - truth) / truth)
    TIMINGS["worst room area difference (fraction)"] = worst


def test_reimport_replaces_the_model(scratch_database: str) -> None:
    first = imp(DUPLEX, scratch_database, origin="114.0300,22.6100,5", dataset="duplex-chicago")
    before = rows(
        scratch_database, "SELECT id FROM cim.building WHERE batch_id = %s", (first.batch_id,)
    )
    second = imp(DUPLEX, scratch_database, origin="114.0310,22.6100,5", dataset="duplex-chicago")
    assert second.status == "succeeded"  # another origin is no unchanged re-run
    (n_models, n_elements) = rows(
        scratch_database,
        "SELECT count(DISTINCT m.id), count(e.id) FROM cim.bim_model m JOIN cim.bim_element e "
        "ON e.model_id = m.id WHERE m.dataset = 'duplex-chicago'",
    )[0]
    assert (n_models, n_elements) == (1, 236)
    # the building row the first import made went with it; one new one stands
    assert (
        rows(scratch_database, "SELECT count(*) FROM cim.building WHERE id = %s", (before[0][0],))[
            0
        ][0]
        == 0
    )
    ((x,),) = rows(
        scratch_database,
        "SELECT ST_X(ST_Transform(ST_Centroid(footprint), 4490)) FROM cim.bim_model "
        "WHERE dataset = 'duplex-chicago'",
    )
    assert 114.0310 < x < 114.0312


def test_building_link_given_overlap_and_missing(scratch_database: str) -> None:
    x0, y0 = rows(
        scratch_database,
        "SELECT ST_X(p), ST_Y(p) FROM "
        "ST_Transform(ST_SetSRID(ST_MakePoint(114.04, 22.62), 4490), 4547) p",
    )[0]
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        conn.execute(
            "INSERT INTO cim.building (building_code, height_m, underground_floors, county_code, "
            "footprint) VALUES ('NS-TEST-1', 10, 0, '440309', "
            "ST_Multi(ST_MakeEnvelope(%s, %s, %s, %s, 4547)))",
            (x0 - 5, y0 - 5, x0 + 5, y0 + 5),
        )
    imp(BASIC, scratch_database, origin="114.04,22.62,2", dataset="basic-overlap")
    imp(
        BASIC,
        scratch_database,
        origin="114.05,22.63,2",
        dataset="basic-given",
        building="NS-TEST-1",
    )
    links = dict(
        rows(
            scratch_database,
            "SELECT m.dataset, m.building_link || ' ' || b.building_code FROM cim.bim_model m "
            "JOIN cim.building b ON b.id = m.building_id WHERE m.dataset LIKE 'basic-%%'",
        )
    )
    assert links == {"basic-overlap": "overlap NS-TEST-1", "basic-given": "given NS-TEST-1"}
    again = imp(
        BASIC,
        scratch_database,
        origin="114.05,22.63,2",
        dataset="basic-given",
        building="NS-TEST-1",
    )
    assert again.status == "unchanged"  # same file, same placement: nothing to redo
    before = counts(scratch_database)
    with pytest.raises(ImportFailed, match="--building NO-SUCH.*nothing was written"):
        imp(
            BASIC,
            scratch_database,
            origin="114.05,22.63,2",
            dataset="basic-missing",
            building="NO-SUCH",
        )
    assert counts(scratch_database) == before


def test_a_failure_mid_import_leaves_no_rows(
    scratch_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cimtwin.importers.ifc import store

    before = counts(scratch_database)
    real, calls = store.tin_wkb, []

    def failing(triangles):
        calls.append(1)
        if len(calls) == 2:  # after the model, its storeys, spaces and a first element
            raise RuntimeError("disk full (simulated)")
        return real(triangles)

    monkeypatch.setattr(store, "tin_wkb", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        imp(BASIC, scratch_database, origin="114.06,22.64,2", dataset="basic-broken")
    assert len(calls) == 2
    assert counts(scratch_database) == before
    assert (
        rows(
            scratch_database, "SELECT count(*) FROM cim.import_batch WHERE dataset = 'basic-broken'"
        )[0][0]
        == 0
    )


def test_a_file_that_is_not_ifc_is_refused_naming_it(scratch_database: str, tmp_path: Path) -> None:
    bad = tmp_path / "drawing.ifc"
    bad.write_text("ISO-10303-21;\nthis is not a model\n")
    with pytest.raises(ImportFailed, match=r"drawing\.ifc: not an IFC file.*nothing was written"):
        imp(bad, scratch_database, origin=NORTH_STATION)


def test_a_bad_globalid_is_reported_and_skipped(scratch_database: str, tmp_path: Path) -> None:
    broken = tmp_path / "basic-bad-guid.ifc"
    text = BASIC.read_text()
    assert "2f_ancUNT1$Btb3bI4H7gM" in text
    broken.write_text(text.replace("2f_ancUNT1$Btb3bI4H7gM", "2f_ancUNT1$Btb3bI4H7gM_TOO_LONG"))
    result = imp(broken, scratch_database, origin=NORTH_STATION, dataset="basic-bad-guid")
    assert result.status == "succeeded" and result.counts["bim_element"] == 2
    (problem,) = [p for p in result.report.warnings if p.rule == "ifc-geometry"]
    assert "TOO_LONG" in problem.message and problem.row.startswith("IfcBeam #")

"""Every vertex of an imported geometry goes through the same transform and the same CRS checks
as the nodes: bent pipes from a GeoPackage in geographic coordinates and from EPANET
[VERTICES], lines and polygons of the other importers. Oracles are computed here with pyproj
and shapely from the values written into the test files (issue 9, defect 1)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import psycopg
import pytest
import shapely
from pyproj import Geod, Proj, Transformer

from cimtwin.db.engine import libpq_dsn
from cimtwin.importers.registry import importer_for
from cimtwin.importers.runner import ImportFailed, ImportOptions, run_import

TO_4547 = Transformer.from_crs(4490, 4547, always_xy=True)
TO_4490 = Transformer.from_crs(4547, 4490, always_xy=True)
#: a bent line like the issue's: nodes 100 m apart, a vertex 20 m off their chord (EPSG:4547)
NODES_4547 = {"A1": (503000.0, 2501000.0, 10.0), "A2": (503100.0, 2501000.0, 10.3)}
BEND_4547 = (503050.0, 2501020.0)
DEPTH, DIAMETER_MM = 1.2, 200.0


def _bent_line_gpkg(path: Path, vertex_lonlat: tuple[float, float] | None = None) -> dict:
    """A point and a line layer in EPSG:4490 (CGCS2000 lon/lat) with one bent pipe A1-A2."""
    lonlat = {k: TO_4490.transform(x, y) for k, (x, y, _) in NODES_4547.items()}
    bend = vertex_lonlat or TO_4490.transform(*BEND_4547)
    points = gpd.GeoDataFrame(
        {
            "point_no": list(NODES_4547),
            "network": ["JS", "JS"],
            "subtype": ["JP", "JP"],
            "ground_elevation": [z for *_, z in NODES_4547.values()],
        },
        geometry=[shapely.Point(*lonlat[k]) for k in NODES_4547],
        crs="EPSG:4490",
    )
    line = shapely.LineString([lonlat["A1"], bend, lonlat["A2"]])
    lines = gpd.GeoDataFrame(
        {
            "from_point": ["A1"],
            "to_point": ["A2"],
            "network": ["JS"],
            "subtype": ["JP"],
            "from_depth": [DEPTH],
            "to_depth": [DEPTH],
            "diameter": [DIAMETER_MM],
        },
        geometry=[line],
        crs="EPSG:4490",
    )
    points.to_file(path, layer="points", driver="GPKG", engine="pyogrio")
    lines.to_file(path, layer="lines", driver="GPKG", engine="pyogrio", mode="a")
    return {"line": line}


def test_bent_gpkg_line_in_4490_is_stored_in_4547_with_its_true_length(
    scratch_database: str, tmp_path: Path
):
    gpkg = tmp_path / "bent.gpkg"
    written = _bent_line_gpkg(gpkg)
    r = run_import(
        importer_for("pipelines"), [gpkg], ImportOptions(dataset="bent-4490"), scratch_database
    )
    assert r.report.errors == []
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        wkb, length_m = conn.execute(
            "SELECT ST_AsBinary(geom), length_m FROM cim.pipeline_segment "
            "WHERE dataset = 'bent-4490'"
        ).fetchone()
    stored = shapely.get_coordinates(shapely.from_wkb(bytes(wkb)), include_z=True)
    # oracle 1: every written vertex transformed by pyproj itself, z from the written depths
    lon, lat = shapely.get_coordinates(written["line"]).T
    ex, ny = TO_4547.transform(lon, lat)
    assert stored.shape == (3, 3)
    np.testing.assert_allclose(stored[:, :2], np.column_stack([ex, ny]), rtol=0, atol=1e-6)
    za, zb = (NODES_4547[k][2] - DEPTH - DIAMETER_MM / 2000 for k in ("A1", "A2"))
    planar = float(np.sum(np.hypot(np.diff(ex), np.diff(ny))))
    # Z runs linearly along the plan length, so the 3D length is hypot(plan length, rise)
    assert length_m == pytest.approx(np.hypot(planar, zb - za), abs=1e-6)
    assert 107 < length_m < 108  # the 107.7 m, not 5 102 090 m
    # oracle 2: the geodesic length on the GRS80 ellipsoid (CGCS2000's, to 0.1 mm flattening).
    # length_m is a 3D length on the Gauss-Kruger plane, not on the ellipsoid: the plan length
    # differs from the geodesic by the plane's scale error, at most (k - 1) * L with k the
    # point scale from pyproj, and the rise adds hypot(L, dz) - L <= dz^2 / 2L. The line lies
    # 3 km from the central meridian 114E, where k - 1 < 2e-7; with dz = 0.3 m the two together
    # stay under 1 mm, so the 0.01 m holds here. (100 km off the meridian k - 1 is
    # 1.3e-4, and a 100 m pipe is 13 mm longer on the plane: that is the projection, not a bug.)
    geodesic = Geod(ellps="GRS80").line_length(lon, lat)
    scale_error = float(
        np.max(np.abs(Proj("EPSG:4547").get_factors(lon, lat).meridional_scale - 1))
    )
    assert scale_error < 2e-7
    assert abs(planar - geodesic) <= geodesic * scale_error + 1e-6
    assert 0 <= length_m - planar <= (zb - za) ** 2 / (2 * planar) + 1e-9
    assert abs(length_m - geodesic) < 0.01


def test_a_misplaced_vertex_is_refused_like_a_misplaced_node(scratch_database: str, tmp_path: Path):
    """A vertex outside the CRS's area is the same mistake as a node there: refused, naming
    the line, instead of a pipe thousands of kilometres long."""
    gpkg = tmp_path / "bent_bad.gpkg"
    _bent_line_gpkg(gpkg, vertex_lonlat=(503050.0, 2501020.0))  # projected metres in lon/lat
    with pytest.raises(ImportFailed) as exc:
        run_import(
            importer_for("pipelines"),
            [gpkg],
            ImportOptions(dataset="bent-bad", dry_run=True),
            scratch_database,
        )
    problems = {(p.file, p.row, p.rule) for p in exc.value.report.errors}
    assert problems == {("bent_bad.gpkg:lines", "1", "crs-out-of-area")}


EPANET_TINY = """[JUNCTIONS]
 J1  10  0
 J2  10  0
[RESERVOIRS]
 R1  20
[PIPES]
 P1  R1  J1  100  200  100
 P2  J1  J2  150  200  100
[COORDINATES]
 R1  0    0
 J1  100  0
 J2  200  0
[VERTICES]
 P2  150  {vy}
[OPTIONS]
 Units LPS
[END]
"""


def test_epanet_vertices_follow_the_local_transform_and_crs_checks(
    scratch_database: str, tmp_path: Path
):
    inp = tmp_path / "tiny.inp"
    inp.write_text(EPANET_TINY.format(vy="50"), encoding="utf-8")
    opts = dict(crs="EPSG:4547", local_transform="604000,2602000,3600,100")
    r = run_import(
        importer_for("pipelines"),
        [inp],
        ImportOptions(dataset="tiny-bent", **opts),
        scratch_database,
    )
    assert r.report.errors == []
    # the 4-parameter similarity (1 degree, +100 ppm) applied here by hand to every vertex
    a, k = np.deg2rad(1.0), 1 + 100e-6
    local = np.array([(100.0, 0.0), (150.0, 50.0), (200.0, 0.0)])
    want = np.column_stack(
        [
            604000 + k * (local[:, 0] * np.cos(a) - local[:, 1] * np.sin(a)),
            2602000 + k * (local[:, 0] * np.sin(a) + local[:, 1] * np.cos(a)),
        ]
    )
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        wkb, length_m = conn.execute(
            "SELECT ST_AsBinary(geom), length_m FROM cim.pipeline_segment "
            "WHERE dataset = 'tiny-bent' AND source_id = 'P2'"
        ).fetchone()
    got = shapely.get_coordinates(shapely.from_wkb(bytes(wkb)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert length_m == pytest.approx(2 * k * np.hypot(50, 50), abs=1e-6)
    # a vertex the similarity puts outside EPSG:4547's area: the pipe's row is named
    inp.write_text(EPANET_TINY.format(vy="9e7"), encoding="utf-8")
    with pytest.raises(ImportFailed) as exc:
        run_import(
            importer_for("pipelines"),
            [inp],
            ImportOptions(dataset="tiny-bad", dry_run=True, **opts),
            scratch_database,
        )
    assert {(p.file, p.row, p.rule) for p in exc.value.report.errors} == {
        ("tiny.inp", "8", "crs-out-of-area")
    }


def _components(path: Path, geoms: list, crs: str) -> None:
    n = len(geoms)
    gpd.GeoDataFrame(
        {
            "comp_id": [f"4403090118{i:06d}" for i in range(n)],
            "class_cd": ["0118"] * n,
            "name": ["路灯"] * n,
            "status": ["完好"] * n,
        },
        geometry=geoms,
        crs=crs,
    ).to_file(path, driver="GPKG", engine="pyogrio")


def test_component_lines_and_parcels_check_every_vertex(scratch_database: str, tmp_path: Path):
    """Lines, multi-part lines and polygons: a lon/lat vertex after a good first vertex is
    reported on its feature (the check used to look at one vertex per feature)."""
    good = shapely.LineString([(603000, 2601000), (603050, 2601040), (603100, 2601000)])
    bad_line = shapely.LineString([(603000, 2601100), (114.03, 22.61), (603100, 2601100)])
    bad_multi = shapely.MultiLineString(
        [[(603000, 2601200), (603100, 2601200)], [(603100, 2601300), (114.03, 22.61)]]
    )
    gpkg = tmp_path / "components.gpkg"
    _components(gpkg, [good, bad_line, bad_multi], "EPSG:4547")
    with pytest.raises(ImportFailed) as exc:
        run_import(
            importer_for("components"),
            [gpkg],
            ImportOptions(dataset="comp-vertices", dry_run=True),
            scratch_database,
        )
    assert {(p.row, p.rule) for p in exc.value.report.errors} == {
        ("2 (4403090118000001)", "crs-lonlat-in-projected"),
        ("3 (4403090118000002)", "crs-lonlat-in-projected"),
    }
    ring = [(603000, 2601000), (603100, 2601000), (114.03, 22.61), (603000, 2601100)]
    parcels = tmp_path / "parcels.gpkg"
    gpd.GeoDataFrame(
        {"parcel_code": ["DK1"], "land_use": ["R2"]},
        geometry=[shapely.Polygon(ring)],
        crs="EPSG:4547",
    ).to_file(parcels, driver="GPKG", engine="pyogrio")
    with pytest.raises(ImportFailed) as exc:
        run_import(
            importer_for("parcels"),
            [parcels],
            ImportOptions(dataset="parcel-vertices", dry_run=True),
            scratch_database,
        )
    assert "crs-lonlat-in-projected" in {p.rule for p in exc.value.report.errors}


def test_component_lines_in_4490_have_every_vertex_in_storage(
    scratch_database: str, tmp_path: Path
):
    line = shapely.LineString(
        [
            TO_4490.transform(x, y)
            for x, y in [(603000, 2601000), (603050, 2601040), (603100, 2601000)]
        ]
    )
    gpkg = tmp_path / "components_4490.gpkg"
    _components(gpkg, [line], "EPSG:4490")
    r = run_import(
        importer_for("components"), [gpkg], ImportOptions(dataset="comp-4490"), scratch_database
    )
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        row = conn.execute(
            "SELECT ST_AsBinary(geom) FROM cim.city_component WHERE batch_id = %s",
            (r.batch_id,),
        ).fetchone()
    assert row is not None
    stored = shapely.from_wkb(bytes(row[0]))
    lon, lat = shapely.get_coordinates(line).T
    np.testing.assert_allclose(
        shapely.get_coordinates(stored), np.column_stack(TO_4547.transform(lon, lat)), atol=1e-6
    )

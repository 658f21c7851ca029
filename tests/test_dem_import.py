"""``cimtwin import dem``: a GeoTIFF in any CRS lands in the storage CRS with the source's
heights (bilinear within 1 cm), nodata kept, provenance and change bbox recorded; bad input is
one line naming the file; a failure leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import psycopg
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin
from scipy.ndimage import map_coordinates

from cimtwin.db.engine import libpq_dsn
from cimtwin.errors import UserError
from cimtwin.importers.dem import DemImporter
from cimtwin.importers.registry import importer_for
from cimtwin.importers.runner import ImportOptions, run_import
from cimtwin.spatial.model import SCHEMA
from tests.conftest import ROOT, SAMPLE

LON0, LAT0, STEP = 114.020, 22.600, 0.00005  # ~5 m cells near Shenzhen North
N = 220
NODATA = -9999.0


def height(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """A smooth hill-and-slope surface (m) in lon/lat."""
    return (
        70.0
        + 800.0 * (lon - LON0)
        + 500.0 * (lat - LAT0)
        + 3.0 * np.sin((lon - LON0) * 900.0) * np.cos((lat - LAT0) * 700.0)
    )


def write_tif(path: Path, values: np.ndarray, crs: str | None, west: float, north: float) -> Path:
    profile = {
        "driver": "GTiff",
        "width": values.shape[1],
        "height": values.shape[0],
        "count": 1,
        "dtype": "float32",
        "transform": from_origin(west, north, STEP, STEP),
        "nodata": NODATA,
    }
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values.astype(np.float32), 1)
    return path


@pytest.fixture(scope="module")
def wgs84_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dem")
    lon = LON0 + (np.arange(N) + 0.5) * STEP
    lat = LAT0 - (np.arange(N) + 0.5) * STEP
    z = height(lon[None, :], lat[:, None])
    z[:30, :30] = NODATA  # a hole in the north-west corner
    return write_tif(d / "hill_4326.tif", z, "EPSG:4326", LON0, LAT0)


def stored(conn: psycopg.Connection, dataset: str) -> tuple[np.ndarray, tuple]:
    """The stored DEM mosaicked back from its blocks (decoded here, not by cimtwin)."""
    dem = conn.execute(
        f"SELECT id, origin_x, origin_y, cell_x, cell_y, width, height, block_size "
        f"FROM {SCHEMA}.terrain_dem WHERE dataset = %s",
        (dataset,),
    ).fetchone()
    assert dem is not None
    dem_id, ox, oy, cx, cy, w, h, b = dem
    out = np.full((h, w), np.nan, dtype=np.float32)
    for br, bc, rows, cols, data in conn.execute(
        f"SELECT block_row, block_col, rows, cols, data FROM {SCHEMA}.terrain_dem_block "
        "WHERE dem_id = %s",
        (dem_id,),
    ):
        block = np.frombuffer(zlib.decompress(data), dtype="<f4").reshape(rows, cols)
        out[br * b : br * b + rows, bc * b : bc * b + cols] = block
    return out, (ox, oy, cx, cy)


def dem_rows(url: str) -> tuple[int, int, int]:
    with psycopg.connect(libpq_dsn(url)) as conn:
        row = conn.execute(
            f"SELECT (SELECT count(*) FROM {SCHEMA}.terrain_dem), "
            f"(SELECT count(*) FROM {SCHEMA}.terrain_dem_block), "
            f"(SELECT count(*) FROM {SCHEMA}.import_batch WHERE kind = 'dem')"
        ).fetchone()
    assert row is not None
    return row


def test_wgs84_geotiff_imports_with_source_heights(wgs84_tif: Path, scratch_database: str) -> None:
    with psycopg.connect(libpq_dsn(scratch_database), autocommit=True) as listener:
        listener.execute("LISTEN cimtwin_change")
        result = run_import(
            importer_for("dem"), [wgs84_tif], ImportOptions(dataset="t:hill"), scratch_database
        )
        notes = [json.loads(n.payload) for n in listener.notifies(timeout=2, stop_after=1)]
    assert result.status == "succeeded"
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        values, (ox, oy, cx, cy) = stored(conn, "t:hill")
        batch = conn.execute(
            f"SELECT status, source_crs, vertical_datum, sha256 FROM {SCHEMA}.import_batch "
            "WHERE id = %s",
            (result.batch_id,),
        ).fetchone()
        extent = conn.execute(
            f"SELECT ST_XMin(extent), ST_YMin(extent), ST_XMax(extent), ST_YMax(extent), "
            f"ST_SRID(extent) FROM {SCHEMA}.terrain_dem WHERE dataset = 't:hill'"
        ).fetchone()
    assert batch is not None and batch[0] == "succeeded" and batch[1] == "EPSG:4326"
    assert batch[2] == "EPSG:5737"
    assert extent is not None and extent[4] == 4547
    # the change notification carries the DEM's storage-CRS extent
    assert notes and notes[0]["kind"] == "dem" and notes[0]["batch"] == result.batch_id
    assert notes[0]["bbox"] == pytest.approx(list(extent[:4]))
    # the source's extent put through pyproj lies within the stored extent
    to_storage = Transformer.from_crs(4326, 4547, always_xy=True)
    ex, ey = to_storage.transform([LON0, LON0 + N * STEP], [LAT0 - N * STEP, LAT0])
    assert extent[0] <= min(ex) + 10 and extent[2] >= max(ex) - 10

    # heights at random storage points = the source's bilinear value at the same place
    rng = np.random.default_rng(7)
    with rasterio.open(wgs84_tif) as src:
        source = src.read(1).astype(np.float64)
        inverse = ~src.transform
    lon = LON0 + rng.uniform(40, N - 5, 400) * STEP
    lat = LAT0 - rng.uniform(40, N - 5, 400) * STEP
    x, y = to_storage.transform(lon, lat)
    col, row = inverse @ (lon, lat)
    want = map_coordinates(source, [row - 0.5, col - 0.5], order=1)
    got = map_coordinates(
        values.astype(np.float64), [(oy - y) / cy - 0.5, (x - ox) / cx - 0.5], order=1, cval=np.nan
    )
    assert np.isfinite(got).all()
    assert np.max(np.abs(got - want)) < 0.01
    # the nodata corner stayed a hole
    hx, hy = to_storage.transform(LON0 + 10 * STEP, LAT0 - 10 * STEP)
    assert np.isnan(values[int((oy - hy) / cy), int((hx - ox) / cx)])


def test_storage_crs_sample_dem_imports_exactly_through_the_cli(scratch_database: str) -> None:
    tif = SAMPLE / "dem.tif"
    proc = subprocess.run(
        [sys.executable, "-m", "cimtwin.cli", "import", "dem", str(tif), "--dataset", "t:sample"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "CIMTWIN_DATABASE_URL": scratch_database, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(tif) as src:
        source, t = src.read(1), src.transform
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        values, (ox, oy, cx, cy) = stored(conn, "t:sample")
    assert (ox, oy, cx, cy) == (t.c, t.f, t.a, -t.e)
    np.testing.assert_array_equal(values, source)


@pytest.mark.parametrize("case", ["not-a-raster", "no-crs", "outside", "bad-crs-option"])
def test_bad_input_is_one_line_naming_the_file(
    case: str, tmp_path: Path, scratch_database: str
) -> None:
    z = np.full((20, 20), 50.0)
    options = ImportOptions(dataset=f"t:bad:{case}")
    if case == "not-a-raster":
        path = tmp_path / "dem.tif"
        path.write_text("easting,northing,height\n1,2,3\n", encoding="utf-8")
    elif case == "no-crs":
        path = write_tif(tmp_path / "nocrs.tif", z, None, 502000.0, 2501000.0)
    elif case == "outside":  # lon/lat at the Greenwich meridian: not in EPSG:4547's zone
        path = write_tif(tmp_path / "greenwich.tif", z, "EPSG:4326", 0.0, 51.5)
    else:
        path = write_tif(tmp_path / "ok.tif", z, None, 502000.0, 2501000.0)
        options.crs = "EPSG:nonsense"
    before = dem_rows(scratch_database)
    with pytest.raises(UserError) as info:
        run_import(DemImporter(), [path], options, scratch_database)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "nothing was written" in message
    assert dem_rows(scratch_database) == before


def test_no_crs_file_imports_with_crs_option(tmp_path: Path, scratch_database: str) -> None:
    z = np.arange(400, dtype=float).reshape(20, 20) / 10 + 60
    path = write_tif(tmp_path / "nocrs.tif", z, None, 502000.0, 2501000.0)
    options = ImportOptions(dataset="t:nocrs", crs="EPSG:4547")
    assert run_import(DemImporter(), [path], options, scratch_database).status == "succeeded"
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        values, _ = stored(conn, "t:nocrs")
    np.testing.assert_array_equal(values, z.astype(np.float32))


def test_failure_while_writing_leaves_nothing(wgs84_tif: Path, scratch_database: str) -> None:
    class DiesAfterWriting(DemImporter):
        def write(self, conn, prepared, batch_id):
            super().write(conn, prepared, batch_id)
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    before = dem_rows(scratch_database)
    with pytest.raises(UserError, match="rolled back"):
        run_import(
            DiesAfterWriting(), [wgs84_tif], ImportOptions(dataset="t:dies"), scratch_database
        )
    assert dem_rows(scratch_database) == before


def test_cli_refuses_a_bad_file_in_one_line(tmp_path: Path, scratch_database: str) -> None:
    bad = tmp_path / "survey.tif"
    bad.write_bytes(b"II*\0not really a tiff")
    proc = subprocess.run(
        [sys.executable, "-m", "cimtwin.cli", "import", "dem", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "CIMTWIN_DATABASE_URL": scratch_database, "COLUMNS": "400"},
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in proc.stderr

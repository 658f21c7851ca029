"""The control point: a corner of the Shenzhen North Station building's roof in the built
buildings tileset, put through the tileset's own transforms, lands where PROJ puts it.

The oracle is PROJ's own answer for the compound CRS EPSG:4547 + EGM96 height (EPSG:5773) to
EPSG:4978, which picks the geoid transformation from its database, independently of cimtwin's
placement code. The default CIMTWIN_HEIGHT_OFFSET_M is 0, so a 1985 height is taken as an
EGM96 height; ignoring the geoid would put the corner about 3 m too high, which this test
also shows it would catch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
import pyproj
import pytest
import shapely
from pyproj import CRS, Transformer

from cimtwin.db.engine import libpq_dsn
from cimtwin.tiles.threed.build import build_tileset
from tests.threed_check import validate
from tests.threed_read import feature_vertices_ecef

GRIDS = Path("/usr/share/proj")


def _roof_corner(database_url: str) -> tuple[int, np.ndarray]:
    """The station building's id and its first footprint corner at roof height (storage CRS,
    1985 height), straight from PostGIS."""
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        row = conn.execute(
            "SELECT id, ST_AsBinary(footprint), base_elevation_m + height_m FROM cim.building "
            "WHERE name = %s",
            ("深圳北站",),
        ).fetchone()
    assert row is not None, "the sample has the North Station building"
    ring = shapely.get_coordinates(shapely.from_wkb(bytes(row[1])).geoms[0].exterior)
    return int(row[0]), np.array([ring[0, 0], ring[0, 1], float(row[2])])


@pytest.mark.skipif(not (GRIDS / "egm96_15.gtx").is_file(), reason="proj-data's EGM96 absent")
def test_station_roof_corner_is_within_a_centimetre_of_proj(
    loaded_sample, database_url: str, tmp_path: Path
) -> None:
    building, corner = _roof_corner(database_url)
    build_tileset("buildings", tmp_path, database_url=database_url, workers=1)
    validate(tmp_path / "buildings" / "tileset.json")
    ecef = feature_vertices_ecef(tmp_path / "buildings", building)

    pyproj.datadir.append_data_dir(str(GRIDS))
    proj = Transformer.from_crs(CRS("EPSG:4547+5773"), CRS("EPSG:4978"), always_xy=True)
    want = np.array(proj.transform(*corner))
    miss = np.linalg.norm(ecef - want, axis=1).min()
    print(f"control point: {miss * 1000:.2f} mm from PROJ")
    assert miss < 0.01, f"the roof corner is {miss * 100:.2f} cm from PROJ's answer"

    # the same corner without the geoid (height taken as ellipsoidal): about 3 m off, which
    # the 1 cm bound above would have caught
    flat = Transformer.from_crs(CRS("EPSG:4547").to_3d(), CRS("EPSG:4978"), always_xy=True)
    no_geoid = np.array(flat.transform(*corner))
    assert 2.5 < np.linalg.norm(no_geoid - want) < 4.0

"""The SRS forms of a ContextCapture metadata.xml besides the sample's WKT: ENU:lat,lon (a
tangent frame, ellipsoidal heights) and EPSG codes; bad SRS and origins are clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pyproj import Transformer

from cimtwin.importers.oblique.georef import (
    GeorefError,
    ToStorage,
    parse_origin,
    parse_srs,
    read_metadata,
)
from cimtwin.tiles.threed.placement import Placement, geoid_undulation

GRIDS = Path("/usr/share/proj")


@pytest.mark.skipif(not (GRIDS / "egm96_15.gtx").is_file(), reason="proj-data's EGM96 absent")
def test_enu_frames_take_ellipsoidal_heights_to_1985() -> None:
    srs = parse_srs("ENU:22.6,114.03", np.zeros(3), "test")
    to = ToStorage(srs, np.zeros(3), None)
    assert to.height_datum == "ellipsoidal"
    got = to(np.array([[0.0, 0.0, 10.0], [100.0, 0.0, 10.0], [0.0, 100.0, 10.0]]))
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:4547", always_xy=True).transform(114.03, 22.6)
    np.testing.assert_allclose(got[0, :2], [x, y], atol=1e-6)
    # 100 m east and north in the tangent plane are 100 m apart on the map (scale ~1)
    assert np.linalg.norm(got[1, :2] - got[0, :2]) == pytest.approx(100.0, abs=0.05)
    assert got[2, 1] - got[0, 1] == pytest.approx(100.0, abs=0.05)
    n = geoid_undulation(np.array([114.03]), np.array([22.6]), Placement().grid)[0]
    assert got[0, 2] == pytest.approx(10.0 - n, abs=1e-6)  # the placement's inverse


def test_epsg_srs_and_origin(tmp_path: Path) -> None:
    meta = tmp_path / "metadata.xml"
    meta.write_text(
        "<ModelMetadata><SRS>EPSG:4547</SRS><SRSOrigin>500000,2500000,5</SRSOrigin></ModelMetadata>"
    )
    m = read_metadata(meta)
    assert m.srs.crs is not None and m.srs.crs.to_epsg() == 4547 and not m.srs.warnings
    got = ToStorage(m.srs, m.origin, None)(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(got, [[500001.0, 2500002.0, 8.0]], atol=1e-6)


def test_bad_srs_and_origins_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(GeorefError, match="ENU wants ENU:lat,lon"):
        parse_srs("ENU:22.6", np.zeros(3), "m")
    with pytest.raises(GeorefError, match="not a coordinate reference system"):
        parse_srs("EPSG:999999", np.zeros(3), "m")
    with pytest.raises(GeorefError, match="is not X,Y,Z"):
        parse_origin("1,2,x", "--origin")
    with pytest.raises(GeorefError, match="--height-datum"):
        ToStorage(parse_srs("EPSG:4547", np.zeros(3), "m"), np.zeros(3), "msl")
    meta = tmp_path / "metadata.xml"
    meta.write_text("<ModelMetadata><SRSOrigin>0,0,0</SRSOrigin></ModelMetadata>")
    with pytest.raises(GeorefError, match="no <SRS>"):
        read_metadata(meta)

"""One CRS parser and one polygon model for every router (cimtwin/api/inputs.py)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from cimtwin.api import inputs, pipelines
from cimtwin.api.inputs import crs_name, input_crs, parse_crs
from cimtwin.spatial.base import SRID
from cimtwin.spatial.crs import lonlat_to_storage

STATION = (114.025, 22.6085)  # inside the sample district


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("OGC:CRS84", "OGC:CRS84"),
        (" crs84 ", "OGC:CRS84"),
        ("http://www.opengis.net/def/crs/OGC/1.3/CRS84", "OGC:CRS84"),
        ("https://www.opengis.net/def/crs/OGC/1.3/CRS84", "OGC:CRS84"),
        ("urn:ogc:def:crs:OGC::CRS84", "OGC:CRS84"),
        ("EPSG:4490", "EPSG:4490"),
        ("[EPSG:4490]", "EPSG:4490"),
        ("epsg:4547", "EPSG:4547"),
        ("urn:ogc:def:crs:EPSG::4547", "EPSG:4547"),
        ("http://www.opengis.net/def/crs/EPSG/0/4547", "EPSG:4547"),
        ("EPSG:4326", "EPSG:4326"),
        ("WGS84", None),
        ("EPSG:abc", None),
        ("", None),
    ],
)
def test_one_reading_of_crs_names(text: str, name: str | None) -> None:
    assert crs_name(text) == name


def test_both_policies_read_the_same_spellings() -> None:
    """The features API takes only what it advertises; bodies take any 2D EPSG CRS."""
    for spelling in ("[EPSG:4490]", "urn:ogc:def:crs:EPSG::4490", "epsg:4490"):
        assert parse_crs(spelling, "crs").label == "EPSG:4490"
        assert input_crs(spelling).label == "EPSG:4490"
    with pytest.raises(ValueError, match=r"bbox-crs: unsupported CRS 'EPSG:3857'; supported: "):
        parse_crs("EPSG:3857", "bbox-crs")
    assert input_crs("EPSG:3857").geographic is False
    with pytest.raises(ValueError, match="crs: EPSG:9999 is not a known EPSG CRS"):
        input_crs("EPSG:9999")
    with pytest.raises(ValueError, match="is not a CRS this API takes"):
        input_crs("WGS84")


def test_pipeline_bodies_use_the_shared_inputs() -> None:
    assert pipelines.PolygonIn is inputs.PolygonIn
    assert not hasattr(pipelines, "_crs") and not hasattr(pipelines, "to_storage")
    x, y = lonlat_to_storage(*STATION)
    # any 2D EPSG CRS now, not only the three the features API advertises
    body = pipelines.IsolationRequest(point=list(STATION), crs="EPSG:4326")
    assert body._xy is not None
    assert np.allclose(body._xy, (x, y), atol=0.01)
    stored = pipelines.IsolationRequest(point=[x, y], crs=f"EPSG:{SRID}")
    assert stored._xy == pytest.approx((x, y))


@pytest.mark.parametrize(
    ("point", "crs", "words"),
    [
        ([200.0, 22.6], "OGC:CRS84", ("point: longitude/latitude out of range",)),
        ([0.0, 0.0], "OGC:CRS84", ("point: outside the area",)),
        (list(STATION), f"EPSG:{SRID}", ("outside the area", "look like lon/lat")),
        ([1.0, 2.0], "EPSG:9999", ("crs: EPSG:9999 is not a known EPSG CRS",)),
    ],
)
def test_pipeline_points_are_checked_like_every_body(
    point: list[float], crs: str, words: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as info:
        pipelines.IsolationRequest(point=point, crs=crs)
    for w in words:
        assert w in str(info.value)

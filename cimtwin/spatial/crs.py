"""Coordinate reference systems: the storage CRS, transforms into it, and sanity checks.

Chinese survey tables give X as the northing and Y as the easting; everything inside cimtwin
is (easting, northing) -- pyproj transformers are always built with ``always_xy=True``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from pyproj import CRS, Transformer

from cimtwin.settings import get_settings

CGCS2000_GEOGRAPHIC = 4490
CRS84 = "OGC:CRS84"


def storage_srid() -> int:
    return get_settings().storage_srid


@lru_cache
def storage_crs() -> CRS:
    crs = CRS.from_epsg(storage_srid())
    if not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
        raise ValueError(f"storage CRS EPSG:{storage_srid()} must be projected and metric")
    return crs


@lru_cache(maxsize=64)
def transformer(src: str | int, dst: str | int) -> Transformer:
    """Cached (easting, northing)-ordered transformer between two CRS."""
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def to_storage(x: np.ndarray, y: np.ndarray, src: str | int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised transform of coordinates in ``src`` into the storage CRS."""
    return transformer(src, storage_srid()).transform(np.asarray(x), np.asarray(y))


def lonlat_to_storage(lon: float, lat: float) -> tuple[float, float]:
    x, y = transformer(CGCS2000_GEOGRAPHIC, storage_srid()).transform(lon, lat)
    return float(x), float(y)


def storage_to_lonlat(x: float, y: float) -> tuple[float, float]:
    lon, lat = transformer(storage_srid(), CGCS2000_GEOGRAPHIC).transform(x, y)
    return float(lon), float(lat)


def projected_bounds(crs: str | int) -> tuple[float, float, float, float]:
    """The CRS's area of use expressed in its own (x, y) units, for plausibility checks."""
    c = CRS.from_user_input(crs)
    aou = c.area_of_use
    if aou is None:
        raise ValueError(f"{c.name} has no declared area of use")
    if c.is_geographic:
        return aou.west, aou.south, aou.east, aou.north
    return transformer(4326, c.to_epsg() or c.to_wkt()).transform_bounds(
        aou.west, aou.south, aou.east, aou.north
    )

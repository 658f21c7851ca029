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


def transform_arrays(
    tr: Transformer, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``tr.transform`` on coordinate arrays. pyproj tries its one-point path first, which turns
    a one-element array into a float (deprecated in numpy): pass that one point as floats."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size == 1:
        a, b = tr.transform(float(x.reshape(-1)[0]), float(y.reshape(-1)[0]))
        return np.full(x.shape, a), np.full(y.shape, b)
    return tr.transform(x, y)


def to_storage(x: np.ndarray, y: np.ndarray, src: str | int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised transform of coordinates in ``src`` into the storage CRS."""
    return transform_arrays(transformer(src, storage_srid()), x, y)


def lonlat_to_storage(lon: float, lat: float) -> tuple[float, float]:
    x, y = transformer(CGCS2000_GEOGRAPHIC, storage_srid()).transform(lon, lat)
    return float(x), float(y)


def storage_to_lonlat(x: float, y: float) -> tuple[float, float]:
    lon, lat = transformer(storage_srid(), CGCS2000_GEOGRAPHIC).transform(x, y)
    return float(lon), float(lat)


@lru_cache(maxsize=64)
def projected_bounds(crs: str | int) -> tuple[float, float, float, float]:
    """The CRS's area of use expressed in its own (x, y) units, for plausibility checks
    (kept: an import checks each batch of its layer against the same CRS)."""
    c = CRS.from_user_input(crs)
    aou = c.area_of_use
    if aou is None:
        raise ValueError(f"{c.name} has no declared area of use")
    if c.is_geographic:
        return aou.west, aou.south, aou.east, aou.north
    return transformer(4326, c.to_epsg() or c.to_wkt()).transform_bounds(
        aou.west, aou.south, aou.east, aou.north
    )


def parse_crs(text: str, where: str = "--crs") -> CRS:
    """A CRS from user text ('EPSG:4547', WKT, PROJ), or a clear error."""
    try:
        return CRS.from_user_input(text)
    except Exception as exc:  # pyproj raises CRSError with a long message
        raise ValueError(f"{where}: {text!r} is not a coordinate reference system") from exc


def crs_label(crs: CRS) -> str:
    code = crs.to_epsg()
    return f"EPSG:{code}" if code else crs.to_wkt()


def implausible_coordinates(
    x: np.ndarray, y: np.ndarray, crs: CRS
) -> list[tuple[str, np.ndarray, str]]:
    """Checks that coordinates can belong to ``crs``: (rule, offending mask, message) triples.

    Catches the common mistakes in deliveries: lon/lat written into a projected file, northing
    and easting swapped, and positions outside the CRS's area of use.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    out: list[tuple[str, np.ndarray, str]] = []
    if not finite.any():
        return out
    label = crs_label(crs)
    west, south, east, north = projected_bounds(label if crs.to_epsg() else crs.to_wkt())
    pad_x, pad_y = (east - west) * 0.02, (north - south) * 0.02
    inside = (x >= west - pad_x) & (x <= east + pad_x) & (y >= south - pad_y) & (y <= north + pad_y)
    outside = finite & ~inside
    if not outside.any():
        return out
    if crs.is_projected:
        lonlat = outside & (np.abs(x) <= 180) & (np.abs(y) <= 90)
        if lonlat.any():
            out.append(
                (
                    "crs-lonlat-in-projected",
                    lonlat,
                    f"coordinates look like longitude/latitude but the CRS is {label}",
                )
            )
        swapped = (
            outside
            & ~lonlat
            & (y >= west - pad_x)
            & (y <= east + pad_x)
            & (x >= south - pad_y)
            & (x <= north + pad_y)
        )
        if swapped.any():
            out.append(
                (
                    "crs-axes-swapped",
                    swapped,
                    f"easting and northing look swapped for {label} "
                    "(in survey tables X is the northing, Y the easting)",
                )
            )
        rest = outside & ~lonlat & ~swapped
    else:
        swapped = outside & (np.abs(y) <= 180) & (np.abs(x) <= 90) & (y >= west) & (y <= east)
        if swapped.any():
            out.append(
                ("crs-axes-swapped", swapped, f"longitude and latitude look swapped for {label}")
            )
        rest = outside & ~swapped
    if rest.any():
        out.append(("crs-out-of-area", rest, f"position outside the area of use of {label}"))
    return out


class Similarity4:
    """4-parameter planar similarity (dx, dy, rotation, scale) from a local city grid.

    Used for local systems such as the Shenzhen independent grid, whose parameters the bureau
    holds: x' = dx + k (x cos a - y sin a), y' = dy + k (x sin a + y cos a).
    """

    def __init__(self, dx: float, dy: float, rotation_arcsec: float, scale_ppm: float) -> None:
        self.dx, self.dy = dx, dy
        self.angle = np.deg2rad(rotation_arcsec / 3600.0)
        self.k = 1.0 + scale_ppm * 1e-6

    @classmethod
    def parse(cls, text: str) -> Similarity4:
        try:
            dx, dy, rot, ppm = (float(v) for v in text.split(","))
        except ValueError as exc:
            raise ValueError(
                f"local transform {text!r}: expected 'dx,dy,rotation_arcsec,scale_ppm'"
            ) from exc
        return cls(dx, dy, rot, ppm)

    def apply(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.angle), np.sin(self.angle)
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        return self.dx + self.k * (x * c - y * s), self.dy + self.k * (x * s + y * c)

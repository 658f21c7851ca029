"""GCJ-02, the offset Chinese web maps (Amap/高德, Tencent, Google China) put on WGS 84
longitude/latitude, and its inverse.

The forward formula is the published one (Krasovsky ellipsoid constants and two trigonometric
series in longitude and latitude relative to 105°E 35°N); it has no closed-form inverse, so
:func:`to_wgs84` iterates the forward step (a fixed-point iteration that converges to well
under a millimetre in four or five steps, as the offset changes slowly with position)."""

from __future__ import annotations

import numpy as np

A = 6378245.0  # semi-major axis of the Krasovsky 1940 ellipsoid, as the formula has it
EE = 0.00669342162296594323  # its first eccentricity squared
#: where the offset applies (outside, GCJ-02 = WGS 84)
CHINA = (72.004, 0.8293, 137.8347, 55.8271)
TOLERANCE_DEG = 1e-10  # ~1 cm is 9e-8 degrees; stop far below it
MAX_STEPS = 30


def _series(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The formula's offsets in 'metres-like' units, x = lon - 105, y = lat - 35."""
    common = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    dlat = (
        -100.0
        + 2.0 * x
        + 3.0 * y
        + 0.2 * y * y
        + 0.1 * x * y
        + 0.2 * np.sqrt(np.abs(x))
        + common
        + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
        + (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    )
    dlon = (
        300.0
        + x
        + 2.0 * y
        + 0.1 * x * x
        + 0.1 * x * y
        + 0.1 * np.sqrt(np.abs(x))
        + common
        + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
        + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    )
    return dlon, dlat


def in_china(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    return (lon >= CHINA[0]) & (lon <= CHINA[2]) & (lat >= CHINA[1]) & (lat <= CHINA[3])


def offset(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 minus WGS 84 at WGS 84 positions, in degrees (zero outside China)."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    dlon, dlat = _series(lon - 105.0, lat - 35.0)
    rad = np.radians(lat)
    magic = 1.0 - EE * np.sin(rad) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = dlat * 180.0 / (A * (1.0 - EE) / (magic * sqrt_magic) * np.pi)
    dlon = dlon * 180.0 / (A / sqrt_magic * np.cos(rad) * np.pi)
    inside = in_china(lon, lat)
    return np.where(inside, dlon, 0.0), np.where(inside, dlat, 0.0)


def from_wgs84(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WGS 84 -> GCJ-02 (what a web map shows for a GPS position)."""
    dlon, dlat = offset(lon, lat)
    return np.asarray(lon, dtype=float) + dlon, np.asarray(lat, dtype=float) + dlat


def to_wgs84(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 -> WGS 84: the position whose GCJ-02 image is the given one, by iteration."""
    g_lon, g_lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    w_lon, w_lat = g_lon.copy(), g_lat.copy()
    for _ in range(MAX_STEPS):
        f_lon, f_lat = from_wgs84(w_lon, w_lat)
        e_lon, e_lat = f_lon - g_lon, f_lat - g_lat
        w_lon, w_lat = w_lon - e_lon, w_lat - e_lat
        if (
            not len(e_lon)
            or max(np.nanmax(np.abs(e_lon)), np.nanmax(np.abs(e_lat))) < TOLERANCE_DEG
        ):
            break
    return w_lon, w_lat


def shift_metres(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """How far GCJ-02 moves each position, in metres (for messages)."""
    dlon, dlat = offset(lon, lat)
    lat = np.asarray(lat, dtype=float)
    metres_per_deg = 111_320.0
    return np.hypot(dlon * metres_per_deg * np.cos(np.radians(lat)), dlat * metres_per_deg)

"""Where a ContextCapture production lies: ``metadata.xml``'s SRS and SRSOrigin, and the one
way from its local vertices to storage coordinates (easting, northing, 1985 height).

The SRS comes in three forms: ``EPSG:n`` (optionally ``EPSG:n+m`` with a vertical part),
``ENU:lat,lon`` (a local east-north-up frame on the WGS 84 ellipsoid, heights ellipsoidal),
or a full WKT. A WKT is taken by its parameters, never by its label: its outermost
``AUTHORITY`` is dropped before PROJ sees it, because PROJ would otherwise look the code up
and use that definition. The sample's WKT is "3-degree Gauss-Kruger CM 113.36E", central
meridian 113.37, false northing 90, labelled EPSG:4547 (central meridian 114, false northing
0): the label would move the model about 65 km. When the label and the parameters disagree
the import warns (with the distance) and uses the parameters.

Every vertex is local + SRSOrigin in float64, transformed with pyproj (always_xy) one by one
(no shortcut through the origin: a tile kilometres away must not bend), then placed by
:mod:`cimtwin.tiles.threed.placement` like every other 3D source.

Heights (``--height-datum``, as the IFC importer takes them):

* ``1985`` (default for a projected or EPSG SRS): the production's Z is a 1985 national
  height, unchanged -- ContextCapture productions in a CGCS2000 Gauss-Kruger SRS are
  controlled by the survey's levelled points, which are 1985 heights;
* ``geoid``: heights above the placement's geoid (``CIMTWIN_GEOID``): H = Z - offset;
* ``ellipsoidal`` (default for ``ENU:`` and geographic or geocentric SRS, whose Z is above the
  ellipsoid): H = h - N(lon, lat) - offset, the inverse of the placement.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyproj import CRS, Transformer

from cimtwin.errors import GeorefError
from cimtwin.spatial import crs as crs_mod

HEIGHT_DATUMS = ("1985", "geoid", "ellipsoidal")
#: label and parameters "agree" when they put the origin within this distance (m)
AGREE_M = 0.01
_OUTER_AUTHORITY = re.compile(r',\s*AUTHORITY\s*\[\s*"([^"]+)"\s*,\s*"?([^"\]]+)"?\s*\]\s*\]\s*$')


@dataclass(frozen=True)
class Srs:
    """A production's SRS as given and as used."""

    text: str
    crs: CRS | None  # None for ENU
    enu: tuple[float, float] | None  # (lat, lon) of an ENU: SRS
    label: str  # for the import record
    warnings: tuple[str, ...] = ()


def _label_check(wkt: str, crs: CRS, origin: np.ndarray) -> tuple[str, ...]:
    """A warning when the WKT's AUTHORITY names a CRS whose parameters place the origin
    elsewhere than the WKT's own parameters."""
    m = _OUTER_AUTHORITY.search(wkt)
    if not m:
        return ()
    label = f"{m.group(1)}:{m.group(2).strip()}"
    try:
        labelled = CRS.from_user_input(label)
    except Exception:  # an authority PROJ does not know: nothing to compare
        return (f"the SRS's label {label} is unknown to PROJ; its parameters are used",)
    try:
        own = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        theirs = Transformer.from_crs(labelled, "EPSG:4326", always_xy=True)
        lon1, lat1 = own.transform(float(origin[0]), float(origin[1]))
        lon2, lat2 = theirs.transform(float(origin[0]), float(origin[1]))
    except Exception:
        return (f"the SRS's label {label} could not be compared with its parameters",)
    from pyproj import Geod

    _, _, distance = Geod(ellps="WGS84").inv(lon1, lat1, lon2, lat2)
    if not math.isfinite(distance) or distance <= AGREE_M:
        return ()
    diffs = []
    mine = _parameters(crs)
    for name, value in _parameters(labelled).items():
        if name in mine and not math.isclose(mine[name], value, rel_tol=0, abs_tol=1e-9):
            diffs.append(f"{name} {mine[name]:g} vs {value:g}")
    what = f" ({'; '.join(diffs)})" if diffs else ""
    return (
        f"the SRS is labelled {label} but its parameters differ{what}: the parameters are "
        f"used; the label would move the model by {distance / 1000:.1f} km",
    )


def _parameters(crs: CRS) -> dict[str, float]:
    conversion = crs.to_json_dict().get("conversion", {})
    out = {}
    for p in conversion.get("parameters", []):
        if isinstance(p.get("value"), int | float):
            out[p["name"].lower()] = float(p["value"])
    return out


def parse_srs(text: str, origin: np.ndarray, where: str) -> Srs:
    """The SRS of ``metadata.xml`` (or ``--crs``) in any of its three forms."""
    text = text.strip()
    if text.upper().startswith("ENU:"):
        try:
            lat, lon = (float(v) for v in text[4:].split(","))
        except ValueError:
            raise GeorefError(f"{where}: SRS {text!r}: ENU wants ENU:lat,lon") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise GeorefError(f"{where}: SRS {text!r}: latitude or longitude out of range")
        return Srs(text, None, (lat, lon), text)
    if text.upper().startswith(("EPSG:", "ESRI:", "+PROJ")) or "[" not in text:
        try:
            crs = CRS.from_user_input(text)
        except Exception:
            raise GeorefError(
                f"{where}: SRS {text!r} is not a coordinate reference system"
            ) from None
        return Srs(text, crs, None, crs_mod.crs_label(crs))
    m = _OUTER_AUTHORITY.search(text)
    bare = text[: m.start()] + "]" if m else text
    try:
        crs = CRS.from_wkt(bare)
    except Exception:
        raise GeorefError(f"{where}: the SRS's WKT cannot be read by PROJ") from None
    return Srs(text, crs, None, crs.to_wkt(), _label_check(text, crs, origin))


def parse_origin(text: str, where: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) == 2:
        values.append(0.0)
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise GeorefError(f"{where}: origin {text!r} is not X,Y,Z (metres in the SRS)")
    return np.array(values, dtype=np.float64)


@dataclass(frozen=True)
class Metadata:
    srs: Srs
    origin: np.ndarray


def read_metadata(path: Path) -> Metadata:
    """``metadata.xml``: SRS and SRSOrigin (0,0,0 when absent)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise GeorefError(f"{path}: not readable XML ({exc})") from exc
    srs_el = root.find("SRS")
    if srs_el is None or not (srs_el.text or "").strip():
        raise GeorefError(f"{path}: no <SRS>; pass --crs")
    origin_el = root.find("SRSOrigin")
    origin_text = (origin_el.text or "").strip() if origin_el is not None else ""
    origin = parse_origin(origin_text, str(path)) if origin_text else np.zeros(3)
    return Metadata(parse_srs(srs_el.text or "", origin, str(path)), origin)


class ToStorage:
    """Production coordinates (local + origin) -> storage (easting, northing, 1985 height)."""

    def __init__(self, srs: Srs, origin: np.ndarray, height_datum: str | None) -> None:
        self.srs, self.origin = srs, np.asarray(origin, dtype=np.float64)
        storage = crs_mod.storage_crs()
        self._to_ellipsoid: Transformer | None = None  # -> lon, lat, h (ellipsoidal)
        self._to_storage: Transformer | None = None
        natural = "1985"
        if srs.enu is not None:
            lat, lon = srs.enu
            self._to_ellipsoid = Transformer.from_pipeline(
                f"+proj=pipeline +step +inv +proj=topocentric +lat_0={lat} +lon_0={lon} "
                "+h_0=0 +ellps=WGS84 +step +inv +proj=cart +ellps=WGS84"
            )
            natural = "ellipsoidal"
        else:
            assert srs.crs is not None
            horizontal = srs.crs.sub_crs_list[0] if srs.crs.is_compound else srs.crs
            if horizontal.is_geocentric:
                self._to_ellipsoid = Transformer.from_crs(horizontal, "EPSG:4979", always_xy=True)
                natural = "ellipsoidal"
            else:
                if horizontal.is_geographic:
                    natural = "ellipsoidal"
                self._to_storage = Transformer.from_crs(horizontal, storage, always_xy=True)
        if self._to_ellipsoid is not None:
            self._to_storage = Transformer.from_crs("EPSG:4326", storage, always_xy=True)
        if height_datum is not None and height_datum not in HEIGHT_DATUMS:
            raise GeorefError(f"--height-datum {height_datum!r}: one of {', '.join(HEIGHT_DATUMS)}")
        self.height_datum = height_datum or natural

    def __call__(self, local: np.ndarray) -> np.ndarray:
        p = np.asarray(local, dtype=np.float64).reshape(-1, 3) + self.origin
        if len(p) == 0:
            return np.empty((0, 3))
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        if self._to_ellipsoid is not None:
            x, y, z = (np.asarray(v, np.float64) for v in self._to_ellipsoid.transform(x, y, z))
        assert self._to_storage is not None
        e, n = crs_mod.transform_arrays(self._to_storage, x, y)
        out = np.column_stack(
            [np.asarray(e, np.float64), np.asarray(n, np.float64), self._heights(e, n, z)]
        )
        if not np.all(np.isfinite(out)):
            raise GeorefError("the SRS gave non-finite storage coordinates (wrong SRS or origin?)")
        return out

    def _heights(self, e: np.ndarray, n: np.ndarray, z: np.ndarray) -> np.ndarray:
        if self.height_datum == "1985":
            return np.asarray(z, np.float64)
        from cimtwin.tiles.threed.placement import Placement, geoid_undulation

        placement = Placement()
        if self.height_datum == "geoid":
            return np.asarray(z, np.float64) - placement.offset
        lon, lat = placement.lonlat(np.asarray(e), np.asarray(n))
        return (
            np.asarray(z, np.float64)
            - placement.offset
            - geoid_undulation(lon, lat, placement.grid)
        )

"""GeoJSON and CRS helpers for the OGC API - Features endpoints.

Coordinates follow OGC API - Features Part 2: CRS84 is (longitude, latitude); any other CRS
uses the axis order of its EPSG definition, which for EPSG:4490 is (latitude, longitude) and for
the CGCS2000 Gauss-Kruger grids (EPSG:4547 ...) is (northing X, easting Y). Inside the service
everything is (easting, northing); the swap happens at the edge: on parameters when they are
read, and in SQL (``ST_FlipCoordinates``) on output geometries.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from psycopg import sql
from pyproj import CRS

from cimtwin.spatial.base import SRID

GEOJSON = "application/geo+json"
JSON = "application/json"

CRS84_URI = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG_URI = "http://www.opengis.net/def/crs/EPSG/0/{}"

#: degrees added around the storage CRS's area of use before a geographic geometry is
#: transformed into it (a transverse Mercator grid cannot take the whole globe)
AREA_OF_USE_MARGIN_DEG = 5.0


@dataclass(frozen=True)
class CrsDef:
    """A CRS the API accepts and serves."""

    uri: str
    label: str  # EPSG:4490, OGC:CRS84
    srid: int  # PostGIS SRID of the same CRS in (easting, northing) order
    geographic: bool
    north_first: bool  # the authority axis order starts with latitude / northing

    @property
    def decimals(self) -> int:
        """Output precision: 7 decimals of a degree (~1 cm), 3 of a metre (1 mm)."""
        return 7 if self.geographic else 3

    @property
    def header(self) -> str:
        """Value of the ``Content-Crs`` response header."""
        return f"<{self.uri}>"

    def to_xy(self, a: float, b: float) -> tuple[float, float]:
        """A coordinate pair in this CRS's axis order, as (easting, northing)."""
        return (b, a) if self.north_first else (a, b)


def _epsg_def(code: int) -> CrsDef:
    crs = CRS.from_epsg(code)
    first = crs.axis_info[0].direction.lower() if crs.axis_info else "east"
    return CrsDef(
        EPSG_URI.format(code), f"EPSG:{code}", code, crs.is_geographic, first in ("north", "south")
    )


@lru_cache
def supported_crs() -> tuple[CrsDef, ...]:
    """CRS84 (the default), CGCS2000 geographic and the storage CRS."""
    crs84 = CrsDef(CRS84_URI, "OGC:CRS84", 4326, True, False)
    out = [crs84, _epsg_def(4490)]
    if SRID not in (4326, 4490):
        out.append(_epsg_def(SRID))
    return tuple(out)


def default_crs() -> CrsDef:
    return supported_crs()[0]


def storage_crs_def() -> CrsDef:
    return next(c for c in supported_crs() if c.srid == SRID)


@lru_cache
def storage_window() -> tuple[float, float, float, float]:
    """Longitude/latitude window in which geographic geometries are transformed to storage."""
    aou = CRS.from_epsg(SRID).area_of_use
    if aou is None:  # pragma: no cover - every EPSG projected CRS declares one
        return (-180.0, -90.0, 180.0, 90.0)
    m = AREA_OF_USE_MARGIN_DEG
    return (
        max(-180.0, aou.west - m),
        max(-90.0, aou.south - m),
        min(180.0, aou.east + m),
        min(90.0, aou.north + m),
    )


def check_coordinates(xs: list[float], ys: list[float], crs: CrsDef, what: str) -> None:
    """Finite coordinates, within -180..180 / -90..90 for geographic CRS (x = easting)."""
    for v in (*xs, *ys):
        if not math.isfinite(v):
            raise ValueError(f"{what}: coordinates must be finite numbers")
    if crs.geographic:
        if any(abs(x) > 180 for x in xs):
            raise ValueError(f"{what}: longitude outside -180..180")
        if any(abs(y) > 90 for y in ys):
            raise ValueError(f"{what}: latitude outside -90..90")
    elif any(abs(v) > 1e9 for v in (*xs, *ys)):
        raise ValueError(f"{what}: coordinates out of range for {crs.label}")


def literal_geometry_sql(
    wkt: str, bounds: tuple[float, float, float, float], crs: CrsDef
) -> tuple[sql.Composable, list[Any]]:
    """SQL for a user geometry (WKT in (easting, northing) order of ``crs``) in the storage CRS.

    The transform is applied to the literal, never to the stored column, so the GiST index on
    the column still serves the predicate. Geographic geometries are clipped to the area around
    the storage CRS and densified first, so that their edges bend as they do on the ground.
    """
    params: list[Any] = [wkt]
    geom: sql.Composable = sql.SQL("ST_GeomFromText({}, {})").format(
        sql.Placeholder(), sql.Literal(crs.srid)
    )
    if crs.srid == SRID:
        return geom, params
    if crs.geographic:
        wx0, wy0, wx1, wy1 = storage_window()
        x0, y0, x1, y1 = bounds
        if x0 < wx0 or y0 < wy0 or x1 > wx1 or y1 > wy1:
            geom = sql.SQL("ST_Intersection({}, ST_MakeEnvelope({}, {}, {}, {}, {}))").format(
                geom, *(sql.Placeholder() for _ in range(4)), sql.Literal(crs.srid)
            )
            params += [wx0, wy0, wx1, wy1]
            x0, y0, x1, y1 = max(x0, wx0), max(y0, wy0), min(x1, wx1), min(y1, wy1)
        size = max(x1 - x0, y1 - y0, 0.0)
        geom = sql.SQL("ST_Segmentize({}, {})").format(geom, sql.Placeholder())
        params.append(max(size / 64.0, 1e-5))
    return sql.SQL("ST_Transform({}, {})").format(geom, sql.Literal(SRID)), params


def format_coord(v: float) -> str:
    """A coordinate for WKT: shortest round-trip digits, never exponent notation."""
    text = repr(float(v))
    if "e" in text or "E" in text:
        text = f"{v:.12f}".rstrip("0").rstrip(".")
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text in ("-0", "") else text


def bbox_wkt(x0: float, y0: float, x1: float, y1: float) -> str:
    a, b, c, d = (format_coord(v) for v in (x0, y0, x1, y1))
    return f"POLYGON(({a} {b},{c} {b},{c} {d},{a} {d},{a} {b}))"


def parse_bbox(text: str, crs: CrsDef) -> tuple[float, float, float, float]:
    """``bbox``: 4 (or 6, with heights) numbers in the axis order of ``crs``; returns
    (min easting, min northing, max easting, max northing)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (4, 6):
        raise ValueError(
            f"bbox: expected 4 comma-separated numbers (or 6 with heights), got {len(parts)}"
        )
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"bbox: {text!r} is not a list of numbers") from None
    if len(nums) == 6:
        if nums[2] > nums[5]:
            raise ValueError("bbox: minimum height is greater than maximum height")
        nums = [nums[0], nums[1], nums[3], nums[4]]
    if nums[0] > nums[2] or nums[1] > nums[3]:
        raise ValueError(
            "bbox: each lower corner value must not exceed the upper corner's "
            "(lower-left first, upper-right second; boxes across the "
            "antimeridian are not supported)"
        )
    x0, y0 = crs.to_xy(nums[0], nums[1])
    x1, y1 = crs.to_xy(nums[2], nums[3])
    check_coordinates([x0, x1], [y0, y1], crs, "bbox")
    return x0, y0, x1, y1


def geometry_output_sql(column: sql.Composable, crs: CrsDef) -> sql.Composable:
    """``ST_AsGeoJSON`` of a stored geometry in ``crs``, its axis order and precision."""
    expr = column
    if crs.srid != SRID:
        expr = sql.SQL("ST_Transform({}, {})").format(expr, sql.Literal(crs.srid))
    if crs.north_first:
        expr = sql.SQL("ST_FlipCoordinates({})").format(expr)
    # options 0: no "crs" member (RFC 7946; the CRS travels in the Content-Crs header)
    return sql.SQL("ST_AsGeoJSON({}, {}, 0)").format(expr, sql.Literal(crs.decimals))


# --- datetime -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeRange:
    """A closed or half-open time range; ``None`` ends are unbounded."""

    start: datetime | None
    end: datetime | None
    end_inclusive: bool = True


#: the instants a ``datetime`` filter may name: a day inside what Python's datetime holds, so
#: that no time-zone offset (up to 14 h) and no whole-day end pushes a bound out of its range
FILTER_MIN = datetime(1, 1, 2, tzinfo=UTC)
FILTER_MAX = datetime(9999, 12, 31, tzinfo=UTC)


def _instant(text: str, what: str) -> tuple[datetime, datetime, bool]:
    """(start, end, end inclusive) of an RFC 3339 date-time or a full date (one whole day)."""
    t = text.strip()
    if len(t) == 10:
        try:
            d = date.fromisoformat(t)
        except ValueError:
            raise ValueError(f"{what}: {text!r} is not an RFC 3339 date or date-time") from None
        start = datetime(d.year, d.month, d.day, tzinfo=UTC)
        if start >= FILTER_MAX:  # the day would end past what a datetime holds
            raise _outside(text, what)
        end, inclusive = start + timedelta(days=1), False
    else:
        if "T" not in t.upper() or len(t) > 40:
            raise ValueError(
                f"{what}: {text[:40]!r} is not an RFC 3339 date-time (e.g. 2024-05-01T08:00:00Z)"
            )
        try:
            dt = datetime.fromisoformat(t[:-1] + "+00:00" if t[-1:] in "zZ" else t)
        except ValueError:
            raise ValueError(
                f"{what}: {text!r} is not an RFC 3339 date-time (e.g. 2024-05-01T08:00:00Z)"
            ) from None
        start = end = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
        inclusive = True
    if start < FILTER_MIN or end > FILTER_MAX:
        raise _outside(text, what)
    return start, end, inclusive


def _outside(text: str, what: str) -> ValueError:
    return ValueError(
        f"{what}: {text!r} is outside the range this API filters on, "
        f"{rfc3339(FILTER_MIN)} to {rfc3339(FILTER_MAX)}"
    )


def parse_datetime(text: str) -> TimeRange:
    """``datetime``: an instant, or an interval ``start/end`` with ``..`` (or empty) for open."""
    start: datetime | None
    end: datetime | None
    if "/" not in text:
        start, end, inclusive = _instant(text, "datetime")
        return TimeRange(start, end, inclusive)
    if text.count("/") != 1:
        raise ValueError(f"datetime: {text!r} is not an instant or a start/end interval")
    a, b = (p.strip() for p in text.split("/"))
    if a in ("", "..") and b in ("", ".."):
        raise ValueError("datetime: an interval needs at least one bounded end")
    start = None if a in ("", "..") else _instant(a, "datetime")[0]
    end, inclusive = None, True
    if b not in ("", ".."):
        _, end, inclusive = _instant(b, "datetime")
    if start is not None and end is not None and start > end:
        raise ValueError("datetime: interval start is after its end")
    return TimeRange(start, end, inclusive)


def rfc3339(value: datetime | str) -> str:
    """RFC 3339 in UTC; text is a stored value Python cannot hold, shown as PostgreSQL wrote
    it (see :func:`cimtwin.api.db.lenient_loader`)."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    except OverflowError:  # 9999-12-31T20:00-05:00 is in the year 10000 in UTC
        return value.isoformat()


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    try:  # Decimal and friends
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def dumps(value: Any) -> str:
    return json.dumps(
        value, ensure_ascii=False, default=json_default, allow_nan=False, separators=(",", ":")
    )


def feature_json(fid: Any, geometry: str | None, properties: dict[str, Any]) -> str:
    """One GeoJSON Feature; the geometry is already GeoJSON text from ``ST_AsGeoJSON``."""
    return (
        f'{{"type":"Feature","id":{dumps(fid)},"geometry":{geometry or "null"},'
        f'"properties":{dumps(_finite(properties))}}}'
    )


def _finite(props: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities are not JSON: they become null."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in props.items()
    }

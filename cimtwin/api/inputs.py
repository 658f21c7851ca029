"""Request inputs, the one home of what the routers take: input CRS and coordinate checks,
GeoJSON geometries (bounded in vertices), bounding boxes, bounded bodies, strict body models,
and checks every request gets (NUL characters, which PostgreSQL refuses in text).

Coordinates are always (x, y): longitude, latitude in CRS84 and EPSG:4490, easting,
northing in the storage CRS; each request names its CRS.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import shapely
from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pyproj import CRS

from cimtwin.api.errors import invalid
from cimtwin.api.geojson import CrsDef, storage_window, supported_crs
from cimtwin.spatial import crs as crs_mod
from cimtwin.spatial.base import SRID

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_RINGS = 500

Finite = Annotated[float, Field(allow_inf_nan=False)]
Position = Annotated[
    list[Finite],
    Field(min_length=2, max_length=3, description="x, y[, z]: lon, lat or east, north"),
]

NUL_ESCAPE = b"\\u0000"


def shown(text: str, limit: int = 40) -> str:
    """``repr`` of a client's value for an error message, cut short: an error must not echo
    a 5 000-digit number or a megabyte of text back."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def nul_paths(value: Any, path: str = "") -> list[str]:
    """Where in parsed JSON a key or a string holds a NUL character (dotted paths)."""
    found: list[str] = []
    if isinstance(value, str):
        if "\x00" in value:
            found.append(path or "body")
    elif isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if "\x00" in str(k):
                found.append(here.replace("\x00", "\\u0000"))
            found += nul_paths(v, here)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += nul_paths(v, f"{path}.{i}" if path else str(i))
    return found


def _nul_error(names: list[str]) -> HTTPException:
    shown_names = ", ".join(dict.fromkeys(names[:10]))
    return invalid(
        f"{shown_names}: NUL characters (\\u0000) are not allowed in text "
        "(PostgreSQL cannot store them)"
    )


async def no_nul_characters(request: Request) -> None:
    """App-wide dependency: 422 naming the parameter or body field that holds a NUL
    character, before any of them reaches PostgreSQL (which refuses NUL in text).

    Bodies are looked at only when the route takes a JSON model (FastAPI has read them
    already, so this costs no second read); ``/grids/assign`` streams its own body and stores
    none of it."""
    bad = [k for k, v in request.path_params.items() if "\x00" in str(v)]
    if b"%00" in request.scope.get("query_string", b""):
        bad += [k for k, v in request.query_params.multi_items() if "\x00" in k + v]
    if bad:
        raise _nul_error([b.replace("\x00", "\\u0000") for b in bad])
    route = request.scope.get("route")
    if getattr(route, "body_field", None) is None:
        return
    body = await request.body()
    if NUL_ESCAPE not in body:
        return
    try:
        parsed = json.loads(body)
    except ValueError:
        return  # not JSON: the route's own validation answers
    if found := nul_paths(parsed):
        raise _nul_error(found)


# --- request bodies -----------------------------------------------------------------------

#: positions (vertices) one polygon, multipolygon or line of a request may have
MAX_VERTICES = 10_000
_KEYS: dict[type, frozenset[str]] = {}


def _known_keys(model: type[BaseModel]) -> frozenset[str]:
    keys = _KEYS.get(model)
    if keys is None:
        names = set(model.model_fields)
        names |= {f.alias for f in model.model_fields.values() if f.alias}
        keys = _KEYS[model] = frozenset(names)
    return keys


class StrictBody(BaseModel):
    """Base of every JSON body model: unknown keys are refused with one error naming the
    first few, before any field is validated. (``extra="forbid"`` alone makes pydantic build
    an error per key: a body of 80 000 stray keys cost half a second of the event loop.)"""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = _known_keys(cls)
            unknown = data.keys() - known
            if unknown:
                first = [shown(str(k)) for k in data if k in unknown][:5]
                more = f" ({len(unknown)} in all)" if len(unknown) > len(first) else ""
                raise ValueError(
                    f"unknown field(s) {', '.join(first)}{more}; "
                    f"the fields here are {', '.join(sorted(known))}"
                )
        return data


def count_positions(coordinates: Any, depth: int) -> int:
    """Positions in GeoJSON ``coordinates`` nested ``depth`` lists above the positions
    (1: a line, 2: a polygon, 3: a multipolygon), without looking into them; what is not a
    list counts as nothing (the model's own validation says what is wrong with it)."""
    if not isinstance(coordinates, list):
        return 0
    if depth <= 1:
        return len(coordinates)
    return sum(count_positions(c, depth - 1) for c in coordinates)


def check_vertex_count(coordinates: Any, depth: int, what: str) -> None:
    """ValueError naming :data:`MAX_VERTICES` when a geometry has more positions."""
    n = count_positions(coordinates, depth)
    if n > MAX_VERTICES:
        raise ValueError(
            f"{what} has {n} positions: at most {MAX_VERTICES} (vertices) per request geometry"
        )


# --- CRS and coordinates ---------------------------------------------------------------------


@dataclass(frozen=True)
class InputCrs:
    """A CRS for input coordinates, always given in (x, y) = (lon, lat) / (east, north) order."""

    label: str
    source: str  # for pyproj
    geographic: bool

    @property
    def is_storage(self) -> bool:
        return self.source == f"EPSG:{SRID}"


CRS84_NAMES = {
    "crs84",
    "ogc:crs84",
    "http://www.opengis.net/def/crs/ogc/1.3/crs84",
    "https://www.opengis.net/def/crs/ogc/1.3/crs84",
    "urn:ogc:def:crs:ogc:1.3:crs84",
    "urn:ogc:def:crs:ogc::crs84",
}
_EPSG = re.compile(
    r"(?:epsg:|urn:ogc:def:crs:epsg::|https?://www\.opengis\.net/def/crs/epsg/0/)"
    r"(\d{4,6})"
)


def crs_name(text: str) -> str | None:
    """The one reading of a CRS parameter: 'OGC:CRS84' or 'EPSG:<code>' from a label, a safe
    CURIE ``[EPSG:4490]``, an OGC URI or URN (any case); None when it names no CRS."""
    key = text.strip().lower()
    if key.startswith("[") and key.endswith("]"):
        key = key[1:-1]
    if key in CRS84_NAMES:
        return "OGC:CRS84"
    m = _EPSG.fullmatch(key)
    return f"EPSG:{m.group(1)}" if m else None


@lru_cache(maxsize=64)
def input_crs(text: str) -> InputCrs:
    """'OGC:CRS84' (default for lon/lat), 'EPSG:4326', 'EPSG:4490', 'EPSG:4547', any 2D EPSG
    CRS, or their OGC URIs, for coordinates in request bodies; ValueError with the accepted
    forms otherwise."""
    name = crs_name(text)
    if name is None:
        raise ValueError(
            f"crs: {text!r} is not a CRS this API takes; use OGC:CRS84, "
            f"EPSG:4490, EPSG:{SRID} (or another EPSG code), or its OGC URI"
        )
    if name == "OGC:CRS84":
        return InputCrs(name, name, True)
    try:
        crs = crs_mod.parse_crs(name, "crs")
    except ValueError:
        raise ValueError(f"crs: {name} is not a known EPSG CRS") from None
    if not (crs.is_geographic or crs.is_projected) or len(crs.axis_info) != 2:
        raise ValueError(f"crs: {name} ({crs.name}) is not a 2D geographic or projected CRS")
    return InputCrs(name, name, crs.is_geographic)


def parse_crs(text: str, param: str) -> CrsDef:
    """One of the CRS the features API advertises (:func:`supported_crs`) for its ``crs``,
    ``bbox-crs`` and ``filter-crs`` parameters, named as :func:`crs_name` reads them."""
    name = crs_name(text)
    for c in supported_crs():
        if c.label == name:
            return c
    allowed = ", ".join(c.uri for c in supported_crs())
    raise ValueError(f"{param}: unsupported CRS {text!r}; supported: {allowed}")


def crs_or_422(text: str) -> InputCrs:
    try:
        return input_crs(text)
    except ValueError as exc:
        raise invalid(str(exc)) from None


@lru_cache
def storage_bounds() -> tuple[float, float, float, float]:
    """The storage CRS's area of use in its own metres, padded by 2 %."""
    x0, y0, x1, y1 = crs_mod.projected_bounds(f"EPSG:{SRID}")
    px, py = (x1 - x0) * 0.02, (y1 - y0) * 0.02
    return x0 - px, y0 - py, x1 + px, y1 + py


def check_positions(x: np.ndarray, y: np.ndarray, crs: InputCrs, what: str = "row") -> None:
    """422 naming the first offending positions: not finite, out of range or implausible."""
    bad = ~(np.isfinite(x) & np.isfinite(y))
    if bad.any():
        raise invalid(f"{_rows(bad, what)}: coordinates missing or not numbers")
    if crs.geographic:
        for mask, text in (
            (np.abs(x) > 180, "longitude outside -180..180"),
            (np.abs(y) > 90, "latitude outside -90..90"),
        ):
            if mask.any():
                raise invalid(f"{_rows(mask, what)}: {text}")
        return
    for _, mask, message in crs_mod.implausible_coordinates(x, y, CRS.from_user_input(crs.source)):
        raise invalid(f"{_rows(mask, what)}: {message}")


def _rows(mask: np.ndarray, what: str) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i + 1) for i in idx[:5])
    more = f" and {len(idx) - 5} more" if len(idx) > 5 else ""
    return f"{what}{'s' if len(idx) > 1 else ''} {shown}{more}"


def to_storage(x: np.ndarray, y: np.ndarray, crs: InputCrs) -> tuple[np.ndarray, np.ndarray]:
    if crs.is_storage:
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    sx, sy = crs_mod.transform_arrays(crs_mod.transformer(crs.source, SRID), x, y)
    return np.asarray(sx, dtype=float), np.asarray(sy, dtype=float)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``max_bytes``."""
    length = request.headers.get("content-length")
    too_big = HTTPException(
        413, f"request body larger than {max_bytes // 2**20} MiB; send fewer rows per request"
    )
    if length and length.isdigit() and int(length) > max_bytes:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


# --- GeoJSON geometries -----------------------------------------------------------------------


def _check_ring(ring: list[list[float]], where: str) -> None:
    if len(ring) < 4:
        raise ValueError(f"{where}: a linear ring needs at least 4 positions")
    if ring[0][:2] != ring[-1][:2]:
        raise ValueError(f"{where}: a linear ring must end where it starts")


class _Areal(StrictBody):
    """What Polygon and MultiPolygon share: the vertex bound, counted before the positions are
    parsed, and closed rings of at least 4 positions."""

    #: nesting of the positions in ``coordinates`` (2: rings, 3: polygons of rings)
    depth: ClassVar[int]
    noun: ClassVar[str]

    @field_validator("coordinates", mode="before", check_fields=False)
    @classmethod
    def bounded(cls, value: Any) -> Any:
        check_vertex_count(value, cls.depth, f"the {cls.noun}")
        return value

    @field_validator("coordinates", check_fields=False)
    @classmethod
    def rings(cls, value: list[Any]) -> list[Any]:
        polygons = value if cls.depth == 3 else [value]
        total = 0
        for i, poly in enumerate(polygons):
            for j, ring in enumerate(poly):
                _check_ring(ring, f"polygon {i} ring {j}" if cls.depth == 3 else f"ring {j}")
                total += len(ring)
        if total > MAX_VERTICES:
            raise ValueError(f"more than {MAX_VERTICES} positions")
        return value


class PolygonIn(_Areal):
    depth: ClassVar[int] = 2
    noun: ClassVar[str] = "polygon"

    type: Literal["Polygon"]
    coordinates: Annotated[
        list[Annotated[list[Position], Field(max_length=MAX_VERTICES)]],
        Field(min_length=1, max_length=MAX_RINGS),
    ]


class MultiPolygonIn(_Areal):
    depth: ClassVar[int] = 3
    noun: ClassVar[str] = "multipolygon"

    type: Literal["MultiPolygon"]
    coordinates: Annotated[
        list[Annotated[list[list[Position]], Field(min_length=1)]],
        Field(min_length=1, max_length=MAX_RINGS),
    ]


class PointIn(StrictBody):
    type: Literal["Point"]
    coordinates: Position


AreaGeometry = Annotated[PolygonIn | MultiPolygonIn, Field(discriminator="type")]


def check_xy(
    xs: np.ndarray,
    ys: np.ndarray,
    crs: InputCrs,
    what: str,
    lonlat_hint: str = "say crs OGC:CRS84",
) -> None:
    """ValueError unless the positions can be in ``crs`` and near the storage CRS's area; for
    storage-CRS positions it says when they look like lon/lat (``lonlat_hint``: how to give
    those) or swapped."""
    if crs.geographic:
        if (np.abs(xs) > 180).any() or (np.abs(ys) > 90).any():
            raise ValueError(
                f"{what}: longitude/latitude out of range: longitude must be within -180..180 "
                f"and latitude within -90..90 ({crs.label} positions are lon, lat; for "
                f'EPSG:{SRID} coordinates say so with "crs")'
            )
        w, s, e, n = storage_window()
        if (xs < w).any() or (xs > e).any() or (ys < s).any() or (ys > n).any():
            raise ValueError(
                f"{what}: outside the area this twin covers (lon {w:.1f}..{e:.1f}, "
                f"lat {s:.1f}..{n:.1f})"
            )
        return
    sx, sy = to_storage(xs, ys, crs)
    x0, y0, x1, y1 = storage_bounds()
    if (
        not (np.isfinite(sx).all() and np.isfinite(sy).all())
        or (sx < x0).any()
        or (sx > x1).any()
        or (sy < y0).any()
        or (sy > y1).any()
    ):
        hint = ""
        if crs.is_storage:
            hint = f" (x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f})"
            if ((x0 <= ys) & (ys <= x1) & (y0 <= xs) & (xs <= y1)).all():
                hint += " (x and y look swapped: x is the easting, y the northing)"
            elif (np.abs(xs) <= 180).all() and (np.abs(ys) <= 90).all():
                hint += f" (these look like lon/lat: {lonlat_hint})"
        raise ValueError(f"{what}: outside the area of {crs.label}{hint}")


def positions_to_storage(points: Any, crs: InputCrs, what: str) -> np.ndarray:
    """(k, 2) storage-CRS positions from (k, 2 or 3) positions in ``crs``, checked by
    :func:`check_xy` (ValueError says what is wrong)."""
    xy = np.asarray(points, dtype=float)[:, :2]
    check_xy(xy[:, 0], xy[:, 1], crs, what)
    return np.column_stack(to_storage(xy[:, 0], xy[:, 1], crs))


def geometry_to_storage(
    geom: shapely.Geometry, crs: InputCrs, what: str, kind: str = "geometry"
) -> shapely.Geometry:
    """A validated 2D shapely geometry in the storage CRS (ValueError says what is wrong,
    calling the geometry a ``kind``)."""
    geom = shapely.force_2d(geom)
    coords = shapely.get_coordinates(geom)
    check_xy(coords[:, 0], coords[:, 1], crs, what)
    if not shapely.is_valid(geom):
        raise ValueError(f"{what}: not a valid {kind} ({shapely.is_valid_reason(geom)})")
    if not crs.is_storage:
        if crs.geographic and geom.geom_type != "Point":
            x0, y0, x1, y1 = shapely.bounds(geom)
            geom = shapely.segmentize(geom, max(max(x1 - x0, y1 - y0) / 64.0, 1e-5))

        def fn(xy: np.ndarray) -> np.ndarray:
            sx, sy = to_storage(xy[:, 0], xy[:, 1], crs)
            return np.column_stack([sx, sy])

        geom = shapely.transform(geom, fn)
    if not shapely.is_valid(geom):
        raise ValueError(f"{what}: not a valid {kind} ({shapely.is_valid_reason(geom)})")
    return geom


# --- bounding boxes ---------------------------------------------------------------------------


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """'minx,miny,maxx,maxy' as four finite numbers with min < max."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise ValueError(
            f"expected 4 comma-separated numbers (minx,miny,maxx,maxy), got {len(parts)}"
        )
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not 4 numbers") from None
    if not all(v == v and abs(v) != float("inf") for v in (x0, y0, x1, y1)):
        raise ValueError("coordinates must be finite numbers")
    if x0 > x1 or y0 > y1:
        raise ValueError("minx must not exceed maxx, nor miny maxy")
    return x0, y0, x1, y1


class BBoxQuery(BaseModel):
    """``bbox`` in ``bbox_crs`` (CRS84 by default; (x, y) order), validated for range."""

    bbox: str | None = Field(
        None,
        max_length=200,
        description="minx,miny,maxx,maxy",
        examples=["114.02,22.605,114.03,22.612"],
    )
    bbox_crs: str = Field(
        "OGC:CRS84",
        max_length=200,
        description=f"CRS of bbox: OGC:CRS84, EPSG:4490, EPSG:{SRID} ...",
    )

    @field_validator("bbox")
    @classmethod
    def numbers(cls, value: str | None) -> str | None:
        if value is not None:
            parse_bbox(value)
        return value

    @field_validator("bbox_crs")
    @classmethod
    def known_crs(cls, value: str) -> str:
        input_crs(value)
        return value

    @model_validator(mode="after")
    def in_range(self) -> BBoxQuery:
        if self.bbox is not None:
            crs = input_crs(self.bbox_crs)
            x0, y0, x1, y1 = parse_bbox(self.bbox)
            check_xy(np.array([x0, x1]), np.array([y0, y1]), crs, "bbox")
        return self

    def storage_box(self) -> bytes | None:
        """The box as a polygon in the storage CRS (WKB), its edges densified when bent."""
        if self.bbox is None:
            return None
        geom = geometry_to_storage(
            shapely.box(*parse_bbox(self.bbox)), crs_or_422(self.bbox_crs), "bbox"
        )
        return shapely.to_wkb(geom)

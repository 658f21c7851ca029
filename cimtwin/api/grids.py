"""Work grids (单元网格): where a point is, what a grid holds, its features, and bulk
进格入块 (assigning street, community and grid codes to many positions at once).

    GET  /grids/locate?lon=&lat=        (or x=&y= in the storage CRS)
    GET  /grids/{code}                  summary of one grid
    GET  /grids/{code}/features?layer=  GeoJSON of one layer in the grid
    POST /grids/assign                  JSON rows or a CSV body in, the same rows with codes out
"""

from __future__ import annotations

import asyncio
import codecs
import io
import json
import math
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cimtwin.api.admission import BulkSlot
from cimtwin.api.answers import GridLocation, GridSummary, answer
from cimtwin.api.auth import require_read
from cimtwin.api.db import Conn
from cimtwin.api.errors import invalid
from cimtwin.api.geojson import JSON, dumps, feature_json
from cimtwin.api.inputs import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InputCrs,
    StrictBody,
    check_positions,
    check_xy,
    crs_or_422,
    input_crs,
    read_body,
    to_storage,
)
from cimtwin.api.responses import (
    FEATURE_COLLECTION,
    feature_collection,
    json_response,
    summary_cache,
)
from cimtwin.spatial import crs as crs_mod
from cimtwin.spatial.admin_queries import (
    GRID_LAYERS,
    GridLookup,
    grid_exists,
    grid_features,
    grid_lookup,
    grid_summary,
    locate,
)
from cimtwin.spatial.base import SRID

router = APIRouter(tags=["grids"], dependencies=[Depends(require_read)])

GridCode = Annotated[
    str, Path(pattern=r"^[0-9]{14,15}$", description="work-grid code: 14 or 15 digits")
]


# --- locate ---------------------------------------------------------------------------------


class LocateQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lon: float | None = Field(
        None,
        ge=-180,
        le=180,
        allow_inf_nan=False,
        description="longitude (CGCS2000/WGS 84), with lat",
    )
    lat: float | None = Field(
        None, ge=-90, le=90, allow_inf_nan=False, description="latitude, with lon"
    )
    x: float | None = Field(
        None, allow_inf_nan=False, description=f"easting in the storage CRS EPSG:{SRID}, with y"
    )
    y: float | None = Field(
        None, allow_inf_nan=False, description=f"northing in the storage CRS EPSG:{SRID}, with x"
    )

    @model_validator(mode="after")
    def one_pair(self) -> LocateQuery:
        geo = (self.lon is not None, self.lat is not None)
        xy = (self.x is not None, self.y is not None)
        if any(geo) and any(xy):
            raise ValueError("give either lon and lat or x and y, not both")
        if any(geo) and not all(geo):
            raise ValueError("lon and lat go together")
        if any(xy) and not all(xy):
            raise ValueError("x and y go together")
        if not any(geo) and not any(xy):
            raise ValueError(
                f"a position is needed: lon and lat, or x and y (EPSG:{SRID} easting and northing)"
            )
        if self.x is not None and self.y is not None:
            check_xy(
                np.array([self.x]),
                np.array([self.y]),
                input_crs(f"EPSG:{SRID}"),
                f"x={self.x}, y={self.y}",
                lonlat_hint="use lon= and lat=",
            )
        return self


@router.get(
    "/grids/locate",
    summary="Street, community and work grid at a position",
    responses={
        **answer(GridLocation, "the hierarchy at the position"),
        404: {"description": "the position is outside every work grid"},
    },
)
async def grids_locate(query: Annotated[LocateQuery, Query()], conn: Conn) -> Response:
    if query.lon is not None:
        assert query.lat is not None  # LocateQuery.one_pair: lon and lat go together
        x, y = crs_mod.lonlat_to_storage(query.lon, query.lat)
        lon, lat = query.lon, query.lat
    else:
        # LocateQuery.one_pair: without lon and lat, x and y are there
        assert query.x is not None and query.y is not None
        x, y = query.x, query.y
        lon, lat = crs_mod.storage_to_lonlat(x, y)
    where = (
        f"lon={query.lon}, lat={query.lat}"
        if query.lon is not None
        else f"x={query.x}, y={query.y}"
    )
    found = None
    if math.isfinite(x) and math.isfinite(y):
        found = await locate(conn, x, y)
    if found is None:
        raise HTTPException(404, f"{where} is outside every work grid")
    return json_response(
        {
            "position": {
                "lon": round(lon, 7),
                "lat": round(lat, 7),
                "x": round(x, 3),
                "y": round(y, 3),
                "storage_crs": f"EPSG:{SRID}",
            },
            **found,
        }
    )


# --- summary and features -------------------------------------------------------------------


@router.get(
    "/grids/{code}",
    summary="Summary of one work grid",
    responses=answer(GridSummary, "what the grid holds"),
)
async def grid(request: Request, code: GridCode, conn: Conn) -> Response:
    """Street, community, officer; buildings (count, floor area), residents, components by
    class, pipe length per network clipped to the grid, parcels by land use, open incidents.
    Everything but the incidents is cached per process until the next import."""
    summary = await grid_summary(conn, code, summary_cache(request))
    if summary is None:
        raise HTTPException(404, f"no work grid with code {code}")
    return json_response(summary)


@router.get(
    "/grids/{code}/features",
    summary="GeoJSON features of one layer in a work grid",
    responses={200: FEATURE_COLLECTION},
)
async def grid_layer_features(
    code: GridCode,
    conn: Conn,
    layer: Annotated[
        Literal[GRID_LAYERS],  # type: ignore[valid-type]  # the tuple of layer names
        Query(
            description="buildings, components, parcels, incidents: by their recorded grid; "
            "pipelines: every pipe that meets the grid"
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    if not await grid_exists(conn, code):
        raise HTTPException(404, f"no work grid with code {code}")
    lyr, found, matched = await grid_features(conn, code, layer, limit, offset)
    features = [
        feature_json(r[0], r[1], dict(zip(lyr.properties, r[2:], strict=True))) for r in found
    ]
    return feature_collection(features, {"grid": code, "layer": layer, "numberMatched": matched})


# --- 进格入块 -------------------------------------------------------------------------------


class AssignBody(StrictBody):
    """JSON form of POST /grids/assign."""

    rows: list[dict[str, Any]] = Field(
        ...,
        min_length=1,
        description="objects with the coordinate fields; every other field "
        "comes back unchanged, with street_code, community_code and grid_code added",
    )
    crs: str | None = Field(
        None,
        max_length=200,
        description="CRS of the coordinates; "
        f"default OGC:CRS84 for lon/lat fields, EPSG:{SRID} for x/y",
    )
    x_field: str | None = Field(None, min_length=1, max_length=64)
    y_field: str | None = Field(None, min_length=1, max_length=64)


class AssignOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    crs: str | None = Field(
        None,
        max_length=200,
        description=(
            f"CRS of the coordinates: OGC:CRS84 (default for lon/lat), EPSG:4490, EPSG:{SRID} "
            "(default for x/y) or another EPSG code; (x, y) order is (lon, lat) / (east, north)"
        ),
    )
    x_field: str | None = Field(
        None, min_length=1, max_length=64, description="column of the x (lon or easting)"
    )
    y_field: str | None = Field(
        None, min_length=1, max_length=64, description="column of the y (lat or northing)"
    )


ASSIGN_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": AssignBody.model_json_schema()},
            "text/csv": {
                "schema": {"type": "string"},
                "example": "id,lon,lat\n1,114.0291,22.6090\n",
            },
        },
    }
}
CODE_COLUMNS = ("street_code", "community_code", "grid_code")


def _fields(
    columns: list[str] | set[str], x_field: str | None, y_field: str | None, crs_text: str | None
) -> tuple[str, str, InputCrs]:
    """Coordinate fields and their CRS: explicit, else lon/lat (CRS84), else x/y (storage)."""
    crs = crs_or_422(crs_text) if crs_text else None
    if (x_field is None) != (y_field is None):
        raise invalid("x_field and y_field go together")
    if x_field is None or y_field is None:  # both are, by the check above
        if crs is not None:
            x_field, y_field = ("lon", "lat") if crs.geographic else ("x", "y")
        elif "lon" in columns and "lat" in columns:
            x_field, y_field = "lon", "lat"
        elif "x" in columns and "y" in columns:
            x_field, y_field = "x", "y"
        else:
            shown = ", ".join(list(columns)[:20]) or "none"
            raise invalid(
                f"no coordinate fields: expected lon and lat (or x and y with crs, "
                f"or x_field/y_field); fields found: {shown}"
            )
    if crs is None:
        crs = input_crs("OGC:CRS84") if x_field == "lon" else input_crs(f"EPSG:{SRID}")
    missing = [f for f in (x_field, y_field) if f not in columns]
    if missing:
        raise invalid(f"coordinate field(s) {', '.join(missing)} not in the rows")
    return x_field, y_field, crs


def _json_numbers(rows: list[dict[str, Any]], field: str) -> np.ndarray:
    out = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        v = r.get(field)
        if type(v) is int or type(v) is float:
            out[i] = v
    return out


#: rows serialised (JSON) or read and written (CSV) at a time: an answer is never held whole
CHUNK_ROWS = 10_000


def _assign_json(lookup: GridLookup, body: bytes, query: AssignOptions, max_rows: int) -> Response:
    text = body.lstrip()
    if text[:1] == b"[":  # a bare array of rows
        body = b'{"rows":' + body + b"}"
    req = AssignBody.model_validate_json(body)
    del body, text  # the rows are parsed: the bytes are not needed any more
    if len(req.rows) > max_rows:
        raise HTTPException(413, f"{len(req.rows)} rows: at most {max_rows} per request")
    columns = set(req.rows[0])
    if req.x_field and req.x_field not in columns:
        columns |= {k for r in req.rows[:1000] for k in r}
    xf, yf, crs = _fields(
        columns, req.x_field or query.x_field, req.y_field or query.y_field, req.crs or query.crs
    )
    x, y = _json_numbers(req.rows, xf), _json_numbers(req.rows, yf)
    check_positions(x, y, crs)
    streets, communities, grids = lookup.assign(*to_storage(x, y, crs))
    outside = int(sum(g is None for g in grids))
    head = dumps(
        {"crs": crs.label, "x_field": xf, "y_field": yf, "count": len(req.rows), "outside": outside}
    )
    rows = req.rows

    def chunks() -> Iterator[bytes]:
        """The answer a chunk of rows at a time, each row given its codes in place (no copy)."""
        yield (head[:-1] + ',"rows":[').encode()
        for start in range(0, len(rows), CHUNK_ROWS):
            part = rows[start : start + CHUNK_ROWS]
            for r, s, c, g in zip(
                part,
                streets[start : start + CHUNK_ROWS],
                communities[start : start + CHUNK_ROWS],
                grids[start : start + CHUNK_ROWS],
                strict=True,
            ):
                r["street_code"], r["community_code"], r["grid_code"] = s, c, g
            text = dumps(part)[1:-1]
            yield (("," if start else "") + text).encode()
        yield b"]}"

    return StreamingResponse(
        chunks(), media_type=JSON, headers={"X-Rows-Outside-Grids": str(outside)}
    )


def _assign_csv(
    lookup: GridLookup, body: bytes, charset: str, query: AssignOptions, max_rows: int
) -> Response:
    """Two passes over the CSV: the coordinate columns (checked and assigned before anything
    is answered), then the rows a chunk at a time, written out with their codes."""

    def read(**options: Any) -> Any:
        return pd.read_csv(
            io.BytesIO(body), dtype=str, keep_default_na=False, encoding=charset, **options
        )

    try:
        columns = [str(c) for c in read(nrows=0).columns]
        xf, yf, crs = _fields(columns, query.x_field, query.y_field, query.crs)
        coords = read(usecols=[xf, yf], nrows=max_rows + 1)
    except UnicodeError:
        raise invalid(
            f"CSV is not {charset}: say the encoding in the Content-Type, e.g. "
            "'text/csv; charset=gbk'"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, LookupError) as exc:
        raise invalid(f"CSV could not be read: {exc}") from None
    if coords.empty:
        raise invalid("CSV has a header but no rows")
    if len(coords) > max_rows:
        raise HTTPException(413, f"more than {max_rows} rows: at most {max_rows} per request")
    x = pd.to_numeric(coords[xf].str.strip(), errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(coords[yf].str.strip(), errors="coerce").to_numpy(dtype=float)
    del coords
    check_positions(x, y, crs)
    streets, communities, grids = lookup.assign(*to_storage(x, y, crs))
    outside = int(pd.isna(pd.Series(grids, dtype=object)).sum())

    def chunks() -> Iterator[bytes]:
        start = 0
        for frame in read(chunksize=CHUNK_ROWS):
            end = start + len(frame)
            frame = frame.assign(
                street_code=streets[start:end],
                community_code=communities[start:end],
                grid_code=grids[start:end],
            )
            yield frame.to_csv(index=False, header=start == 0, lineterminator="\n").encode()
            start = end

    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"X-Rows-Outside-Grids": str(outside), "X-Coordinate-Crs": crs.label},
    )


#: a CSV charset must read ASCII as ASCII: punycode, idna, the UTF-7 and escape codecs and
#: the bytes-to-bytes ones (base64, zlib ...) do not; UTF-16 and UTF-32 are text all the same
ASCII_PROBE = 'id,lon,lat\r\n"a b";-.:0123456789\t'
NOT_FOR_CSV = ("idna", "punycode", "utf-7", "unicode-escape", "raw-unicode-escape", "undefined")


def body_charset(content_type: str, media: str) -> str:
    """The Python codec for the ``charset`` of a body's Content-Type (default UTF-8, with or
    without a BOM); 415 naming a charset that is unknown or cannot hold a CSV; JSON is
    UTF-8 only (RFC 8259)."""
    given = None
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            given = value.strip().strip('"').strip()
    if given is None:
        return "utf-8-sig"
    refused = HTTPException(
        415,
        f"charset {given[:40]!r} is not supported for {media}: send "
        + (
            "utf-8"
            if media == "application/json"
            else "utf-8, gbk, gb18030, big5, utf-16 or another text encoding"
        ),
    )
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,40}", given):
        raise refused
    try:
        info = codecs.lookup(given)
    except LookupError:
        raise refused from None
    name = info.name.replace("_", "-")
    if name in ("utf-8", "utf-8-sig"):
        return "utf-8-sig"
    if media == "application/json" or name in NOT_FOR_CSV:
        raise refused
    if not name.startswith(("utf-16", "utf-32")):
        try:
            ascii_ok = ASCII_PROBE.encode(info.name) == ASCII_PROBE.encode("ascii")
        except (LookupError, UnicodeError, TypeError):
            ascii_ok = False
        if not ascii_ok:
            raise refused
    return info.name


@router.post(
    "/grids/assign",
    summary="进格入块: street, community and grid codes for many positions",
    openapi_extra=ASSIGN_OPENAPI,
    responses={
        200: {"content": {"application/json": {}, "text/csv": {}}},
        413: {"description": "body or row count over the limit"},
        415: {"description": "a Content-Type other than JSON or CSV, or an unusable charset"},
    },
)
async def grids_assign(
    request: Request, options: Annotated[AssignOptions, Query()], _: BulkSlot, conn: Conn
) -> Response:
    """Rows in (JSON ``{"rows": [...]}`` or a bare array, or a ``text/csv`` body with a header
    line), the same rows out in the same format with ``street_code``, ``community_code`` and
    ``grid_code`` added (empty outside every grid). Coordinates: ``lon``/``lat`` by default,
    or ``x``/``y`` (storage CRS unless ``crs`` says otherwise), or named by ``x_field`` and
    ``y_field``."""
    settings = request.app.state.settings
    max_rows, max_bytes = settings.assign_max_rows, settings.assign_max_body_mb * 2**20
    ctype = request.headers.get("content-type", "application/json")
    media = ctype.split(";")[0].strip().lower()
    if media not in ("application/json", "text/csv"):
        raise HTTPException(415, f"Content-Type {media!r}: send application/json or text/csv")
    charset = body_charset(ctype, media)
    body = await read_body(request, max_bytes)
    if not body.strip():
        raise invalid("empty body: send JSON rows or a CSV with a header line")
    lookup = await grid_lookup(request.app.state, conn)
    if media == "text/csv":
        return await asyncio.to_thread(_assign_csv, lookup, body, charset, options, max_rows)
    try:
        return await asyncio.to_thread(_assign_json, lookup, body, options, max_rows)
    except json.JSONDecodeError as exc:  # pragma: no cover - pydantic reports JSON errors
        raise invalid(f"body is not JSON: {exc}") from None

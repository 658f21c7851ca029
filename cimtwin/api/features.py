"""OGC API - Features: Part 1 (Core, GeoJSON, OpenAPI 3.0), Part 2 (CRS by reference) and
Part 3 (filtering with a CQL2-text subset) over the layer catalogue.

The catalogue (:mod:`cimtwin.spatial.catalogue`) is the allow-list: collections, tables,
columns and properties come only from it and reach SQL as ``psycopg.sql.Identifier``; every
user value travels as a query parameter. Bad input is answered with 400 and an OGC exception
body ``{"code": ..., "description": ...}`` naming the parameter; unknown collections and
features with 404.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from psycopg import AsyncConnection, sql

from cimtwin.api import cql2
from cimtwin.api.auth import require_read
from cimtwin.api.db import connection
from cimtwin.api.geojson import (
    GEOJSON,
    JSON,
    CrsDef,
    bbox_wkt,
    default_crs,
    dumps,
    feature_json,
    geometry_output_sql,
    literal_geometry_sql,
    parse_bbox,
    parse_crs,
    parse_datetime,
    rfc3339,
    storage_crs_def,
    supported_crs,
)
from cimtwin.api.inputs import shown
from cimtwin.spatial.catalogue import COLLECTIONS, Layer, get_collection
from cimtwin.spatial.layer_extent import extent_cache, layer_extent, rounded_outward

SCHEMA_JSON = "application/schema+json"
OPENAPI_30 = "application/vnd.oai.openapi+json;version=3.0"
OPENAPI_31 = "application/vnd.oai.openapi+json;version=3.1"

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_OFFSET = 2**62

CONFORMANCE = (
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
)

#: query parameters of /items besides the per-property equality filters
ITEMS_PARAMS = (
    "limit",
    "offset",
    "bbox",
    "bbox-crs",
    "datetime",
    "crs",
    "filter",
    "filter-lang",
    "filter-crs",
    "sortby",
    "f",
)
ITEM_PARAMS = ("crs", "f")
JSON_FORMATS = ("json", "geojson", "application/json", "application/geo+json")


# --- errors ---------------------------------------------------------------------------------


class ApiError(Exception):
    """An OGC API exception: HTTP status, code and a description for the client."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status, self.code, self.description = status, code, description

    def response(self) -> Response:
        body = dumps({"code": self.code, "description": self.description})
        return Response(body, status_code=self.status, media_type=JSON)


def bad_request(description: str) -> ApiError:
    return ApiError(400, "InvalidParameterValue", description)


def not_found(description: str) -> ApiError:
    return ApiError(404, "NotFound", description)


router = APIRouter(tags=["OGC API - Features"], dependencies=[Depends(require_read)])


def _json(
    body: Any, media_type: str = JSON, headers: dict[str, str] | None = None, status: int = 200
) -> Response:
    return Response(dumps(body), status_code=status, media_type=media_type, headers=headers)


def _layer(collection_id: str) -> Layer:
    layer = get_collection(collection_id)
    if layer is None:
        raise not_found(
            f"collection {collection_id!r} does not exist; see /collections "
            f"({', '.join(x.id for x in COLLECTIONS)})"
        )
    return layer


def _base(request: Request) -> str:
    return str(request.base_url)


def _check_params(
    request: Request,
    allowed: tuple[str, ...],
    extra: tuple[str, ...] = (),
) -> None:
    """400 for unknown or repeated query parameters, and for formats other than JSON."""
    counts = Counter(k for k, _ in request.query_params.multi_items())
    unknown = sorted(k for k in counts if k not in allowed and k not in extra)
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        more = f"; or a property: {', '.join(extra)}" if extra else ""
        raise bad_request(
            f"unknown query parameter(s) {names}; allowed: {', '.join(allowed)}{more}"
        )
    repeated = sorted(k for k in allowed if counts[k] > 1)
    if repeated:
        raise bad_request(f"query parameter(s) given more than once: {', '.join(repeated)}")
    f = request.query_params.get("f")
    if f is not None and f.lower() not in JSON_FORMATS:
        raise bad_request(f"f: unsupported format {f!r}; this API answers in JSON (f=json)")


# --- landing page, conformance, OpenAPI -----------------------------------------------------


@router.get("/", summary="Landing page")
async def landing_page(request: Request) -> Response:
    _check_params(request, ("f",))
    base = _base(request)
    return _json(
        {
            "title": "cimtwin: city information model features",
            "description": "OGC API - Features for the CIM / digital-twin layers: work grids, "
            "parcels, buildings, pipelines, city components, incidents.",
            "links": [
                {"href": base, "rel": "self", "type": JSON, "title": "This document"},
                {
                    "href": f"{base}api",
                    "rel": "service-desc",
                    "type": OPENAPI_30,
                    "title": "API definition (OpenAPI 3.0)",
                },
                {
                    "href": f"{base}openapi.json",
                    "rel": "service-desc",
                    "type": OPENAPI_31,
                    "title": "API definition (OpenAPI 3.1, as generated)",
                },
                {
                    "href": f"{base}docs",
                    "rel": "service-doc",
                    "type": "text/html",
                    "title": "API documentation",
                },
                {
                    "href": f"{base}conformance",
                    "rel": "conformance",
                    "type": JSON,
                    "title": "Conformance classes",
                },
                {
                    "href": f"{base}collections",
                    "rel": "data",
                    "type": JSON,
                    "title": "Feature collections",
                },
            ],
        }
    )


@router.get("/conformance", summary="Conformance classes implemented")
async def conformance(request: Request) -> Response:
    _check_params(request, ("f",))
    return _json({"conformsTo": list(CONFORMANCE)})


@router.get("/api", summary="API definition (OpenAPI 3.0)", include_in_schema=False)
async def api_definition(request: Request) -> Response:
    _check_params(request, ("f",))
    return _json(openapi_30(request.app.openapi()), media_type=OPENAPI_30)


def openapi_30(doc: dict[str, Any]) -> dict[str, Any]:
    """The app's OpenAPI 3.1 document rewritten as 3.0 (nullable, single types, example)."""

    def fix(node: Any) -> Any:
        if isinstance(node, list):
            return [fix(x) for x in node]
        if not isinstance(node, dict):
            return node
        out = {k: fix(v) for k, v in node.items()}
        for key in ("anyOf", "oneOf"):
            options = out.get(key)
            if isinstance(options, list) and {"type": "null"} in options:
                rest = [o for o in options if o != {"type": "null"}]
                out.pop(key)
                if len(rest) == 1 and isinstance(rest[0], dict):
                    merged = {**rest[0], **out}
                    out = merged
                else:
                    out[key] = rest
                out["nullable"] = True
        if isinstance(out.get("type"), list):
            types = [t for t in out["type"] if t != "null"]
            if len(types) < len(out["type"]):
                out["nullable"] = True
            out["type"] = types[0] if len(types) == 1 else "string"
        if "const" in out:
            out["enum"] = [out.pop("const")]
        if isinstance(out.get("examples"), list) and "in" not in out:
            examples = out.pop("examples")
            if examples:
                out["example"] = examples[0]
        for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if isinstance(out.get(bound), int | float) and not isinstance(out[bound], bool):
                out[plain] = out[bound]
                out[bound] = True
        out.pop("$schema", None)
        return out

    converted = fix(copy.deepcopy(doc))
    converted["openapi"] = "3.0.3"
    converted.pop("webhooks", None)
    converted.pop("jsonSchemaDialect", None)
    return converted


# --- collections ----------------------------------------------------------------------------


def _crs_list() -> list[str]:
    return [c.uri for c in supported_crs()]


async def _extent(request: Request, conn: AsyncConnection, layer: Layer) -> dict[str, Any]:
    """Spatial extent in CRS84 (and temporal where the layer has time), cached briefly."""
    found = await layer_extent(conn, layer, extent_cache(request.app.state))
    extent: dict[str, Any] = {}
    if found.lonlat is not None:
        extent["spatial"] = {
            "bbox": [rounded_outward(found.lonlat)],
            "crs": default_crs().uri,
        }
    if found.interval is not None:
        lo, hi = found.interval
        extent["temporal"] = {
            "interval": [[rfc3339(lo) if lo else None, rfc3339(hi) if hi else None]],
            "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian",
        }
    return extent


async def _collection(request: Request, conn: AsyncConnection, layer: Layer) -> dict[str, Any]:
    base = f"{_base(request)}collections/{layer.id}"
    doc: dict[str, Any] = {
        "id": layer.id,
        "title": layer.title,
        "description": layer.description,
        "itemType": "feature",
        "crs": _crs_list(),
        "storageCrs": storage_crs_def().uri,
        "extent": await _extent(request, conn, layer),
        "links": [
            {"href": base, "rel": "self", "type": JSON, "title": layer.title},
            {
                "href": f"{base}/items",
                "rel": "items",
                "type": GEOJSON,
                "title": f"{layer.title}: features",
            },
            {
                "href": f"{base}/queryables",
                "rel": "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                "type": SCHEMA_JSON,
                "title": "Queryable properties",
            },
        ],
    }
    if layer.keywords:
        doc["keywords"] = list(layer.keywords)
    return doc


@router.get("/collections", summary="Feature collections")
async def collections(
    request: Request, conn: Annotated[AsyncConnection, Depends(connection)]
) -> Response:
    _check_params(request, ("f",))
    base = _base(request)
    return _json(
        {
            "links": [
                {
                    "href": f"{base}collections",
                    "rel": "self",
                    "type": JSON,
                    "title": "Feature collections",
                }
            ],
            "crs": _crs_list(),
            "collections": [await _collection(request, conn, layer) for layer in COLLECTIONS],
        }
    )


@router.get("/collections/{collectionId}", summary="One feature collection")
async def collection(
    request: Request,
    collection_id: Annotated[str, Path(alias="collectionId")],
    conn: Annotated[AsyncConnection, Depends(connection)],
) -> Response:
    layer = _layer(collection_id)
    _check_params(request, ("f",))
    return _json(await _collection(request, conn, layer))


GEOMETRY_FORMATS = {
    "POINT": "geometry-point",
    "LINESTRING": "geometry-linestring",
    "POLYGON": "geometry-polygon",
    "MULTIPOINT": "geometry-multipoint",
    "MULTILINESTRING": "geometry-multilinestring",
    "MULTIPOLYGON": "geometry-multipolygon",
}


def queryable_schema(layer: Layer, prop: str) -> dict[str, Any]:
    kind = layer.column_type(prop)
    schema: dict[str, Any] = {"title": prop}
    if kind == "datetime":
        schema.update(type="string", format="date-time")
    elif kind == "object":
        schema.update(type="object")
    else:
        schema.update(type=kind)
    return schema


@router.get("/collections/{collectionId}/queryables", summary="Queryable properties")
async def queryables(
    request: Request, collection_id: Annotated[str, Path(alias="collectionId")]
) -> Response:
    layer = _layer(collection_id)
    _check_params(request, ("f",))
    column = layer.model.__table__.columns[layer.geometry_column]
    gtype = str(getattr(column.type, "geometry_type", "GEOMETRY")).upper().rstrip("ZM")
    props: dict[str, Any] = {
        "geometry": {
            "title": f"geometry (also '{layer.geometry_column}')",
            "format": GEOMETRY_FORMATS.get(gtype, "geometry-any"),
            "x-ogc-role": "primary-geometry",
        },
    }
    for prop in layer.properties:
        props[prop] = queryable_schema(layer, prop)
    return _json(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{_base(request)}collections/{layer.id}/queryables",
            "type": "object",
            "title": layer.title,
            "properties": props,
            "additionalProperties": False,
        },
        media_type=SCHEMA_JSON,
    )


# --- items ----------------------------------------------------------------------------------


@dataclass
class ItemsQuery:
    """A parsed /items request: conditions (SQL with parameters), paging, order, CRS."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0
    crs: CrsDef = field(default_factory=default_crs)
    conditions: list[sql.Composable] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    order: list[sql.Composable] = field(default_factory=list)

    def where(self) -> sql.Composable:
        if not self.conditions:
            return sql.SQL("")
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(self.conditions)


_UINT = re.compile(r"\d{1,20}")
_INT = re.compile(r"[+-]?\d{1,20}")


def _uint(name: str, text: str) -> int:
    if not _UINT.fullmatch(text.strip()):
        raise bad_request(f"{name}: {shown(text)} is not a non-negative integer")
    return int(text)


def _typed_value(layer: Layer, prop: str, text: str) -> Any:
    """A property filter value converted to the column's type (400 when it does not fit)."""
    kind = layer.column_type(prop)
    if kind == "integer":
        if not _INT.fullmatch(text.strip()):
            raise bad_request(f"{prop}: {shown(text)} is not an integer")
        return int(text)
    if kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise bad_request(f"{prop}: {shown(text)} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise bad_request(f"{prop}: {shown(text)} is not a finite number")
        return value
    if kind == "datetime":
        moment = cql2.parse_timestamp(text)
        if moment is None:
            raise bad_request(f"{prop}: {shown(text)} is not an RFC 3339 date-time")
        return moment
    if kind == "object":
        raise bad_request(f"{prop}: this property cannot be filtered by value")
    return text


def parse_items_query(request: Request, layer: Layer) -> ItemsQuery:
    _check_params(request, ITEMS_PARAMS, layer.properties)
    qp = request.query_params
    q = ItemsQuery()
    geom = sql.Identifier(layer.geometry_column)

    if (text := qp.get("limit")) is not None:
        q.limit = _uint("limit", text)
        if q.limit < 1:
            raise bad_request("limit: must be at least 1")
        if q.limit > MAX_LIMIT:
            raise bad_request(
                f"limit: {q.limit} exceeds the maximum of {MAX_LIMIT} features "
                "per page; page through larger results with offset or the "
                "'next' links"
            )
    if (text := qp.get("offset")) is not None:
        q.offset = _uint("offset", text)
        if q.offset > MAX_OFFSET:
            raise bad_request("offset: too large")
    try:
        if (text := qp.get("crs")) is not None:
            q.crs = parse_crs(text, "crs")
        bbox_crs = default_crs()
        if (text := qp.get("bbox-crs")) is not None:
            if qp.get("bbox") is None:
                raise bad_request("bbox-crs: given without bbox")
            bbox_crs = parse_crs(text, "bbox-crs")
        if (text := qp.get("bbox")) is not None:
            x0, y0, x1, y1 = parse_bbox(text, bbox_crs)
            expr, params = literal_geometry_sql(
                bbox_wkt(x0, y0, x1, y1), (x0, y0, x1, y1), bbox_crs
            )
            q.conditions.append(sql.SQL("ST_Intersects({}, {})").format(geom, expr))
            q.params += params
        if (text := qp.get("datetime")) is not None:
            if layer.temporal is None:
                raise bad_request(f"datetime: collection {layer.id!r} has no temporal property")
            _datetime_conditions(q, sql.Identifier(layer.temporal), text)
    except ValueError as exc:
        raise bad_request(str(exc)) from None

    for prop in layer.properties:
        values = qp.getlist(prop)
        if not values:
            continue
        typed = [_typed_value(layer, prop, v) for v in values]
        col = sql.Identifier(prop)
        if len(typed) == 1:
            q.conditions.append(sql.SQL("{} = {}").format(col, sql.Placeholder()))
        else:
            q.conditions.append(
                sql.SQL("{} IN ({})").format(
                    col, sql.SQL(", ").join(sql.Placeholder() for _ in typed)
                )
            )
        q.params += typed

    _filter_condition(q, layer, qp.get("filter"), qp.get("filter-lang"), qp.get("filter-crs"))
    q.order = _order(layer, qp.get("sortby"))
    return q


def _datetime_conditions(q: ItemsQuery, col: sql.Composable, text: str) -> None:
    rng = parse_datetime(text)
    if rng.start is not None and rng.start == rng.end and rng.end_inclusive:
        q.conditions.append(sql.SQL("{} = {}").format(col, sql.Placeholder()))
        q.params.append(rng.start)
        return
    if rng.start is not None:
        q.conditions.append(sql.SQL("{} >= {}").format(col, sql.Placeholder()))
        q.params.append(rng.start)
    if rng.end is not None:
        op = sql.SQL("<=" if rng.end_inclusive else "<")
        q.conditions.append(sql.SQL("{} {} {}").format(col, op, sql.Placeholder()))
        q.params.append(rng.end)


def _filter_condition(
    q: ItemsQuery, layer: Layer, text: str | None, lang: str | None, filter_crs: str | None
) -> None:
    if text is None:
        if lang is not None or filter_crs is not None:
            which = "filter-lang" if lang is not None else "filter-crs"
            raise bad_request(f"{which}: given without filter")
        return
    if lang is not None and lang.strip().lower() != "cql2-text":
        raise bad_request(f"filter-lang: {lang!r} is not supported; use cql2-text")
    try:
        crs = parse_crs(filter_crs, "filter-crs") if filter_crs is not None else default_crs()
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    ctx = cql2.FilterContext(
        {p: layer.column_type(p) for p in layer.properties}, layer.geometry_column, crs
    )
    try:
        cond, params = cql2.to_sql(text, ctx)
    except cql2.CQL2Error as exc:
        raise bad_request(f"filter: {exc}") from None
    q.conditions.append(cond)
    q.params += params


def _order(layer: Layer, sortby: str | None) -> list[sql.Composable]:
    allowed = dict.fromkeys((*layer.properties, layer.id_column))
    order: list[sql.Composable] = []
    names: set[str] = set()
    for raw in sortby.split(",") if sortby is not None else ():
        item = raw.strip()
        if not item:
            raise bad_request("sortby: empty sort key (use e.g. sortby=-height_m,name)")
        desc = item.startswith("-")
        name = item[1:].strip() if item[0] in "+-" else item
        if name not in allowed:
            raise bad_request(f"sortby: unknown property {name!r}; sortable: {', '.join(allowed)}")
        if name in names:
            raise bad_request(f"sortby: {name!r} given twice")
        names.add(name)
        order.append(
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL("DESC" if desc else "ASC"))
        )
    if layer.id_column not in names:
        order.append(sql.SQL("{} ASC").format(sql.Identifier(layer.id_column)))
    return order


def _select(layer: Layer, crs: CrsDef) -> sql.Composable:
    cols = [
        sql.Identifier(layer.id_column),
        geometry_output_sql(sql.Identifier(layer.geometry_column), crs),
        *(sql.Identifier(p) for p in layer.properties),
    ]
    return sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(cols), sql.Identifier(layer.schema, layer.table)
    )


async def _fetch(conn: AsyncConnection, query: sql.Composed, params: list[Any]) -> list[Any]:
    try:
        cur = await conn.execute(query, params)
        return await cur.fetchall()
    except psycopg.errors.QueryCanceled:
        raise ApiError(
            503,
            "ServiceUnavailable",
            "the query took longer than the statement "
            "timeout; narrow it with bbox, filter or a smaller limit",
        ) from None
    except psycopg.errors.DataError as exc:
        raise bad_request(f"invalid value: {exc.diag.message_primary or exc}") from None


def _features(layer: Layer, rows: list[Any]) -> list[str]:
    props = layer.properties
    return [feature_json(r[0], r[1], dict(zip(props, r[2:], strict=True))) for r in rows]


ITEMS_OPENAPI = {
    "parameters": [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "style": "form",
            "explode": False,
            "description": f"features per page (1 .. {MAX_LIMIT}, default {DEFAULT_LIMIT})",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
            },
        },
        {
            "name": "offset",
            "in": "query",
            "required": False,
            "description": "features to skip (paging; prefer the 'next' links)",
            "schema": {"type": "integer", "minimum": 0, "default": 0},
        },
        {
            "name": "bbox",
            "in": "query",
            "required": False,
            "style": "form",
            "explode": False,
            "description": "minx,miny,maxx,maxy in bbox-crs (CRS84 by default)",
            "schema": {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}},
        },
        {
            "name": "bbox-crs",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "format": "uri"},
        },
        {
            "name": "datetime",
            "in": "query",
            "required": False,
            "description": "RFC 3339 instant or interval (start/end, '..' for open)",
            "schema": {"type": "string"},
        },
        {
            "name": "crs",
            "in": "query",
            "required": False,
            "description": "output CRS (CRS84 by default)",
            "schema": {"type": "string", "format": "uri"},
        },
        {
            "name": "filter",
            "in": "query",
            "required": False,
            "description": "CQL2-text filter over the queryables",
            "schema": {"type": "string"},
        },
        {
            "name": "filter-lang",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["cql2-text"], "default": "cql2-text"},
        },
        {
            "name": "filter-crs",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "format": "uri"},
        },
        {
            "name": "sortby",
            "in": "query",
            "required": False,
            "description": "comma-separated properties, '-' prefix for descending",
            "schema": {"type": "string"},
        },
        {
            "name": "f",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["json"]},
        },
    ]
}


@router.get(
    "/collections/{collectionId}/items",
    summary="Features of a collection",
    openapi_extra=ITEMS_OPENAPI,
    responses={200: {"content": {GEOJSON: {}}, "description": "GeoJSON features"}},
)
async def items(
    request: Request,
    collection_id: Annotated[str, Path(alias="collectionId")],
    conn: Annotated[AsyncConnection, Depends(connection)],
) -> Response:
    layer = _layer(collection_id)
    q = parse_items_query(request, layer)
    where = q.where()
    page = sql.SQL("{}{} ORDER BY {} LIMIT {} OFFSET {}").format(
        _select(layer, q.crs),
        where,
        sql.SQL(", ").join(q.order),
        sql.Placeholder(),
        sql.Placeholder(),
    )
    rows = await _fetch(conn, page, [*q.params, q.limit, q.offset])
    if q.offset == 0 and len(rows) < q.limit:
        matched = len(rows)
    else:
        count = sql.SQL("SELECT count(*) FROM {}{}").format(
            sql.Identifier(layer.schema, layer.table), where
        )
        matched = (await _fetch(conn, count, q.params))[0][0]

    links = [
        {"href": str(request.url), "rel": "self", "type": GEOJSON, "title": "This page"},
        {
            "href": f"{_base(request)}collections/{layer.id}",
            "rel": "collection",
            "type": JSON,
            "title": layer.title,
        },
    ]
    if q.offset + len(rows) < matched:
        links.append(
            {
                "href": str(request.url.include_query_params(offset=q.offset + q.limit)),
                "rel": "next",
                "type": GEOJSON,
                "title": "Next page",
            }
        )
    if q.offset > 0:
        links.append(
            {
                "href": str(request.url.include_query_params(offset=max(0, q.offset - q.limit))),
                "rel": "prev",
                "type": GEOJSON,
                "title": "Previous page",
            }
        )
    head = dumps(
        {
            "type": "FeatureCollection",
            "numberMatched": matched,
            "numberReturned": len(rows),
            "timeStamp": rfc3339(datetime.now(UTC)),
            "links": links,
        }
    )
    body = head[:-1] + ',"features":[' + ",".join(_features(layer, rows)) + "]}"
    return Response(body, media_type=GEOJSON, headers={"Content-Crs": q.crs.header})


@router.get(
    "/collections/{collectionId}/items/{featureId}",
    summary="One feature",
    responses={200: {"content": {GEOJSON: {}}, "description": "GeoJSON feature"}},
)
async def item(
    request: Request,
    collection_id: Annotated[str, Path(alias="collectionId")],
    feature_id: Annotated[str, Path(alias="featureId")],
    conn: Annotated[AsyncConnection, Depends(connection)],
) -> Response:
    layer = _layer(collection_id)
    _check_params(request, ITEM_PARAMS)
    crs = default_crs()
    if (text := request.query_params.get("crs")) is not None:
        try:
            crs = parse_crs(text, "crs")
        except ValueError as exc:
            raise bad_request(str(exc)) from None
    fid: Any = feature_id
    if layer.column_type(layer.id_column) == "integer":
        if not _INT.fullmatch(feature_id) or abs(int(feature_id)) >= 2**63:
            raise not_found(
                f"feature {shown(feature_id)} does not exist in {layer.id!r} "
                "(ids of this collection are integers)"
            )
        fid = int(feature_id)
    query = sql.SQL("{} WHERE {} = {}").format(
        _select(layer, crs), sql.Identifier(layer.id_column), sql.Placeholder()
    )
    rows = await _fetch(conn, query, [fid])
    if not rows:
        raise not_found(f"feature {shown(feature_id)} does not exist in {layer.id!r}")
    base = f"{_base(request)}collections/{layer.id}"
    feature = feature_json(
        rows[0][0], rows[0][1], dict(zip(layer.properties, rows[0][2:], strict=True))
    )
    links = dumps(
        [
            {"href": str(request.url), "rel": "self", "type": GEOJSON, "title": "This feature"},
            {"href": base, "rel": "collection", "type": JSON, "title": layer.title},
        ]
    )
    body = feature[:-1] + ',"links":' + links + "}"
    return Response(body, media_type=GEOJSON, headers={"Content-Crs": crs.header})

"""OGC API - Features request parameters: checked and typed against the layer catalogue (the
allow-list), and the SQL conditions they become (filters, datetime, CQL2, order), with
values as query parameters."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from psycopg import sql

from cimtwin.api import cql2, cql2_sql
from cimtwin.api.errors import bad_request
from cimtwin.api.features.queries import layer_condition
from cimtwin.api.geojson import (
    CrsDef,
    bbox_wkt,
    default_crs,
    literal_geometry_sql,
    parse_bbox,
    parse_datetime,
)
from cimtwin.api.inputs import parse_crs, shown
from cimtwin.spatial.catalogue import Layer

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_OFFSET = 2**62
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
    "properties",
    "f",
)
ITEM_PARAMS = ("crs", "properties", "f")
#: filter languages read as CQL2-text: ``cql-text`` is its pre-standard name, the one GDAL's
#: OAPIF driver (3.6 to 3.12) looks for in the API document and sends with its filters
FILTER_LANGS = (*cql2_sql.FILTER_LANGS, "cql-text")
JSON_FORMATS = ("json", "geojson", "application/json", "application/geo+json")
HTML_FORMATS = ("html", "text/html")


def check_params(
    request: Request,
    allowed: tuple[str, ...],
    extra: tuple[str, ...] = (),
    html: bool = False,
) -> None:
    """400 for unknown or repeated query parameters, and for formats other than JSON (and
    HTML where the route has a page, ``html``)."""
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
    if f is not None and f.lower() not in JSON_FORMATS + (HTML_FORMATS if html else ()):
        also = " or HTML (f=html)" if html else ""
        raise bad_request(f"f: unsupported format {f!r}; this answers in JSON (f=json){also}")


def wants_html(request: Request) -> bool:
    """An HTML page rather than JSON: ``f=html``, or (without ``f``) a browser's Accept that
    names text/html and no JSON type; GIS clients ask for JSON or send ``*/*``."""
    f = request.query_params.get("f")
    if f is not None:
        return f.lower() in HTML_FORMATS
    accept = request.headers.get("accept", "").lower()
    return "text/html" in accept and "json" not in accept


def selected_properties(layer: Layer, text: str | None) -> tuple[str, ...]:
    """``properties=a,b``: the properties each feature carries, from the collection's own
    (an unknown name is a 400 naming it); empty: none; absent: all."""
    if text is None:
        return layer.properties
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in layer.properties]
    if unknown:
        raise bad_request(
            f"properties: unknown propert{'ies' if len(unknown) > 1 else 'y'} "
            f"{', '.join(shown(n) for n in unknown)}; "
            f"{layer.id!r} has: {', '.join(layer.properties)}"
        )
    return tuple(dict.fromkeys(names))


@dataclass
class ItemsQuery:
    """A parsed /items request: conditions (SQL with parameters), paging, order, CRS."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0
    crs: CrsDef = field(default_factory=default_crs)
    conditions: list[sql.Composable] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    order: list[sql.Composable] = field(default_factory=list)
    #: the properties each feature carries (``properties=``)
    props: tuple[str, ...] = ()

    def where(self) -> sql.Composable:
        if not self.conditions:
            return sql.SQL("")
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(self.conditions)


_UINT = re.compile(r"\d{1,20}")
INT_TEXT = re.compile(r"[+-]?\d{1,20}")


def _uint(name: str, text: str) -> int:
    if not _UINT.fullmatch(text.strip()):
        raise bad_request(f"{name}: {shown(text)} is not a non-negative integer")
    return int(text)


def _typed_value(layer: Layer, prop: str, text: str) -> Any:
    """A property filter value converted to the column's type (400 when it does not fit)."""
    kind = layer.column_type(prop)
    if kind == "integer":
        if not INT_TEXT.fullmatch(text.strip()):
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
    check_params(request, ITEMS_PARAMS, layer.properties, html=True)
    qp = request.query_params
    q = ItemsQuery(props=selected_properties(layer, qp.get("properties")))
    q.conditions += layer_condition(layer)
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
    language = "cql2-text" if lang is None else lang.strip().lower()
    if language not in FILTER_LANGS:
        raise bad_request(
            f"filter-lang: {lang!r} is not supported; use {' or '.join(FILTER_LANGS)}"
        )
    if language == "cql-text":  # CQL2-text's older name, as GDAL's OAPIF driver sends it
        language = "cql2-text"
    try:
        crs = parse_crs(filter_crs, "filter-crs") if filter_crs is not None else default_crs()
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    try:
        cond, params = cql2_sql.to_sql(text, cql2_sql.context_for(layer, crs), language)
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

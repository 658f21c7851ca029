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
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from psycopg import AsyncConnection, sql

from cimtwin.api.auth import require_read
from cimtwin.api.cql2_sql import CONFORMANCE as CQL2_CONFORMANCE
from cimtwin.api.db import connection
from cimtwin.api.errors import bad_request, not_found
from cimtwin.api.feature_queries import (
    INT_TEXT,
    ITEM_PARAMS,
    ITEMS_OPENAPI,
    check_params,
    feature_texts,
    fetch_rows,
    parse_items_query,
    select_sql,
)
from cimtwin.api.geojson import (
    GEOJSON,
    JSON,
    default_crs,
    dumps,
    feature_json,
    rfc3339,
    storage_crs_def,
    supported_crs,
)
from cimtwin.api.inputs import parse_crs, shown
from cimtwin.spatial.catalogue import COLLECTIONS, Layer, get_collection
from cimtwin.spatial.layer_extent import extent_cache, layer_extent, rounded_outward

SCHEMA_JSON = "application/schema+json"
OPENAPI_30 = "application/vnd.oai.openapi+json;version=3.0"
OPENAPI_31 = "application/vnd.oai.openapi+json;version=3.1"


CONFORMANCE = (
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    *CQL2_CONFORMANCE,
)


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
    """Root of absolute links, ending in '/': CIMTWIN_PUBLIC_URL (with its path prefix) behind
    a proxy, else the request's own base, so clients that follow links stay on the public URL."""
    public = request.app.state.settings.public_url
    return public.rstrip("/") + "/" if public else str(request.base_url)


def _url(request: Request, **params: int) -> str:
    """This request's URL under _base (query kept, `params` replaced)."""
    url = request.url.include_query_params(**params) if params else request.url
    path = url.path.lstrip("/")
    return f"{_base(request)}{path}" + (f"?{url.query}" if url.query else "")


# --- landing page, conformance, OpenAPI -----------------------------------------------------


@router.get("/", summary="Landing page")
async def landing_page(request: Request) -> Response:
    check_params(request, ("f",))
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
    check_params(request, ("f",))
    return _json({"conformsTo": list(CONFORMANCE)})


@router.get("/api", summary="API definition (OpenAPI 3.0)", include_in_schema=False)
async def api_definition(request: Request) -> Response:
    check_params(request, ("f",))
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
    check_params(request, ("f",))
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
    check_params(request, ("f",))
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
    check_params(request, ("f",))
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
        select_sql(layer, q.crs),
        where,
        sql.SQL(", ").join(q.order),
        sql.Placeholder(),
        sql.Placeholder(),
    )
    rows = await fetch_rows(conn, page, [*q.params, q.limit, q.offset])
    if q.offset == 0 and len(rows) < q.limit:
        matched = len(rows)
    else:
        count = sql.SQL("SELECT count(*) FROM {}{}").format(
            sql.Identifier(layer.schema, layer.table), where
        )
        matched = (await fetch_rows(conn, count, q.params))[0][0]

    links = [
        {"href": _url(request), "rel": "self", "type": GEOJSON, "title": "This page"},
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
                "href": _url(request, offset=q.offset + q.limit),
                "rel": "next",
                "type": GEOJSON,
                "title": "Next page",
            }
        )
    if q.offset > 0:
        links.append(
            {
                "href": _url(request, offset=max(0, q.offset - q.limit)),
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
    body = head[:-1] + ',"features":[' + ",".join(feature_texts(layer, rows)) + "]}"
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
    check_params(request, ITEM_PARAMS)
    crs = default_crs()
    if (text := request.query_params.get("crs")) is not None:
        try:
            crs = parse_crs(text, "crs")
        except ValueError as exc:
            raise bad_request(str(exc)) from None
    fid: Any = feature_id
    if layer.column_type(layer.id_column) == "integer":
        if not INT_TEXT.fullmatch(feature_id) or abs(int(feature_id)) >= 2**63:
            raise not_found(
                f"feature {shown(feature_id)} does not exist in {layer.id!r} "
                "(ids of this collection are integers)"
            )
        fid = int(feature_id)
    query = sql.SQL("{} WHERE {} = {}").format(
        select_sql(layer, crs), sql.Identifier(layer.id_column), sql.Placeholder()
    )
    rows = await fetch_rows(conn, query, [fid])
    if not rows:
        raise not_found(f"feature {shown(feature_id)} does not exist in {layer.id!r}")
    base = f"{_base(request)}collections/{layer.id}"
    feature = feature_json(
        rows[0][0], rows[0][1], dict(zip(layer.properties, rows[0][2:], strict=True))
    )
    links = dumps(
        [
            {"href": _url(request), "rel": "self", "type": GEOJSON, "title": "This feature"},
            {"href": base, "rel": "collection", "type": JSON, "title": layer.title},
        ]
    )
    body = feature[:-1] + ',"links":' + links + "}"
    return Response(body, media_type=GEOJSON, headers={"Content-Crs": crs.header})

"""The features API's discovery routes: landing page, conformance classes, the OpenAPI 3.0
document, the collections with their extents, and each collection's queryables."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from psycopg import AsyncConnection

from cimtwin.api.auth import require_read
from cimtwin.api.cql2_sql import CONFORMANCE as CQL2_CONFORMANCE
from cimtwin.api.db import connection
from cimtwin.api.features import html, schemas
from cimtwin.api.features.deps import (
    OPENAPI_30,
    OPENAPI_31,
    SCHEMA_JSON,
    base_url,
    collection_layer,
    json_response,
)
from cimtwin.api.features.openapi import collection_paths, openapi_30
from cimtwin.api.features.params import check_params, wants_html
from cimtwin.api.geojson import GEOJSON, JSON, default_crs, rfc3339, storage_crs_def, supported_crs
from cimtwin.spatial.catalogue import COLLECTIONS, Layer
from cimtwin.spatial.layer_extent import extent_cache, layer_extent, rounded_outward

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


# --- landing page, conformance, OpenAPI -----------------------------------------------------


@router.get("/", summary="Landing page")
async def landing_page(request: Request) -> Response:
    check_params(request, ("f",), html=True)
    base = base_url(request)
    doc = {
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
    return html.landing(doc) if wants_html(request) else json_response(doc)


@router.get("/conformance", summary="Conformance classes implemented")
async def conformance(request: Request) -> Response:
    check_params(request, ("f",))
    return json_response({"conformsTo": list(CONFORMANCE)})


@router.get("/api", summary="API definition (OpenAPI 3.0)", include_in_schema=False)
async def api_definition(request: Request) -> Response:
    check_params(request, ("f",))
    return json_response(openapi_30(collection_paths(request.app.openapi())), media_type=OPENAPI_30)


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
    base = f"{base_url(request)}collections/{layer.id}"
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
            # rel compares case-insensitively (RFC 8288), but GDAL up to 3.7 matches
            # "describedBy" exactly: both spellings, one schema
            *(
                {
                    "href": f"{base}/schema",
                    "rel": rel,
                    "type": SCHEMA_JSON,
                    "title": "JSON Schema of the features",
                }
                for rel in ("describedby", "describedBy")
            ),
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
    check_params(request, ("f",), html=True)
    base = base_url(request)
    doc = {
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
    return html.collections(doc) if wants_html(request) else json_response(doc)


@router.get("/collections/{collectionId}", summary="One feature collection")
async def collection(
    request: Request,
    layer: Annotated[Layer, Depends(collection_layer)],
    conn: Annotated[AsyncConnection, Depends(connection)],
) -> Response:
    check_params(request, ("f",), html=True)
    doc = await _collection(request, conn, layer)
    return html.collection(doc) if wants_html(request) else json_response(doc)


@router.get("/collections/{collectionId}/queryables", summary="Queryable properties")
async def queryables(
    request: Request, layer: Annotated[Layer, Depends(collection_layer)]
) -> Response:
    check_params(request, ("f",))
    schema_id = f"{base_url(request)}collections/{layer.id}/queryables"
    return json_response(schemas.queryables(layer, schema_id), media_type=SCHEMA_JSON)


@router.get("/collections/{collectionId}/schema", summary="JSON Schema of the features")
async def schema(request: Request, layer: Annotated[Layer, Depends(collection_layer)]) -> Response:
    check_params(request, ("f",))
    schema_id = f"{base_url(request)}collections/{layer.id}/schema"
    return json_response(schemas.feature_schema(layer, schema_id), media_type=SCHEMA_JSON)

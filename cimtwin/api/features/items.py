"""The features API's data routes: a collection's features (paged, filtered, in a CRS) and
one feature."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from psycopg import AsyncConnection, sql

from cimtwin.api.auth import require_read
from cimtwin.api.db import connection
from cimtwin.api.errors import bad_request
from cimtwin.api.features import html
from cimtwin.api.features.deps import base_url, collection_layer, this_url
from cimtwin.api.features.errors import unknown_feature
from cimtwin.api.features.openapi import ITEMS_OPENAPI
from cimtwin.api.features.params import (
    INT_TEXT,
    ITEM_PARAMS,
    check_params,
    parse_items_query,
    selected_properties,
    wants_html,
)
from cimtwin.api.features.queries import feature_texts, fetch_rows, layer_condition, select_sql
from cimtwin.api.geojson import GEOJSON, JSON, default_crs, dumps, feature_json, rfc3339
from cimtwin.api.inputs import parse_crs
from cimtwin.api.responses import maybe_gzip
from cimtwin.spatial.catalogue import Layer

router = APIRouter(tags=["OGC API - Features"], dependencies=[Depends(require_read)])


@router.get(
    "/collections/{collectionId}/items",
    summary="Features of a collection",
    openapi_extra=ITEMS_OPENAPI,
    responses={200: {"content": {GEOJSON: {}}, "description": "GeoJSON features"}},
)
async def items(
    request: Request,
    layer: Annotated[Layer, Depends(collection_layer)],
    conn: Annotated[AsyncConnection, Depends(connection)],
) -> Response:
    q = parse_items_query(request, layer)
    where = q.where()
    page = sql.SQL("{}{} ORDER BY {} LIMIT {} OFFSET {}").format(
        select_sql(layer, q.crs, q.props),
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
        {"href": this_url(request), "rel": "self", "type": GEOJSON, "title": "This page"},
        {
            "href": f"{base_url(request)}collections/{layer.id}",
            "rel": "collection",
            "type": JSON,
            "title": layer.title,
        },
    ]
    if q.offset + len(rows) < matched:
        links.append(
            {
                "href": this_url(request, offset=q.offset + q.limit),
                "rel": "next",
                "type": GEOJSON,
                "title": "Next page",
            }
        )
    if q.offset > 0:
        links.append(
            {
                "href": this_url(request, offset=max(0, q.offset - q.limit)),
                "rel": "prev",
                "type": GEOJSON,
                "title": "Previous page",
            }
        )
    page_doc = {
        "type": "FeatureCollection",
        "numberMatched": matched,
        "numberReturned": len(rows),
        "timeStamp": rfc3339(datetime.now(UTC)),
        "links": links,
    }
    texts = feature_texts(layer, rows, q.props)
    if wants_html(request):
        return html.items(layer.title, page_doc, [json.loads(t) for t in texts])
    body = dumps(page_doc)[:-1] + ',"features":[' + ",".join(texts) + "]}"
    return maybe_gzip(request, body, GEOJSON, {"Content-Crs": q.crs.header}, vary="Accept")


@router.get(
    "/collections/{collectionId}/items/{featureId}",
    summary="One feature",
    responses={200: {"content": {GEOJSON: {}}, "description": "GeoJSON feature"}},
)
async def item(
    request: Request,
    layer: Annotated[Layer, Depends(collection_layer)],
    feature_id: Annotated[str, Path(alias="featureId")],
    conn: Annotated[AsyncConnection, Depends(connection)],
) -> Response:
    check_params(request, ITEM_PARAMS, html=True)
    props = selected_properties(layer, request.query_params.get("properties"))
    crs = default_crs()
    if (text := request.query_params.get("crs")) is not None:
        try:
            crs = parse_crs(text, "crs")
        except ValueError as exc:
            raise bad_request(str(exc)) from None
    fid: Any = feature_id
    if layer.column_type(layer.id_column) == "integer":
        if not INT_TEXT.fullmatch(feature_id) or abs(int(feature_id)) >= 2**63:
            raise unknown_feature(layer, feature_id, integer_ids=True)
        fid = int(feature_id)
    conditions = [
        sql.SQL("{} = {}").format(sql.Identifier(layer.id_column), sql.Placeholder()),
        *layer_condition(layer),
    ]
    query = sql.SQL("{} WHERE {}").format(
        select_sql(layer, crs, props), sql.SQL(" AND ").join(conditions)
    )
    rows = await fetch_rows(conn, query, [fid])
    if not rows:
        raise unknown_feature(layer, feature_id)
    base = f"{base_url(request)}collections/{layer.id}"
    feature = feature_json(rows[0][0], rows[0][1], dict(zip(props, rows[0][2:], strict=True)))
    links = [
        {"href": this_url(request), "rel": "self", "type": GEOJSON, "title": "This feature"},
        {"href": base, "rel": "collection", "type": JSON, "title": layer.title},
    ]
    if wants_html(request):
        return html.item(layer.title, {**json.loads(feature), "links": links})
    body = feature[:-1] + ',"links":' + dumps(links) + "}"
    return maybe_gzip(request, body, GEOJSON, {"Content-Crs": crs.header}, vary="Accept")

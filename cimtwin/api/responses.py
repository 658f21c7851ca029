"""Response helpers the use-case routers share: GeoJSON feature collections from features
already serialised, JSON answers, and the per-process cache of what only imports change."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from cimtwin.api.geojson import GEOJSON, JSON, dumps
from cimtwin.spatial.admin_queries import ImportCache, import_cache

CRS84_HEADER = "<http://www.opengis.net/def/crs/OGC/1.3/CRS84>"


def feature_collection(
    features: list[str], extra: dict[str, Any] | None = None, status: int = 200
) -> Response:
    """A GeoJSON FeatureCollection (CRS84) from features already serialised."""
    head = dumps({"type": "FeatureCollection", **(extra or {}), "numberReturned": len(features)})
    body = head[:-1] + ',"features":[' + ",".join(features) + "]}"
    return Response(
        body, status_code=status, media_type=GEOJSON, headers={"Content-Crs": CRS84_HEADER}
    )


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type=JSON, headers=headers)


def summary_cache(request: Request) -> ImportCache | None:
    """The process's cache of what only imports change (setting ``summary_cache_s``;
    0 turns it off)."""
    return import_cache(request.app.state, request.app.state.settings.summary_cache_s)

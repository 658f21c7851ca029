"""What every features route shares: absolute links on the public URL, JSON answers, and the
collection path parameter resolved against the catalogue."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request
from fastapi.responses import Response

from cimtwin.api.features.errors import layer_of
from cimtwin.api.geojson import JSON, dumps
from cimtwin.spatial.catalogue import Layer

SCHEMA_JSON = "application/schema+json"
OPENAPI_30 = "application/vnd.oai.openapi+json;version=3.0"
OPENAPI_31 = "application/vnd.oai.openapi+json;version=3.1"


def json_response(
    body: Any, media_type: str = JSON, headers: dict[str, str] | None = None, status: int = 200
) -> Response:
    return Response(dumps(body), status_code=status, media_type=media_type, headers=headers)


def base_url(request: Request) -> str:
    """Root of absolute links, ending in '/': CIMTWIN_PUBLIC_URL (with its path prefix) behind
    a proxy, else the request's own base, so clients that follow links stay on the public URL."""
    public = request.app.state.settings.public_url
    return public.rstrip("/") + "/" if public else str(request.base_url)


def this_url(request: Request, **params: int | str) -> str:
    """This request's URL under :func:`base_url` (query kept, ``params`` replaced)."""
    url = request.url.include_query_params(**params) if params else request.url
    path = url.path.lstrip("/")
    return f"{base_url(request)}{path}" + (f"?{url.query}" if url.query else "")


def collection_layer(collection_id: Annotated[str, Path(alias="collectionId")]) -> Layer:
    """Dependency: the catalogue layer named by ``{collectionId}`` (404 if none)."""
    return layer_of(collection_id)

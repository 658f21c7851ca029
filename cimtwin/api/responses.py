"""Response helpers the use-case routers share: GeoJSON feature collections from features
already serialised, JSON answers, gzip for who accepts it, and the per-process cache of what
only imports change."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from isal import igzip

from cimtwin.api.geojson import GEOJSON, JSON, dumps
from cimtwin.spatial.admin_queries import ImportCache, import_cache

CRS84_HEADER = "<http://www.opengis.net/def/crs/OGC/1.3/CRS84>"

# --- for route decorators: the documented answers (schemas in cimtwin.api.openapi) ---------

ERROR_REF = {"$ref": "#/components/schemas/Error"}
FEATURE_REF = {"$ref": "#/components/schemas/Feature"}
FEATURE_COLLECTION_REF = {"$ref": "#/components/schemas/FeatureCollection"}

#: for a route decorator: ``responses={200: FEATURE_COLLECTION}``
FEATURE_COLLECTION: dict[str, Any] = {
    "description": "GeoJSON features (CRS84 unless a crs parameter says otherwise)",
    "content": {GEOJSON: {"schema": FEATURE_COLLECTION_REF}},
}
FEATURE: dict[str, Any] = {
    "description": "one GeoJSON feature",
    "content": {GEOJSON: {"schema": FEATURE_REF}},
}
#: what a pipeline analysis answers when the data cannot answer it as asked
ANALYSIS_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the data cannot answer the request as asked (the reason is given)"},
    404: {"description": "a segment or point id that is not in the twin"},
}


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


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header takes gzip (``gzip;q=0`` refuses it)."""
    for item in header.lower().split(","):
        name, _, params = item.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and _quality(q[2:]) == 0)
    return False


def _quality(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 1.0


#: smaller answers go as they are: gzip's header and a compression call cost more than they save
GZIP_MIN_BYTES = 1024


def maybe_gzip(
    request: Request,
    body: str | bytes,
    media_type: str,
    headers: dict[str, str] | None = None,
    vary: str = "",
) -> Response:
    """``body`` gzip-compressed (level 1: a 1.3 MB page in a few milliseconds, to about a
    sixth) when the client accepts it and it is worth it; ``Vary`` says the answer depends on
    Accept-Encoding (and, under closed reads, on the key), and on ``vary`` too."""
    data = body.encode() if isinstance(body, str) else body
    out = {**(headers or {}), "Vary": request.app.state.vary + (f", {vary}" if vary else "")}
    if len(data) >= GZIP_MIN_BYTES and accepts_gzip(request.headers.get("accept-encoding", "")):
        data = igzip.compress(data, compresslevel=1, mtime=0)
        out["Content-Encoding"] = "gzip"
    return Response(data, media_type=media_type, headers=out)

"""The map pages, the API docs pages and the front-end packages they load (installed from
npm, served here: no CDN, so they work without internet)."""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from cimtwin.settings import Settings

log = logging.getLogger(__name__)
#: npm package -> the folder of it that pages may load ("" : the package is its dist)
PACKAGES = {
    "maplibre-gl": "dist",
    "cesium": "Build/Cesium",
    "swagger-ui-dist": "",
    "redoc": "bundles",
    # vector tile decoding for the 3D viewer's draped themes (ES modules, via an import map)
    "@mapbox/vector-tile": "",
    "@mapbox/point-geometry": "",
    "pbf": "",
}
LIB = "/viewer/lib"
DOCS_URL, REDOC_URL = "/docs", "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
REDOC_JS = "redoc.standalone.js"
#: the one asset ReDoc's bundle fetches from the internet: the Redocly logo under its menu;
#: an empty src makes the image fail without a request, and ReDoc then leaves it out
REDOC_CDN_LOGO = b'"https://cdn.redoc.ly/redoc/logo-mini.svg"'


def viewer_dir(settings: Settings) -> Path:
    if settings.viewer_dir:
        return Path(settings.viewer_dir)
    return Path(__file__).resolve().parents[2] / "viewer"


def mount(app: FastAPI, settings: Settings) -> None:
    """Serve ``viewer/pages`` at /viewer and each package's dist folder at /viewer/lib/NAME;
    only those folders, not the whole node_modules tree."""
    root = viewer_dir(settings)
    _serve_redoc_bundle(app, root / "node_modules" / "redoc" / PACKAGES["redoc"] / REDOC_JS)
    for name, sub in PACKAGES.items():
        folder = root / "node_modules" / name / sub
        if folder.is_dir():
            app.mount(f"{LIB}/{name}", StaticFiles(directory=folder), name=f"lib-{name}")
        else:
            log.warning("%s missing: run `npm ci` in %s (scripts/setup.sh does)", folder, root)
    pages = root / "pages"
    if pages.is_dir():
        app.mount("/viewer", StaticFiles(directory=pages, html=True), name="viewer")

        @app.get("/map", include_in_schema=False)
        async def map_page(request: Request) -> RedirectResponse:
            query = request.url.query  # /map?style=parcels opens the page on that style
            return RedirectResponse("/viewer/map.html" + (f"?{query}" if query else ""))


@functools.lru_cache(maxsize=2)
def _offline_redoc(path: Path, mtime_ns: int) -> tuple[bytes, str]:
    body = path.read_bytes().replace(REDOC_CDN_LOGO, b'""')
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _serve_redoc_bundle(app: FastAPI, path: Path) -> None:
    """ReDoc's standalone bundle without its one request to a CDN (routed before the
    package's static folder, which serves the rest of it)."""

    @app.api_route(f"{LIB}/redoc/{REDOC_JS}", methods=["GET", "HEAD"], include_in_schema=False)
    async def redoc_bundle(request: Request) -> Response:
        try:
            body, etag = _offline_redoc(path, path.stat().st_mtime_ns)
        except FileNotFoundError:
            raise HTTPException(404, f"{REDOC_JS} missing: run `npm ci` in viewer/") from None
        headers = {"ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="text/javascript", headers=headers)


def mount_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, as FastAPI's own (the app is made with
    ``docs_url=None, redoc_url=None``) but with every asset from /viewer/lib: FastAPI's
    defaults load them from a CDN (and ReDoc's fonts from Google), a blank page offline.
    Open like /openapi.json, whatever ``open_reads`` says: the pages hold no data."""

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "").rstrip("/")
        return root + (app.openapi_url or "/openapi.json"), root + LIB

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        openapi_url, lib = urls(request)
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{lib}/swagger-ui-dist/swagger-ui-bundle.js",
            swagger_css_url=f"{lib}/swagger-ui-dist/swagger-ui.css",
            swagger_favicon_url=f"{lib}/swagger-ui-dist/favicon-32x32.png",
            oauth2_redirect_url=request.scope.get("root_path", "").rstrip("/")
            + OAUTH2_REDIRECT_URL,
            init_oauth=app.swagger_ui_init_oauth,
            # no badge that sends the document to validator.swagger.io
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        openapi_url, lib = urls(request)
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{lib}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{lib}/swagger-ui-dist/favicon-32x32.png",
            with_google_fonts=False,
        )

"""The map pages and the front-end packages they load (installed from npm, served here)."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from cimtwin.settings import Settings

log = logging.getLogger(__name__)
#: npm package -> the folder of it that pages may load
PACKAGES = {"maplibre-gl": "dist", "cesium": "Build/Cesium"}


def viewer_dir(settings: Settings) -> Path:
    if settings.viewer_dir:
        return Path(settings.viewer_dir)
    return Path(__file__).resolve().parents[2] / "viewer"


def mount(app: FastAPI, settings: Settings) -> None:
    """Serve ``viewer/pages`` at /viewer and each package's dist folder at /viewer/lib/NAME;
    only those folders, not the whole node_modules tree."""
    root = viewer_dir(settings)
    for name, sub in PACKAGES.items():
        folder = root / "node_modules" / name / sub
        if folder.is_dir():
            app.mount(f"/viewer/lib/{name}", StaticFiles(directory=folder), name=f"lib-{name}")
        else:
            log.warning("%s missing: run `npm ci` in %s (scripts/setup.sh does)", folder, root)
    pages = root / "pages"
    if pages.is_dir():
        app.mount("/viewer", StaticFiles(directory=pages, html=True), name="viewer")

        @app.get("/map", include_in_schema=False)
        async def map_page() -> RedirectResponse:
            return RedirectResponse("/viewer/map.html")

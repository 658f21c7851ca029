"""FastAPI app factory: settings in, routers mounted, one connection pool per process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from cimtwin import __version__
from cimtwin.api import (
    districts,
    errors,
    features,
    grids,
    health,
    incidents,
    indoor,
    openapi,
    parcels,
    pipelines,
    search,
    styles,
    threed,
    tiles,
    viewer,
)
from cimtwin.api.body_limit import BodyLimit
from cimtwin.api.db import make_pool
from cimtwin.api.hardening import BodyTimeout, Hardening, TrustedHosts
from cimtwin.api.inputs import no_nul_characters
from cimtwin.api.page_gate import PageGate
from cimtwin.api.replicas import ReadRouter, Replica, RetryReadsOnPrimary
from cimtwin.db.engine import libpq_dsn
from cimtwin.settings import Settings, get_settings
from cimtwin.tiles.cache import listen_for_changes, tile_cache_for


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = make_pool(settings)
        await app.state.pool.open(wait=False)
        app.state.reads = ReadRouter(app.state.pool, replicas_of(settings))
        await app.state.reads.open()
        cache = app.state.tile_cache
        await cache.open()
        listener = None
        if cache.enabled:
            ready = asyncio.Event()
            listener = asyncio.create_task(
                listen_for_changes(
                    libpq_dsn(settings.database_url),
                    cache,
                    ready,
                    schema=settings.db_schema,
                    on_change=app.state.reads.note_change,
                )
            )
            # serve only once changes can be heard, or a stale tile could be cached for good
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), settings.pool_timeout_s)
        try:
            yield
        finally:
            if listener:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            await cache.close()
            await app.state.reads.close()
            await app.state.pool.close()

    app = FastAPI(
        title="cimtwin",
        version=__version__,
        description="CIM / digital-twin spatial data service: grids, buildings, pipelines, "
        "components, parcels and incidents on PostGIS.",
        lifespan=lifespan,
        dependencies=[Depends(no_nul_characters)],
        docs_url=None,  # viewer.mount_docs serves both pages with local assets, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    # opened once: a tiles URL that names no store, or a missing filesystem, stops the start
    app.state.tiles_store = threed.tiles_root(settings)
    app.state.tile_cache = tile_cache_for(settings)
    app.state.tile_slots = asyncio.Semaphore(settings.tile_db_concurrency or settings.pool_size)
    app.state.analysis_slots = asyncio.Semaphore(settings.analysis_concurrency)
    app.state.bulk_slots = asyncio.Semaphore(settings.bulk_concurrency)
    # closed reads: every tile went to a key holder, so no shared proxy may keep it
    scope = "public" if settings.open_reads else "private"
    app.state.cache_control = f"{scope}, max-age={settings.tile_max_age_s}"
    app.state.vary = "Accept-Encoding" + (
        "" if settings.open_reads else ", Authorization, X-API-Key"
    )
    app.include_router(health.router)
    app.include_router(features.router)
    app.router.routes.insert(0, tiles.tile_route)  # first: the hottest path matches at once
    app.include_router(tiles.router)
    app.include_router(styles.router)
    app.include_router(threed.router)
    app.router.routes.append(threed.file_route)
    for module in (grids, districts, pipelines, parcels, incidents, indoor, search):
        app.include_router(module.router)
    viewer.mount(app, settings)
    viewer.mount_docs(app)
    errors.install(app)
    if settings.database_replica_urls.strip():
        app.add_middleware(RetryReadsOnPrimary)
    # inside CORS (added after it), so that a 413 carries the CORS headers too
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_kb * 1024, own_limit=frozenset({"/grids/assign"})
    )
    if not settings.open_reads:
        app.add_middleware(PageGate)
    _allow_cross_origin(app, settings)
    app.add_middleware(BodyTimeout, seconds=settings.body_timeout_s)
    hosts = [h.strip() for h in settings.trusted_hosts.split(",") if h.strip()]
    if hosts and "*" not in hosts:
        app.add_middleware(TrustedHosts, hosts=hosts)
    app.add_middleware(Hardening)  # outermost: its headers go on every answer, CORS too
    openapi.install(app)
    return app


def replicas_of(settings: Settings) -> list[Replica]:
    """A pool per replica URL of the settings (named ``replica1``, ``replica2``... in
    /healthz, so no URL or password is shown)."""
    urls = [u.strip() for u in settings.database_replica_urls.split(",") if u.strip()]
    return [
        Replica(f"replica{i}", make_pool(settings, url, name="cimtwin-api-replica"))
        for i, url in enumerate(urls, 1)
    ]


class OriginGatedCORS:
    """Starlette's CORS middleware, entered only by requests that carry an ``Origin``.

    Same-origin pages, GIS desktops and tile caches send none, and for them Starlette's
    middleware costs a quarter of the per-request time of a bare route (parsing every header
    to find none); a scan of the raw header names costs next to nothing."""

    # ``app`` positional-only, as Starlette passes it (an option could not be named app)
    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(k == b"origin" for k, _ in scope["headers"]):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _allow_cross_origin(app: FastAPI, settings: Settings) -> None:
    """CORS for twin viewers served from other hosts (a CesiumJS or MapLibre app, QGIS web
    clients): they read tiles and features and, with a key, write incidents."""
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if not origins:
        return
    app.add_middleware(
        OriginGatedCORS,
        allow_origins=origins,
        allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", "X-API-Key", "Content-Type", "If-None-Match", "Accept-Crs"],
        expose_headers=["ETag", "Content-Crs"],
        max_age=3600,
    )

"""FastAPI app factory: settings in, routers mounted, one connection pool per process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cimtwin import __version__
from cimtwin.api import health
from cimtwin.api.db import make_pool
from cimtwin.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = make_pool(settings)
        await app.state.pool.open(wait=False)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(
        title="cimtwin",
        version=__version__,
        description="CIM / digital-twin spatial data service: grids, buildings, pipelines, "
        "components, parcels and incidents on PostGIS.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(health.router)
    return app

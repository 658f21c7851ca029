"""``/healthz``: is the database there, which PostGIS, is the schema migrated, does the tile
cache work.

With closed reads (``open_reads`` off) the probe stays open but, without a key, answers only
``{"status": ...}`` (503 when the database is away): no versions, revision or cache figures
for an anonymous caller. A request with a valid key (any role) gets the full answer; an
invalid key is a 401, as everywhere."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from psycopg import AsyncConnection, Error
from pydantic import BaseModel

from cimtwin import __version__
from cimtwin.api.auth import check_read, request_key
from cimtwin.api.db import primary_connection
from cimtwin.api.responses import ERROR_REF
from cimtwin.spatial.sql_toolkit import one, one_row

router = APIRouter(tags=["service"])


class Health(BaseModel):
    status: str
    version: str
    postgresql: str | None = None
    postgis: str | None = None
    schema_revision: str | None = None
    storage_srid: int
    tile_cache: str | None = None
    #: each streaming replica: healthy, replay lag in bytes of WAL and seconds, last error
    replicas: list[dict[str, Any]] | None = None
    detail: str | None = None


class HealthStatus(BaseModel):
    """The bare answer under closed reads without a key: no versions or figures."""

    status: str


@router.get(
    "/healthz",
    # the full report, or under closed reads without a key only its status
    response_model=Health | HealthStatus,
    summary="Service and database health",
    responses={
        503: {
            "description": "the database is unavailable: the report, or the error format when "
            "no connection came at all",
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/Health"},
                            {"$ref": "#/components/schemas/HealthStatus"},
                            ERROR_REF,
                        ]
                    }
                }
            },
        }
    },
)
async def healthz(
    request: Request, conn: Annotated[AsyncConnection, Depends(primary_connection)]
) -> Health | JSONResponse:
    settings = request.app.state.settings
    key = request_key(request)
    bare = not settings.open_reads and key is None
    if not settings.open_reads and key is not None:
        await check_read(request, key)
    answer = await _health(request, conn)
    if bare:
        status = 503 if answer.status == "error" else 200
        return JSONResponse({"status": answer.status}, status_code=status)
    if answer.status == "error":
        return JSONResponse(answer.model_dump(), status_code=503)
    return answer


async def _health(request: Request, conn: AsyncConnection) -> Health:
    settings = request.app.state.settings
    schema = settings.db_schema
    try:
        pg, postgis, migrated = await one_row(
            conn,
            "SELECT current_setting('server_version'), postgis_lib_version(),"
            " to_regclass(%s) IS NOT NULL",
            (f"{schema}.alembic_version",),
        )
        revision = None
        if migrated:
            row = await one(conn, f'SELECT version_num FROM "{schema}".alembic_version')
            revision = row[0] if row else None
    except Error as exc:
        return Health(
            status="error",
            version=__version__,
            storage_srid=settings.storage_srid,
            detail=f"database: {exc.__class__.__name__}: {exc}".strip(),
        )
    # a broken shared tile cache is degraded, not an error: tiles are then served uncached
    cache, cache_ok = await request.app.state.tile_cache.health()
    problems = [] if revision is not None else ["schema not migrated: run `cimtwin db upgrade`"]
    if not cache_ok:
        problems.append(f"tile cache: {cache}")
    return Health(
        status="degraded" if problems else "ok",
        version=__version__,
        postgresql=pg,
        postgis=postgis,
        schema_revision=revision,
        storage_srid=settings.storage_srid,
        tile_cache=cache,
        replicas=request.app.state.reads.health() or None,
        detail="; ".join(problems) or None,
    )

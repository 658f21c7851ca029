"""The API's connection pool (psycopg 3, async) and the per-request statement timeout."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from cimtwin.db.engine import libpq_dsn
from cimtwin.settings import Settings


def make_pool(settings: Settings) -> AsyncConnectionPool:
    async def configure(conn: AsyncConnection) -> None:
        await conn.execute(f"SET statement_timeout = {int(settings.statement_timeout_ms)}")
        await conn.execute("SET application_name = 'cimtwin-api'")
        # short OLTP-style queries: PostGIS cost estimates otherwise buy JIT compilations
        # that take longer than the queries themselves
        await conn.execute("SET jit = off")
        await conn.commit()

    return AsyncConnectionPool(
        libpq_dsn(settings.database_url),
        min_size=1,
        max_size=settings.pool_size,
        configure=configure,
        open=False,
        timeout=settings.pool_timeout_s,
        kwargs={"autocommit": True, "connect_timeout": max(1, int(settings.pool_timeout_s))},
    )


async def connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """FastAPI dependency: one pooled connection for the request (no connection in time is a
    503, answered by :mod:`cimtwin.api.errors`)."""
    async with request.app.state.pool.connection() as conn:
        yield conn

#: a route parameter holding the request's pooled connection
Conn = Annotated[AsyncConnection, Depends(connection)]

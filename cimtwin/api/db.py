"""The API's connection pool (psycopg 3, async), the per-request statement timeout, and what
the pool does while the database is away.

:class:`ApiPool` answers at once (:class:`DatabaseUnavailable`, a 503) while the server
refuses connections instead of letting every request wait the pool timeout, sweeps out the
pool's dead connections as soon as one is found broken, and keeps trying to reconnect in the
background as psycopg_pool does. Timestamps and dates Python cannot hold (1 BC, infinity, the
year 20000) are read as PostgreSQL's text instead of failing the whole query.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from psycopg import AsyncConnection
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cimtwin.db.engine import libpq_dsn
from cimtwin.errors import DatabaseUnavailable
from cimtwin.settings import Settings

#: a pool that gave up reconnecting starts again on the next request, so a database back after
#: a long outage is found within about half of this
RECONNECT_TIMEOUT_S = 30.0


def unavailable_reason(exc: psycopg.OperationalError) -> str | None:
    """Why a connection attempt says the server is not there, or None for other refusals
    (too many clients, a wrong password: then waiting for a pooled connection may help)."""
    state = exc.sqlstate
    if state is not None and state[:2] not in ("08", "57"):
        return None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return first[:300]


class ApiPool(AsyncConnectionPool):
    """An :class:`~psycopg_pool.AsyncConnectionPool` that fails fast while the database is
    down and drops its dead connections together."""

    def __init__(self, conninfo: str, **kwargs: Any) -> None:
        self.unavailable: str | None = None  # why the last connection attempt failed
        self._failure: asyncio.Future[str] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._sweeping = False
        pool = self

        class Connection(AsyncConnection):
            """Tells the pool how each connection attempt went."""

            #: :func:`make_pool` turns JIT off for the whole session, so the analyses need
            #: not wrap a statement in a transaction to turn it off (three round trips)
            jit_off = True

            @classmethod
            async def connect(cls, *args: Any, **kw: Any) -> Any:
                try:
                    conn = await super().connect(*args, **kw)
                except psycopg.OperationalError as exc:
                    pool._attempt_failed(exc)
                    raise
                pool.unavailable = None
                return conn

        Connection.__qualname__ = "ApiPool.Connection"
        super().__init__(conninfo, connection_class=Connection, **kwargs)

    def _attempt_failed(self, exc: psycopg.OperationalError) -> None:
        reason = unavailable_reason(exc)
        if reason is None:
            return
        self.unavailable = reason
        if self._failure is not None and not self._failure.done():
            self._failure.set_result(reason)
        self._failure = None

    def _idle(self) -> int:
        return self.get_stats().get("pool_available", 0)

    async def getconn(self, timeout: float | None = None) -> Any:
        """A pooled connection; :class:`DatabaseUnavailable` at once when the database
        refuses connections and none is left, or as soon as the next attempt is refused."""
        if self._idle():
            return await super().getconn(timeout)
        if self.unavailable is not None:
            self._start_probe()
            raise DatabaseUnavailable(f"database unavailable: {self.unavailable}")
        # wait for a connection, but no longer than the next connection attempt takes to fail
        if self._failure is None:
            self._failure = asyncio.get_running_loop().create_future()
        failure = self._failure
        waiter = asyncio.ensure_future(super().getconn(timeout))
        try:
            await asyncio.wait((waiter, failure), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await self._abandon(waiter)
            raise
        if waiter.done():
            return waiter.result()
        await self._abandon(waiter)
        raise DatabaseUnavailable(f"database unavailable: {failure.result()}")

    async def _abandon(self, waiter: asyncio.Future[Any]) -> None:
        """Stop waiting; a connection handed over meanwhile goes back to the pool."""
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError, PoolTimeout):
            conn = await waiter
            await self.putconn(conn)

    def _start_probe(self) -> None:
        """Keep one request for a connection open in the background while the database is
        down: it makes the pool try again whenever it has stopped trying."""
        if self._probe is not None and not self._probe.done():
            return

        async def probe() -> None:
            with contextlib.suppress(PoolTimeout, psycopg.Error):
                conn = await AsyncConnectionPool.getconn(self)
                await self.putconn(conn)

        self._probe = asyncio.ensure_future(probe())

    async def putconn(self, conn: Any) -> None:
        """Return a connection; a broken one means its siblings likely died with it (a
        restart, a failover, terminated backends): check the idle ones now, so that the
        next requests get live connections instead of failing one by one."""
        broken = conn.broken or conn.closed
        await super().putconn(conn)
        if broken and not self._sweeping:
            self._sweeping = True
            try:
                await self.check()
            finally:
                self._sweeping = False

    async def close(self, timeout: float = 5.0) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await super().close(timeout)


def lenient_loader(type_name: str) -> type[Loader]:
    """The default text loader of ``type_name``, but a value out of Python's range (year 1
    BC or 10000, infinity) comes back as PostgreSQL's text: one odd row written behind the
    API's back must not make every read of its table fail."""
    oid = psycopg.postgres.types[type_name].oid
    found = psycopg.adapters.get_loader(oid, Format.TEXT)
    assert found is not None  # psycopg has a text loader for every built-in type
    fast: type[psycopg.abc.Loader] = found  # narrowed once, for the class below

    class Lenient(Loader):
        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._fast = fast(oid, context)

        def load(self, data: Any) -> Any:
            try:
                return self._fast.load(data)
            except (psycopg.DataError, ValueError, OverflowError):
                return bytes(data).decode()

    return Lenient


LENIENT = {name: lenient_loader(name) for name in ("timestamptz", "timestamp", "date")}


def make_pool(settings: Settings, url: str | None = None, name: str = "cimtwin-api") -> ApiPool:
    """The pool of the primary (``settings.database_url``) or, with ``url``, a replica's."""

    async def configure(conn: AsyncConnection) -> None:
        for type_name, loader in LENIENT.items():
            conn.adapters.register_loader(type_name, loader)
        await conn.execute(f"SET statement_timeout = {int(settings.statement_timeout_ms)}")
        await conn.execute("SELECT set_config('application_name', %s, false)", (name,))
        # short OLTP-style queries: PostGIS cost estimates otherwise buy JIT compilations
        # that take longer than the queries themselves
        await conn.execute("SET jit = off")
        await conn.commit()

    return ApiPool(
        libpq_dsn(url or settings.database_url),
        min_size=1,
        max_size=settings.pool_size,
        configure=configure,
        open=False,
        timeout=settings.pool_timeout_s,
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        kwargs={"autocommit": True, "connect_timeout": max(1, int(settings.pool_timeout_s))},
    )


def reads_on_primary(request: Request) -> bool:
    """Whether this request's reads must see the primary: anything but GET/HEAD (it writes,
    or reads what it is about to write), or a GET retried after its replica failed."""
    from cimtwin.api.replicas import PRIMARY_ONLY, READ_METHODS

    return request.method not in READ_METHODS or bool(getattr(request.state, PRIMARY_ONLY, False))


async def connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """FastAPI dependency: one pooled connection for the request, a replica's for GET and
    HEAD when replicas are configured (:mod:`cimtwin.api.replicas`). No connection in time,
    or a database that refuses them, is a 503 answered by :mod:`cimtwin.api.errors`."""
    async with request.app.state.reads.read_connection(reads_on_primary(request)) as conn:
        yield conn


async def primary_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """FastAPI dependency: a connection to the primary, for reads that must see the writes
    just made (incidents and their context)."""
    async with request.app.state.pool.connection() as conn:
        yield conn


#: a route parameter holding the request's pooled connection
Conn = Annotated[AsyncConnection, Depends(connection)]
#: the same, always on the primary
PrimaryConn = Annotated[AsyncConnection, Depends(primary_connection)]

"""Reads on PostgreSQL streaming replicas: which pool a request's connection comes from.

A bureau that outgrows one database server adds standbys (``CIMTWIN_DATABASE_REPLICA_URLS``).
GET and HEAD requests then take their connection from a replica, round-robin; writes, imports,
API keys and incidents (whose readers must see the write they just made) stay on the primary,
and so do change notifications. A replica is used only while it is healthy and has replayed
every change the tile cache has heard of: otherwise a tile dropped from the cache on a change
could be read back, stale, from a standby that has not replayed it yet, and cached for good.
A replica that fails in the middle of a read makes the whole GET run again on the primary
(:class:`RetryReadsOnPrimary`), so stopping a standby under load fails no request.

The design notes for many machines are in docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import PoolTimeout
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cimtwin.api.db import ApiPool

log = logging.getLogger(__name__)

#: how often each replica's health and replay position is read
POLL_S = 0.5
#: the request-state key that sends the rest of a request to the primary
PRIMARY_ONLY = "cimtwin_primary_only"
#: methods whose requests may read on a replica (no body to replay on a retry)
READ_METHODS = frozenset({"GET", "HEAD"})


class ReplicaFailed(Exception):
    """A replica's connection broke during a read: the read is run again on the primary."""


def lsn_value(lsn: str | None) -> int | None:
    """``16/B374D848`` as a number (bytes of WAL), comparable and subtractable."""
    if not lsn:
        return None
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass
class Replica:
    """One standby: its pool and what the last poll found."""

    name: str
    pool: ApiPool
    healthy: bool = False
    replay_lsn: int | None = None
    lag_s: float | None = None
    error: str | None = None
    checked: float = 0.0

    def summary(self, primary_lsn: int | None) -> dict[str, Any]:
        behind = None
        if primary_lsn is not None and self.replay_lsn is not None:
            behind = max(0, primary_lsn - self.replay_lsn)
        return {
            "name": self.name,
            "healthy": self.healthy,
            "lag_bytes": behind,
            "lag_s": None if self.lag_s is None else round(self.lag_s, 3),
            "error": self.error,
        }


@dataclass
class ReadRouter:
    """The primary's pool, the replicas', and the rule that picks one for a read."""

    primary: ApiPool
    replicas: list[Replica] = field(default_factory=list)
    #: the primary's WAL position at the last change heard: replicas behind it are skipped
    needed_lsn: int = 0
    primary_lsn: int | None = None
    _turn: itertools.count = field(default_factory=itertools.count)
    _poller: asyncio.Task[None] | None = None

    def usable(self) -> list[Replica]:
        return [
            r
            for r in self.replicas
            if r.healthy and r.replay_lsn is not None and r.replay_lsn >= self.needed_lsn
        ]

    def pick(self) -> Replica | None:
        """The next usable replica in turn, or None (then the primary serves)."""
        usable = self.usable()
        if not usable:
            return None
        return usable[next(self._turn) % len(usable)]

    @contextlib.asynccontextmanager
    async def read_connection(self, primary_only: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection for a read: a replica's when one is usable, else the primary's. A
        replica that cannot give one is marked down and the primary serves; one that breaks
        while in use raises :class:`ReplicaFailed` (the request is then retried)."""
        replica = None if primary_only else self.pick()
        if replica is None:
            async with self.primary.connection() as conn:
                yield conn
            return
        try:
            conn = await replica.pool.getconn()
        except (PoolTimeout, psycopg.OperationalError) as exc:
            self.mark_down(replica, exc)
            async with self.primary.connection() as conn:
                yield conn
            return
        try:
            yield conn
        except psycopg.OperationalError as exc:
            if not (conn.broken or conn.closed):
                raise  # a query error (a timeout, say) that the primary would give too
            self.mark_down(replica, exc)
            raise ReplicaFailed(replica.name) from exc
        finally:
            await replica.pool.putconn(conn)

    def mark_down(self, replica: Replica, exc: BaseException) -> None:
        if replica.healthy:
            log.warning("replica %s is down (%s); reading on the primary", replica.name, exc)
        replica.healthy = False
        replica.error = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "down"

    async def note_change(self) -> None:
        """A change was heard: replicas must replay up to the primary's position now before
        they serve again."""
        if not self.replicas:
            return
        try:
            async with self.primary.connection() as conn:
                cur = await conn.execute("SELECT pg_current_wal_lsn()::text")
                row = await cur.fetchone()
        except psycopg.Error:
            self.needed_lsn = 1 << 63  # unknown: every read on the primary until a poll
            return
        value = lsn_value(row[0] if row else None) or 0
        self.needed_lsn = max(self.needed_lsn, value)
        self.primary_lsn = value

    async def poll_once(self) -> None:
        """Read every replica's state (and the primary's position, for the lag in bytes)."""
        with contextlib.suppress(psycopg.Error, PoolTimeout):
            async with self.primary.connection() as conn:
                cur = await conn.execute("SELECT pg_current_wal_lsn()::text")
                row = await cur.fetchone()
                self.primary_lsn = lsn_value(row[0] if row else None)
        if self.needed_lsn == 1 << 63 and self.primary_lsn is not None:
            self.needed_lsn = self.primary_lsn
        await asyncio.gather(*(self._poll(r) for r in self.replicas))

    async def _poll(self, replica: Replica) -> None:
        try:
            async with replica.pool.connection(timeout=2.0) as conn:
                cur = await conn.execute(
                    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
                    " CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
                    " ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END"
                )
                row = await cur.fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            self.mark_down(replica, exc)
            return
        assert row is not None  # a SELECT without FROM returns one row
        in_recovery, replay, lag = row
        replica.checked = time.monotonic()
        if not in_recovery:
            # promoted (or not a standby at all): it no longer follows the primary
            replica.healthy, replica.error = False, "not in recovery: not a standby"
            return
        if not replica.healthy:
            log.info("replica %s is back", replica.name)
        replica.healthy, replica.error = True, None
        replica.replay_lsn = lsn_value(replay)
        replica.lag_s = None if lag is None else float(lag)

    async def run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(POLL_S)

    async def open(self) -> None:
        for r in self.replicas:
            await r.pool.open(wait=False)
        if self.replicas:
            await self.poll_once()
            self._poller = asyncio.create_task(self.run())

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for r in self.replicas:
            await r.pool.close()

    def health(self) -> list[dict[str, Any]]:
        return [r.summary(self.primary_lsn) for r in self.replicas]


class RetryReadsOnPrimary:
    """ASGI middleware: a GET or HEAD whose replica broke before any byte of the answer was
    sent runs again, whole, on the primary (a read has no body to replay and no effect)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in READ_METHODS:
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except ReplicaFailed:
            if started:
                raise
            state = scope.setdefault("state", {})
            state[PRIMARY_ONLY] = True
            await self.app(scope, receive, send)

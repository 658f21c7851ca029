"""One cache for answers that only change when their tables change: per-process, checked with
one small "fingerprint" query per call, and capped in age (against edits made outside the
service) and in entries (least recently used first).

Used for the summaries that only imports change (grids, districts) and for the pipe network
graphs. Requests that miss together wait for one computation; it is safe across event loops
(each test client or worker thread brings its own).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from psycopg import AsyncConnection


class FingerprintCache:
    """``await cache.get(conn, key, compute)``: the cached value while ``fingerprint_sql``
    answers as it did when the value was computed, else ``await compute()``."""

    def __init__(
        self,
        fingerprint_sql: str,
        max_age_s: float,
        max_entries: int,
        pass_fingerprint: bool = False,
    ) -> None:
        self.fingerprint_sql = fingerprint_sql
        self.pass_fingerprint = pass_fingerprint
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self.entries: OrderedDict[Hashable, tuple[tuple, float, Any]] = OrderedDict()
        self._guard = threading.Lock()
        self._locks: dict[tuple[int, Hashable], asyncio.Lock] = {}
        self.hits = self.misses = 0

    async def fingerprint(self, conn: AsyncConnection) -> tuple:
        cur = await conn.execute(self.fingerprint_sql)
        return tuple(await cur.fetchone() or ())

    async def get(
        self, conn: AsyncConnection, key: Hashable, compute: Callable[..., Awaitable[Any]]
    ) -> Any:
        """``compute()``, or ``compute(fingerprint)`` when the cache was made with
        ``pass_fingerprint`` (to key a copy kept elsewhere by the same state)."""
        fingerprint = await self.fingerprint(conn)
        found, value = self._fresh(key, fingerprint)
        if found:
            return value
        with self._guard:
            lock = self._locks.setdefault((id(asyncio.get_running_loop()), key), asyncio.Lock())
        async with lock:  # one computation per key at a time; the others wait for it
            found, value = self._fresh(key, fingerprint)
            if found:
                return value
            self.misses += 1
            value = await (compute(fingerprint) if self.pass_fingerprint else compute())
            # a value computed elsewhere earlier (a graph another worker built) ages from then
            self._put(key, fingerprint, value, float(getattr(value, "age_s", 0.0)))
            return value

    def clear(self) -> None:
        with self._guard:
            self.entries.clear()

    def _fresh(self, key: Hashable, fingerprint: tuple) -> tuple[bool, Any]:
        with self._guard:
            entry = self.entries.get(key)
            if entry and entry[0] == fingerprint and time.monotonic() - entry[1] < self.max_age_s:
                self.hits += 1
                self.entries.move_to_end(key)
                return True, entry[2]
            return False, None

    def _put(self, key: Hashable, fingerprint: tuple, value: Any, age_s: float = 0.0) -> None:
        with self._guard:
            self.entries[key] = (fingerprint, time.monotonic() - age_s, value)
            self.entries.move_to_end(key)
            while len(self.entries) > self.max_entries:
                old, _ = self.entries.popitem(last=False)
                for lock_key in [k for k in self._locks if k[1] == old]:
                    if not self._locks[lock_key].locked():
                        del self._locks[lock_key]

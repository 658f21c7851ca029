"""Redis tile cache shared by every API worker and host, forgetting tiles by bounding box.

Layout, under a prefix naming the PostgreSQL server, database and schema (two deployments on
one Redis never mix):

- ``{p}:t:{z}:{layers}`` — one hash per layer set and zoom; field ``"x/y"`` holds the packed
  ETag, raw size and gzipped tile. Invalidation SCANs these few keys, keeps those of the changed
  tables and deletes the fields whose tile (with the MVT buffer) meets the change's box. Redis
  evicting a whole hash only causes misses, never a stale tile.
- ``{p}:gen`` — the generation: a random value, deleted by every invalidation and created anew
  by the next ``token()``, which a request takes before it renders a tile; the put script
  stores the tile only if the generation is still that value (atomically, in Lua), so a tile
  rendered from pre-change rows is never stored after the change was applied. Values never
  repeat and a missing key refuses every put, so eviction cannot fake a match, and deleting
  works even when Redis is out of memory.
- ``{p}:seq`` — the last ``change_seq`` number applied. Tiles outlive API restarts, so when a
  listener (re)connects and this differs from the database's sequence, changes were made while
  nobody listened and the namespace is dropped.

Redis being unreachable never fails a request: tiles are rendered and served uncached, and a
change that could not be applied drops the namespace once Redis answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import struct
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from cimtwin.spatial.catalogue import BY_ID
from cimtwin.tiles.cache import (
    Box,
    CachedTile,
    Key,
    layer_tables,
    meets,
    parse_change,
    tile_bounds,
    tile_range,
)
from cimtwin.tiles.mvt import TileRequest

if TYPE_CHECKING:
    from cimtwin.settings import Settings

log = logging.getLogger(__name__)

FORMAT = "v1"  # bump when the packed value changes: old entries are then simply never read
RETRY_AFTER_S = 2.0  # after a Redis failure, requests skip Redis this long (no per-tile stalls)
TIMEOUT_S = 1.0
MAX_FIELDS_CHECKED = 200_000  # a change touching more tiles of one hash drops the whole hash
CHUNK = 1000
_HEADER = struct.Struct("<IB")  # raw size, ETag length

# the token: the current generation, created when missing (a missing key never matches a put)
_TOKEN = """
local g = redis.call('GET', KEYS[1])
if not g then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return g
"""
# store only if no invalidation happened since the token was taken
_PUT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0
"""
# remember the highest change number applied; return the one stored before
_SEQ = """
local old = redis.call('GET', KEYS[1])
if not old or tonumber(ARGV[1]) > tonumber(old) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return old
"""


def _new_generation() -> str:
    return os.urandom(12).hex()


def _glob_escape(s: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", s)


class RedisTileCache:
    """Tiles in Redis for all workers; each worker's listener applies every change (deleting
    the same fields twice is harmless)."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.prefix = f"cimtwin:{FORMAT}:{namespace}"
        self.gen_key = f"{self.prefix}:gen"
        self.seq_key = f"{self.prefix}:seq"
        self._hash_prefix = f"{self.prefix}:t:"
        self._match = _glob_escape(self._hash_prefix) + "*"
        self.redis: aioredis.Redis | None = None
        self.hits = self.misses = self.evicted = 0
        self.live = False  # the change listener hears changes and Redis has been checked
        self.stale = False  # a change could not be applied: drop the namespace before use
        self._down_until = 0.0
        self.applied_seq: int | None = None  # highest change number this worker applied
        self._lock: asyncio.Lock | None = None
        self.last_error: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisTileCache:
        """Namespace: PostgreSQL host, port, database and schema."""
        from cimtwin.db.engine import sqlalchemy_url

        u = sqlalchemy_url(settings.database_url)
        namespace = f"{u.host or 'localhost'}:{u.port or 5432}/{u.database}/{settings.db_schema}"
        return cls(str(settings.tile_cache_url), namespace)

    @property
    def enabled(self) -> bool:
        return True

    @property
    def where(self) -> str:
        """The Redis URL without its password, for logs and /healthz."""
        return re.sub(r"//[^@/]*@", "//", self.url)

    async def open(self) -> None:
        self.redis = aioredis.from_url(
            self.url,
            socket_connect_timeout=TIMEOUT_S,
            socket_timeout=TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        self._token_script = self.redis.register_script(_TOKEN)
        self._put_script = self.redis.register_script(_PUT)
        self._seq_script = self.redis.register_script(_SEQ)
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        self.live = False
        if self.redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.redis.aclose()
            self.redis = None

    # --- request path -----------------------------------------------------------------------

    def _usable(self) -> bool:
        return (
            self.live
            and self.redis is not None
            and not self.stale
            and time.monotonic() >= self._down_until
        )

    def _failed(self, exc: BaseException) -> None:
        """Note a Redis failure; requests go uncached for a while instead of waiting on it."""
        now = time.monotonic()
        if now >= self._down_until:
            log.warning(
                "tile cache: Redis at %s failed (%s: %s); serving tiles uncached",
                self.where,
                type(exc).__name__,
                exc,
            )
        self._down_until = now + RETRY_AFTER_S
        self.last_error = f"{type(exc).__name__}: {exc}"

    async def _ready(self) -> bool:
        if self.stale and self.live and self.redis is not None:
            await self._resync()
        return self._usable()

    def _hash(self, layers: tuple[str, ...], z: int) -> str:
        return f"{self._hash_prefix}{z}:{','.join(layers)}"

    async def get(self, key: Key) -> CachedTile | None:
        layers, z, x, y = key
        raw = None
        if await self._ready():
            assert self.redis is not None  # _ready() is only true with a client
            try:
                raw = await self.redis.hget(self._hash(layers, z), f"{x}/{y}")
            except RedisError as exc:
                self._failed(exc)
        entry = _unpack(_reply_bytes(raw), layers, z, x, y) if raw else None
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        return entry

    async def token(self) -> bytes | None:
        if not await self._ready():
            return None
        try:
            return await self._token_script(keys=[self.gen_key], args=[_new_generation()])
        except RedisError as exc:
            self._failed(exc)
            return None

    async def put(self, key: Key, entry: CachedTile, token: bytes | None) -> None:
        if token is None or not self._usable():
            return
        layers, z, x, y = key
        etag = entry.etag.encode()
        packed = _HEADER.pack(entry.raw_size, len(etag)) + etag + entry.body_gz
        try:
            await self._put_script(
                keys=[self.gen_key, self._hash(layers, z)], args=[token, f"{x}/{y}", packed]
            )
        except RedisError as exc:
            self._failed(exc)

    # --- changes ------------------------------------------------------------------------------

    async def apply_change(self, payload: str) -> int:
        """Delete the tiles a ``cimtwin_change`` notification touches; on failure remember to
        drop the namespace once Redis answers."""
        change = parse_change(payload)
        if self.redis is None or self.stale:
            return 0  # the namespace is dropped before this worker uses Redis again
        try:
            if change is None:
                log.warning(
                    "ignoring malformed change notification %r; dropping the cache", payload
                )
                n = await self.clear()
            else:
                n = await self.invalidate(change.tables, change.bbox)
            if change is not None and change.seq is not None:
                before = await self._seq_script(keys=[self.seq_key], args=[change.seq])
                if (
                    before is not None
                    and self.applied_seq is not None
                    and int(before) < self.applied_seq
                ):
                    log.warning(
                        "tile cache: Redis forgot change %d (restored or failed over); "
                        "dropping the cache",
                        self.applied_seq,
                    )
                    n += await self.clear()
                self.applied_seq = max(self.applied_seq or 0, change.seq)
        except RedisError as exc:
            self._failed(exc)
            self.stale = True
            return 0
        return n

    async def invalidate(self, tables: set[str] | frozenset[str], bbox: Box | None) -> int:
        """Delete tiles of ``tables`` meeting ``bbox`` (lon/lat; None: everywhere)."""
        assert self.redis is not None
        # first: a put whose token predates this no longer matches, wherever the scan is
        await self.redis.unlink(self.gen_key)
        n = 0
        async for raw in self.redis.scan_iter(match=self._match, count=1000):
            hkey = raw.decode()
            z, layers = self._parse_hash(hkey)
            if layers is not None and not layer_tables(layers) & tables:
                continue
            fields = (
                None
                if bbox is None or layers is None
                else await self._fields_meeting(hkey, z, bbox)
            )
            if fields is None:  # everywhere, unknown layers, or too many to check one by one
                n += await self.redis.hlen(hkey)
                await self.redis.unlink(hkey)
                continue
            for i in range(0, len(fields), CHUNK):
                n += await self.redis.hdel(hkey, *fields[i : i + CHUNK])
        self.evicted += n
        return n

    def _parse_hash(self, hkey: str) -> tuple[int, tuple[str, ...] | None]:
        z, _, names = hkey[len(self._hash_prefix) :].partition(":")
        layers = tuple(names.split(","))
        if not z.isdigit() or not all(layer in BY_ID for layer in layers):
            return 0, None
        return int(z), layers

    async def _fields_meeting(self, hkey: str, z: int, bbox: Box) -> list[str] | None:
        """Fields of ``hkey`` whose tiles meet ``bbox``: the box's tile range when that is the
        smaller set, else the hash's own fields; None when both are too many."""
        x0, y0, x1, y1 = tile_range(z, bbox)
        candidates = max(0, x1 - x0 + 1) * max(0, y1 - y0 + 1)
        assert self.redis is not None  # called by invalidate(), which has a client
        size = await self.redis.hlen(hkey)
        if size == 0 or candidates == 0:
            return []
        if min(candidates, size) > MAX_FIELDS_CHECKED:
            return None
        cells: Iterator[tuple[int, ...]]
        if candidates <= size:
            cells = ((x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1))
        else:
            cells = (
                tuple(map(int, _reply_bytes(f).split(b"/"))) for f in await self.redis.hkeys(hkey)
            )
        return [f"{x}/{y}" for x, y in cells if meets(tile_bounds(TileRequest(z, x, y)), bbox)]

    async def clear(self) -> int:
        """Drop every tile of this namespace."""
        assert self.redis is not None
        await self.redis.unlink(self.gen_key)
        n, batch = 0, []
        async for raw in self.redis.scan_iter(match=self._match, count=1000):
            batch.append(raw)
            if len(batch) >= CHUNK:
                n += await self._drop(batch)
                batch = []
        if batch:
            n += await self._drop(batch)
        self.evicted += n
        return n

    async def _drop(self, keys: list[bytes]) -> int:
        assert self.redis is not None  # called by clear(), which has a client
        pipe = self.redis.pipeline(transaction=False)
        for k in keys:
            pipe.hlen(k)
        pipe.unlink(*keys)
        *sizes, _ = await pipe.execute()
        return sum(sizes)

    async def _resync(self) -> None:
        """After a change could not be applied: drop everything once Redis answers."""
        assert self._lock is not None
        async with self._lock:
            if not self.stale or time.monotonic() < self._down_until:
                return
            try:
                n = await self.clear()
            except RedisError as exc:
                self._failed(exc)
                return
            self.stale = False
            log.warning(
                "tile cache: Redis answers again; dropped %d tiles that may have missed a change", n
            )

    async def on_listen(self, db_seq: int | None) -> None:
        """Drop the namespace unless Redis has applied exactly the database's last change."""
        self.applied_seq = db_seq
        if self.redis is None:
            return
        try:
            stored = await self.redis.get(self.seq_key)
            if db_seq is None or stored is None or int(stored) != db_seq:
                n = await self.clear()
                log.info(
                    "tile cache: Redis applied change %s, the database is at %s: dropped %d tiles",
                    _reply_bytes(stored).decode() if stored else None,
                    db_seq,
                    n,
                )
                if db_seq is not None:
                    await self.redis.set(self.seq_key, db_seq)
            self.stale = False
        except RedisError as exc:
            self._failed(exc)
            self.stale = True
        self.live = True

    async def on_listener_lost(self) -> None:
        self.live = False  # bypass Redis until the listener is back and has checked it

    async def health(self) -> tuple[str, bool]:
        if self.redis is None:
            return f"redis {self.where}: not connected", False
        try:
            await asyncio.wait_for(self.redis.ping(), TIMEOUT_S * 2)
        except (RedisError, TimeoutError) as exc:
            self._failed(exc)
            return (
                f"redis {self.where} unreachable ({self.last_error}); tiles served uncached",
                False,
            )
        self._down_until = 0.0
        if not self.live:
            return f"redis {self.where}: bypassed until the change listener connects", False
        return f"redis {self.where}", True


def _reply_bytes(reply: bytes | str) -> bytes:
    """A Redis reply as the bytes it is: the client is made without ``decode_responses``
    (redis-py types replies ``bytes | str`` to cover both settings)."""
    assert isinstance(reply, bytes), "the Redis client must not decode responses"
    return reply


def _unpack(raw: bytes, layers: tuple[str, ...], z: int, x: int, y: int) -> CachedTile | None:
    if len(raw) < _HEADER.size:
        return None
    size, n = _HEADER.unpack_from(raw)
    start = _HEADER.size + n
    if len(raw) < start:
        return None
    return CachedTile(
        body_gz=raw[start:],
        etag=raw[_HEADER.size : start].decode(),
        raw_size=size,
        tables=layer_tables(layers),
        bounds=tile_bounds(TileRequest(z, x, y)),
    )

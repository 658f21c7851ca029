"""Tile cache that forgets exactly the tiles a data change touches: the interface, the
in-memory backend, and the listener that feeds changes to either backend.

Imports and incident edits announce what they changed on the ``cimtwin_change`` channel
(tables, bounding box in the storage CRS, and a number from the ``change_seq`` sequence);
each API process listens and evicts the cached tiles of those tables whose area (with the MVT
buffer) meets the box. Time is not a factor: an unchanged tile stays valid.

A tile rendered from data read before a change but stored after the change was applied would
stay stale for good, so a request takes ``token()`` before it renders and ``put`` stores
nothing when an invalidation happened in between. The Redis backend (shared by all workers) is
in :mod:`cimtwin.tiles.redis_cache`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
from isal import igzip

from cimtwin.spatial import crs as crs_mod
from cimtwin.spatial.base import SCHEMA
from cimtwin.spatial.catalogue import BY_ID
from cimtwin.spatial.provenance import CHANGE_CHANNEL
from cimtwin.tiles.mvt import BUFFER, EXTENT, TileRequest

if TYPE_CHECKING:
    from cimtwin.settings import Settings

log = logging.getLogger(__name__)
SEQUENCE = "change_seq"
LISTENER_NAME = "cimtwin change listener"  # application_name, visible in pg_stat_activity

Key = tuple[tuple[str, ...], int, int, int]
Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class CachedTile:
    body_gz: bytes
    etag: str
    raw_size: int
    tables: frozenset[str]
    bounds: Box  # lon/lat with the buffer


@dataclass(frozen=True)
class Change:
    """One parsed ``cimtwin_change`` notification; ``bbox`` None means everywhere."""

    tables: frozenset[str]
    bbox: Box | None
    seq: int | None


@lru_cache(maxsize=1024)
def layer_tables(layers: tuple[str, ...]) -> frozenset[str]:
    """Tables a tile of these layers is drawn from (what invalidation matches on)."""
    return frozenset(BY_ID[layer].table for layer in layers)


def gzip_tile(body: bytes) -> bytes:
    """gzip for the wire: ISA-L at level 1 takes about a quarter of the CPU of zlib level 1
    for as small a file (35 % of an MVT's size against 34 %), and compression is the
    largest single cost of serving an uncached tile after the query itself."""
    return igzip.compress(body, compresslevel=1, mtime=0) if body else b""


def gunzip_tile(body_gz: bytes) -> bytes:
    """The tile for a client that did not ask for gzip."""
    return igzip.decompress(body_gz) if body_gz else b""


def tile_bounds(tile: TileRequest) -> Box:
    """Lon/lat area a tile's content comes from: its bounds widened by the MVT buffer."""
    w, s, e, n = tile.lonlat_bounds()
    pad_x, pad_y = (e - w) * BUFFER / EXTENT, (n - s) * BUFFER / EXTENT
    return w - pad_x, s - pad_y, e + pad_x, n + pad_y


def make_entry(layers: tuple[str, ...], tile: TileRequest, body: bytes) -> CachedTile:
    return CachedTile(
        body_gz=gzip_tile(body),
        etag='"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"',
        raw_size=len(body),
        tables=layer_tables(layers),
        bounds=tile_bounds(tile),
    )


def meets(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def tile_range(z: int, bbox: Box) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the tiles at ``z`` that may meet ``bbox`` (one tile of slack each side
    covers the buffer; callers check each candidate with :func:`tile_bounds` exactly)."""
    n = 1 << z

    def col(lon: float) -> int:
        return math.floor((lon + 180) / 360 * n)

    def row(lat: float) -> int:
        lat = max(-85.0511, min(85.0511, lat))
        return math.floor((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)

    w, s, e, nn = bbox
    return (max(0, col(w) - 1), max(0, row(nn) - 1), min(n - 1, col(e) + 1), min(n - 1, row(s) + 1))


def parse_change(payload: str) -> Change | None:
    """A notification's tables, lon/lat box and sequence number; None when malformed."""
    try:
        change = json.loads(payload)
        tables = frozenset(change["tables"])
        box = change.get("bbox")
        seq = change.get("seq")
        seq = int(seq) if seq is not None else None
    except (ValueError, KeyError, TypeError):
        return None
    lonlat: Box | None = None
    if box and len(box) == 4 and all(isinstance(v, int | float) for v in box):
        tr = crs_mod.transformer(crs_mod.storage_srid(), 4326)
        west, south, east, north = tr.transform_bounds(*box)
        lonlat = (west, south, east, north)
        if not all(math.isfinite(v) for v in lonlat):
            lonlat = None  # outside the CRS area: drop the tables' tiles everywhere
    return Change(tables, lonlat, seq)


class TileCache(Protocol):
    """What the tile route and the change listener need from a cache backend.

    ``token()`` is taken before a tile is rendered and handed to ``put``, which stores nothing
    when an invalidation happened since: a tile rendered from pre-change rows is never cached
    after the change was applied.
    """

    hits: int
    misses: int

    @property
    def enabled(self) -> bool: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, key: Key) -> CachedTile | None: ...

    async def token(self) -> Any: ...

    async def put(self, key: Key, entry: CachedTile, token: Any) -> None: ...

    async def apply_change(self, payload: str) -> int: ...

    async def on_listen(self, db_seq: int | None) -> None:
        """The listener is (re)connected and hears every change from now on; ``db_seq`` is the
        database's ``change_seq`` value, read after LISTEN."""

    async def on_listener_lost(self) -> None:
        """Changes may go unheard until the next ``on_listen``."""

    async def health(self) -> tuple[str, bool]:
        """A one-line description for /healthz and whether the cache works as configured."""


#: bytes one OrderedDict slot takes beyond its key and value: the dict's entry and index
#: (amortised over its resizes) and the ordering node; measured with tracemalloc on CPython
#: 3.11 (about 93 bytes averaged over 60 000 puts)
SLOT_BYTES = 100


def entry_cost(key: Key, entry: CachedTile) -> int:
    """What keeping ``entry`` under ``key`` costs the process, in bytes: the key tuple, its
    layer tuple, names and numbers, the entry object and each of its fields, and the slot.

    An empty tile's gzip body is zero bytes, so counting only the body let 60 000 empty
    tiles grow a server by 42 MB while the cache reported 0. An empty tile is counted at
    about 1 000 bytes where tracemalloc measures 730: objects several entries share (the
    tables set, interned names) are counted in each, so the figure errs high, never low."""
    layers, z, x, y = key
    size = SLOT_BYTES + sys.getsizeof(key) + sys.getsizeof(layers)
    size += sum(sys.getsizeof(name) for name in layers)
    size += sys.getsizeof(z) + sys.getsizeof(x) + sys.getsizeof(y)
    size += sys.getsizeof(entry) + sys.getsizeof(entry.body_gz) + sys.getsizeof(entry.etag)
    size += sys.getsizeof(entry.raw_size) + sys.getsizeof(entry.tables)
    size += sum(sys.getsizeof(t) for t in entry.tables)
    size += sys.getsizeof(entry.bounds) + sum(sys.getsizeof(v) for v in entry.bounds)
    return size


class MemoryTileCache:
    """Per-process LRU by bytes, each entry counted at its full cost (:func:`entry_cost`, not
    only its gzip body); ``invalidate`` drops the tiles of some tables inside a box."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[Key, tuple[CachedTile, int]] = OrderedDict()  # entry, cost
        self.size = 0
        self.hits = self.misses = self.evicted = 0  # evicted: dropped by data changes
        self.pushed_out = 0  # dropped to stay within max_bytes (least recently used first)
        self.generation = 0  # bumped by every invalidation; the put() token

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self.clear()

    async def get(self, key: Key) -> CachedTile | None:
        held = self.entries.get(key)
        if held is None:
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return held[0]

    async def token(self) -> int:
        return self.generation

    async def put(self, key: Key, entry: CachedTile, token: int) -> None:
        cost = entry_cost(key, entry)
        if token != self.generation or not self.enabled or cost > self.max_bytes:
            return
        old = self.entries.pop(key, None)
        if old:
            self.size -= old[1]
        self.entries[key] = (entry, cost)
        self.size += cost
        while self.size > self.max_bytes:
            _, (_, dropped) = self.entries.popitem(last=False)
            self.size -= dropped
            self.pushed_out += 1

    def invalidate(self, tables: set[str] | frozenset[str], bbox: Box | None) -> int:
        """Forget tiles of ``tables`` meeting ``bbox`` (lon/lat); None means everywhere."""
        self.generation += 1
        doomed = [
            k
            for k, (v, _) in self.entries.items()
            if v.tables & tables and (bbox is None or meets(v.bounds, bbox))
        ]
        for k in doomed:
            self.size -= self.entries.pop(k)[1]
        self.evicted += len(doomed)
        return len(doomed)

    def clear(self) -> int:
        self.generation += 1
        n = len(self.entries)
        self.entries.clear()
        self.size = 0
        return n

    async def apply_change(self, payload: str) -> int:
        """Handle one ``cimtwin_change`` notification (JSON: tables, bbox in storage CRS)."""
        change = parse_change(payload)
        if change is None:
            log.warning("ignoring malformed change notification %r; clearing the cache", payload)
            return self.clear()
        return self.invalidate(change.tables, change.bbox)

    async def on_listen(self, db_seq: int | None) -> None:
        self.clear()  # tiles cached while nobody listened may be stale

    async def on_listener_lost(self) -> None:
        self.clear()

    async def health(self) -> tuple[str, bool]:
        if not self.enabled:
            return "off", True
        return (
            f"memory: {len(self.entries)} tiles, {self.size / 2**20:.1f} of "
            f"{self.max_bytes / 2**20:.0f} MiB",
            True,
        )


def tile_cache_for(settings: Settings) -> TileCache:
    """The configured backend: Redis when ``tile_cache_url`` is set, else in-memory."""
    if settings.tile_cache_url:
        from cimtwin.tiles.redis_cache import RedisTileCache

        return RedisTileCache.from_settings(settings)
    return MemoryTileCache(settings.tile_cache_mb * 1024 * 1024)


async def _change_seq(conn: psycopg.AsyncConnection, schema: str) -> int | None:
    """The last number ``change_seq`` handed out (0 if none); None before migration 0004."""
    try:
        cur = await conn.execute(
            f'SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM "{schema}".{SEQUENCE}'
        )
        row = await cur.fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return int(row[0]) if row else None


async def listen_for_changes(
    dsn: str,
    cache: TileCache,
    ready: asyncio.Event | None = None,
    schema: str = SCHEMA,
    on_change: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Keep a LISTEN connection open and apply every change to ``cache``; reconnects.
    ``on_change`` runs before the cache drops a change's tiles (replicas must catch up
    before they serve the tiles again)."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, application_name=LISTENER_NAME
            ) as conn:
                await conn.execute(f"LISTEN {CHANGE_CHANNEL}")
                # read after LISTEN: a change after this read is heard, one before is counted
                await cache.on_listen(await _change_seq(conn, schema))
                if ready:
                    ready.set()
                async for note in conn.notifies():
                    if on_change is not None:
                        await on_change()
                    n = await cache.apply_change(note.payload)
                    log.info("data change on %s: %d cached tiles dropped", note.payload[:200], n)
        except asyncio.CancelledError:
            raise
        except psycopg.Error as exc:
            log.warning("change listener lost its connection (%s); retrying", exc)
            # while we cannot hear changes, cached tiles may go stale
            await cache.on_listener_lost()
            await asyncio.sleep(2)

"""The in-memory tile cache counts each entry at its real cost, so empty tiles (a zero-byte
gzip body) fill the budget and are evicted like any other, and /healthz tells the truth."""

from __future__ import annotations

import asyncio
import gc
import re
import tracemalloc

from fastapi.testclient import TestClient

from cimtwin.settings import Settings
from cimtwin.tiles.cache import MemoryTileCache, entry_cost, layer_tables, make_entry
from cimtwin.tiles.mvt import TileRequest

N = 60_000
PATH_LAYERS = "rooms,"
Z = 15  # below the rooms layer's minzoom (16): every tile is empty and needs no query


def _empty_puts(cache: MemoryTileCache, n: int) -> None:
    """``n`` distinct empty tiles put as the tile route does (layer names parsed anew)."""

    async def run() -> None:
        for i in range(n):
            layers = (PATH_LAYERS.split(",")[0],)  # a new string each time, as from a URL
            x, y = 10_000 + i % 2_000, 10_000 + i // 2_000
            key = (layers, Z, x, y)
            await cache.put(key, make_entry(layers, TileRequest(Z, x, y), b""), cache.generation)

    asyncio.run(run())


def test_empty_tiles_fill_the_budget_and_are_evicted() -> None:
    budget = 1 << 20
    cache = MemoryTileCache(budget)
    _empty_puts(cache, N)
    assert 0 < cache.size <= budget
    assert 0 < len(cache.entries) < N
    assert cache.pushed_out == N - len(cache.entries)
    assert cache.size == sum(cost for _, cost in cache.entries.values())
    described, ok = asyncio.run(cache.health())
    mib = float(re.search(r"([\d.]+) of", described).group(1))  # type: ignore[union-attr]
    assert ok and mib > 0.5, described


def test_reported_size_is_close_to_the_memory_the_entries_take() -> None:
    cache = MemoryTileCache(1 << 30)  # no eviction: every entry stays
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _empty_puts(cache, N)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(cache.entries) == N
    assert grown > 0
    ratio = cache.size / grown
    assert 0.5 <= ratio <= 2.0, (cache.size, grown)


def test_invalidate_and_clear_give_back_each_entry_cost() -> None:
    cache = MemoryTileCache(1 << 24)
    _empty_puts(cache, 100)
    layers = ("rooms",)
    key = (layers, Z, 10_000, 10_000)
    big = make_entry(layers, TileRequest(Z, 10_000, 10_000), bytes(range(256)) * 400)
    asyncio.run(cache.put(key, big, cache.generation))  # replaces an empty one
    assert cache.size == sum(cost for _, cost in cache.entries.values())
    assert cache.entries[key][1] == entry_cost(key, big) > len(big.body_gz)
    cache.invalidate(layer_tables(layers), None)
    assert cache.size == 0 and not cache.entries
    _empty_puts(cache, 10)
    cache.clear()
    assert cache.size == 0


def test_empty_tile_requests_stay_within_the_configured_budget(
    settings: Settings, loaded_sample
) -> None:
    from cimtwin.api.app import create_app

    n = 3_000  # 1 MiB holds about 1 400 empty tiles
    with TestClient(create_app(settings.model_copy(update={"tile_cache_mb": 1}))) as client:
        for i in range(n):
            r = client.get(f"/tiles/rooms/{Z}/{20_000 + i}/{14_000}.mvt")
            assert r.status_code == 204
        cache = client.app.state.tile_cache  # type: ignore[attr-defined]
        assert isinstance(cache, MemoryTileCache)
        assert 0 < cache.size <= 1 << 20 and 0 < len(cache.entries) < n
        health = client.get("/healthz").json()["tile_cache"]
        tiles, mib = re.match(r"memory: (\d+) tiles, ([\d.]+) of 1 MiB", health).groups()  # type: ignore[union-attr]
        assert int(tiles) == len(cache.entries) and float(mib) > 0.5, health

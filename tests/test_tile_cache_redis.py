"""The Redis tile cache against a real, private redis-server: shared by two app instances (two
workers), invalidated by bounding box, race-free puts, stale tiles dropped across restarts and
listener reconnects, and tiles still served when Redis is stopped or hangs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mapbox_vector_tile
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from cimtwin.api.app import create_app
from cimtwin.settings import Settings
from cimtwin.tiles.cache import LISTENER_NAME, make_entry
from cimtwin.tiles.mvt import WEB_MERCATOR, TileRequest
from cimtwin.tiles.redis_cache import RETRY_AFTER_S, RedisTileCache

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server not installed (scripts/setup.sh installs it)"
)

STATION = (114.02389, 22.61194)


class RedisServer:
    """A private redis-server on a free loopback port, data only in memory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                str(REDIS_SERVER),
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
            ],
            stdout=(self.workdir / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError((self.workdir / "redis.log").read_text()) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test left it paused
            self.proc.terminate()
            self.proc.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def shared(redis_server: RedisServer, settings: Settings, loaded_sample) -> Settings:
    """Settings pointing at the module's Redis, emptied before each test."""
    redis_server.client().flushall()
    return settings.model_copy(update={"tile_cache_url": redis_server.url})


def tile_at(z: int, lon: float = STATION[0], lat: float = STATION[1]) -> tuple[int, int, int]:
    t = WEB_MERCATOR.tile(lon, lat, z)
    return t.z, t.x, t.y


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def db_seq(engine: Engine) -> int:
    with engine.connect() as c:
        return c.execute(text("SELECT last_value FROM cim.change_seq")).scalar()


def open_incident(engine: Engine) -> tuple[int, tuple[int, int, int]]:
    with engine.connect() as c:
        iid, lon, lat = c.execute(
            text(
                "SELECT id, ST_X(ST_Transform(geom, 4326)), ST_Y(ST_Transform(geom, 4326)) "
                "FROM cim.incident WHERE status NOT IN ('resolved','closed') ORDER BY id LIMIT 1"
            )
        ).one()
    return iid, tile_at(16, lon, lat)


def flip_severity(engine: Engine, iid: int) -> int:
    with engine.begin() as c:
        return c.execute(
            text(
                "UPDATE cim.incident SET severity = 5 - severity WHERE id = :i RETURNING severity"
            ),
            {"i": iid},
        ).scalar()


def severity_in(body: bytes, iid: int) -> int:
    feats = mapbox_vector_tile.decode(body)["incidents"]["features"]
    return {f["id"]: f["properties"] for f in feats}[iid]["severity"]


def cache_of(client: TestClient) -> RedisTileCache:
    cache = client.app.state.tile_cache
    assert isinstance(cache, RedisTileCache)
    return cache


def test_two_workers_share_one_cache(
    shared: Settings, redis_server: RedisServer, database_url: str
) -> None:
    z, x, y = tile_at(16)
    url = f"/tiles/pipelines,components/{z}/{x}/{y}.mvt"
    r = redis_server.client()
    with TestClient(create_app(shared)) as a, TestClient(create_app(shared)) as b:
        ca, cb = cache_of(a), cache_of(b)
        assert ca.prefix == cb.prefix
        assert ca.prefix.endswith(f"/{database_url.rsplit('/', 1)[1]}/cim")  # db and schema
        misses = ca.misses
        first = a.get(url)
        assert first.status_code == 200 and ca.misses == misses + 1
        assert r.hexists(f"{ca.prefix}:t:{z}:pipelines,components", f"{x}/{y}")
        hits, misses = cb.hits, cb.misses
        again = b.get(url)
        assert (cb.hits, cb.misses) == (hits + 1, misses)  # rendered by a, served by b
        assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
        assert set(mapbox_vector_tile.decode(again.content)) == {"pipelines", "components"}
        assert b.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
        gz = b.get(url, headers={"Accept-Encoding": "gzip"})
        assert gz.headers["content-encoding"] == "gzip" and gz.content == first.content
        health = b.get("/healthz").json()
        assert health["status"] == "ok" and health["tile_cache"].startswith("redis")


def test_incident_edit_drops_its_tile_and_spares_the_others(
    shared: Settings, redis_server: RedisServer, engine: Engine
) -> None:
    iid, (z, x, y) = open_incident(engine)
    here, far = f"/tiles/incidents/{z}/{x}/{y}.mvt", f"/tiles/incidents/{z}/{x + 3}/{y + 3}.mvt"
    r = redis_server.client()
    with TestClient(create_app(shared)) as a, TestClient(create_app(shared)) as b:
        ca, cb = cache_of(a), cache_of(b)
        hkey = f"{ca.prefix}:t:{z}:incidents"
        before = a.get(here).content
        a.get(far)
        assert r.hexists(hkey, f"{x}/{y}") and r.hexists(hkey, f"{x + 3}/{y + 3}")
        severity = flip_severity(engine, iid)
        seq = db_seq(engine)
        # both workers' listeners applied the numbered change
        assert wait_for(lambda: (ca.applied_seq or 0) >= seq and (cb.applied_seq or 0) >= seq)
        assert int(r.get(ca.seq_key)) == seq
        assert not r.hexists(hkey, f"{x}/{y}")
        assert r.hexists(hkey, f"{x + 3}/{y + 3}")  # outside the change's box: kept
        hits = cb.hits
        b.get(far)
        assert cb.hits == hits + 1
        after = b.get(here).content
        assert after != before and severity_in(after, iid) == severity
        hits = ca.hits
        assert a.get(here).content == after and ca.hits == hits + 1  # the new tile is shared


def test_import_notification_drops_only_the_imported_tables(
    shared: Settings, redis_server: RedisServer, engine: Engine
) -> None:
    """What the import runner sends (notify_change with tables and box) reaches Redis."""
    z, x, y = tile_at(16)
    r = redis_server.client()
    with TestClient(create_app(shared)) as a:
        ca = cache_of(a)
        for layers in ("pipelines", "incidents", "pipelines,incidents"):
            assert a.get(f"/tiles/{layers}/{z}/{x}/{y}.mvt").status_code in (200, 204)
        w, s, e, n = TileRequest(z, x, y).lonlat_bounds()
        with engine.begin() as c:
            box = c.execute(
                text(
                    "SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM (SELECT "
                    "ST_Transform("
                    "ST_MakeEnvelope(:w, :s, :e, :n, 4326), 4547) AS b) t"
                ),
                {
                    "w": w + (e - w) / 3,
                    "s": s + (n - s) / 3,
                    "e": e - (e - w) / 3,
                    "n": n - (n - s) / 3,
                },
            ).one()
            seq = c.execute(
                text("SELECT cim.notify_change(CAST(:p AS jsonb))"),
                {
                    "p": json.dumps(
                        {
                            "kind": "pipelines",
                            "tables": ["pipeline_segment", "pipeline_node"],
                            "bbox": list(box),
                        }
                    )
                },
            ).scalar()
        assert wait_for(lambda: (ca.applied_seq or 0) >= seq)
        field = f"{x}/{y}"
        assert not r.hexists(f"{ca.prefix}:t:{z}:pipelines", field)
        assert not r.hexists(f"{ca.prefix}:t:{z}:pipelines,incidents", field)
        assert r.hexists(f"{ca.prefix}:t:{z}:incidents", field)


def test_put_refused_after_an_invalidation_since_the_token(redis_server: RedisServer) -> None:
    """Worker a takes a token, worker b applies a change (even one far from the tile), a's put
    stores nothing; same when the generation key is evicted in between."""
    redis_server.client().flushall()
    z, x, y = tile_at(16)
    elsewhere = json.dumps({"tables": ["incident"], "bbox": [400000, 2400000, 400010, 2400010]})

    async def scenario() -> None:
        a, b = RedisTileCache(redis_server.url, "race"), RedisTileCache(redis_server.url, "race")
        for cache in (a, b):
            await cache.open()
            await cache.on_listen(None)
        try:
            key1, key2 = (("incidents",), z, x, y), (("incidents",), z, x + 1, y)
            e1 = make_entry(("incidents",), TileRequest(z, x, y), b"tile one")
            e2 = make_entry(("incidents",), TileRequest(z, x + 1, y), b"tile two")
            token = await a.token()
            await a.put(key1, e1, token)
            got = await b.get(key1)
            assert got is not None and (got.etag, got.body_gz) == (e1.etag, e1.body_gz)

            token = await a.token()
            assert await b.apply_change(elsewhere) == 0  # dropped no cached tile ...
            await a.put(key2, e2, token)  # ... but the in-flight render is not stored
            assert await b.get(key2) is None
            assert await b.get(key1) is not None

            token = await a.token()
            await a.redis.delete(a.gen_key)  # evicted between token and put
            await a.put(key2, e2, token)
            assert await b.get(key2) is None

            await a.put(key2, e2, await a.token())  # no change in between: stored
            assert (await b.get(key2)).etag == e2.etag
        finally:
            for cache in (a, b):
                await cache.close()

    asyncio.run(scenario())


def test_changes_made_while_nobody_listened_drop_the_namespace(
    shared: Settings, redis_server: RedisServer, engine: Engine
) -> None:
    iid, (z, x, y) = open_incident(engine)
    here, far = f"/tiles/incidents/{z}/{x}/{y}.mvt", f"/tiles/incidents/{z}/{x + 3}/{y + 3}.mvt"
    r = redis_server.client()
    with TestClient(create_app(shared)) as a:
        before = a.get(here).content
        a.get(far)
        prefix, seq_key = cache_of(a).prefix, cache_of(a).seq_key
    tiles = f"{prefix}:t:*"
    assert len(r.hkeys(f"{prefix}:t:{z}:incidents")) == 2  # tiles outlive the workers

    with TestClient(create_app(shared)) as a:  # nothing changed meanwhile: tiles kept
        cache = cache_of(a)
        hits = cache.hits
        assert a.get(here).content == before and cache.hits == hits + 1

    severity = flip_severity(engine, iid)  # nobody listens
    assert int(r.get(seq_key)) < db_seq(engine)
    with TestClient(create_app(shared)) as a:
        assert r.keys(tiles) == []  # dropped at start-up, the unaffected tile too
        assert int(r.get(seq_key)) == db_seq(engine)
        assert severity_in(a.get(here).content, iid) == severity

        # the same on a listener reconnect: a change while its connection is down
        a.get(far)
        assert r.keys(tiles)
        cache = cache_of(a)
        with engine.begin() as c:
            killed = c.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                    "application_name = :n AND datname = current_database()"
                ),
                {"n": LISTENER_NAME},
            ).scalar()
        assert killed == 1
        assert wait_for(lambda: not cache.live)
        severity = flip_severity(engine, iid)
        assert wait_for(lambda: cache.live, timeout=15)
        assert r.keys(tiles) == []
        assert cache.applied_seq == db_seq(engine)
        assert severity_in(a.get(here).content, iid) == severity


@pytest.fixture()
def own_redis(
    tmp_path: Path, settings: Settings, loaded_sample
) -> Iterator[tuple[RedisServer, Settings]]:
    """A Redis of the test's own, which the test may pause or stop."""
    server = RedisServer(tmp_path)
    server.start()
    yield server, settings.model_copy(update={"tile_cache_url": server.url})
    server.stop()


def test_tiles_served_while_redis_is_stopped(own_redis: tuple[RedisServer, Settings]) -> None:
    server, s = own_redis
    z, x, y = tile_at(16)
    url = f"/tiles/pipelines/{z}/{x}/{y}.mvt"
    with TestClient(create_app(s)) as a:
        first = a.get(url)
        assert (
            first.status_code == 200
            and server.client().hlen(f"{cache_of(a).prefix}:t:{z}:pipelines") == 1
        )
        server.stop()
        again = a.get(url)
        assert again.status_code == 200 and again.content == first.content
        other = a.get(f"/tiles/pipelines,components/{z}/{x}/{y}.mvt")
        assert other.status_code == 200
        assert set(mapbox_vector_tile.decode(other.content)) == {"pipelines", "components"}
        health = a.get("/healthz")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "degraded" and "unreachable" in body["tile_cache"]
        assert "tile cache" in body["detail"]


def test_change_missed_while_redis_hangs_is_not_served_later(
    own_redis: tuple[RedisServer, Settings], engine: Engine
) -> None:
    """Redis paused (SIGSTOP) while an incident changes: the listener cannot delete the tile;
    requests meanwhile are served fresh and uncached, and once Redis answers the worker drops
    the namespace before reading it, so the old tile is never served."""
    server, s = own_redis
    iid, (z, x, y) = open_incident(engine)
    here = f"/tiles/incidents/{z}/{x}/{y}.mvt"
    with TestClient(create_app(s)) as a:
        cache = cache_of(a)
        hkey = f"{cache.prefix}:t:{z}:incidents"
        before = a.get(here)
        assert server.client().hexists(hkey, f"{x}/{y}")
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            severity = flip_severity(engine, iid)
            assert wait_for(lambda: cache.stale)
            during = a.get(here)
            assert during.status_code == 200 and severity_in(during.content, iid) == severity
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        r = server.client()
        assert r.hget(hkey, f"{x}/{y}") is not None  # the stale copy is still in Redis ...
        time.sleep(RETRY_AFTER_S + 0.3)
        after = a.get(here)  # ... but is dropped before this worker reads Redis again
        assert severity_in(after.content, iid) == severity != severity_in(before.content, iid)
        assert not cache.stale
        assert r.hlen(hkey) == 1 and after.headers["etag"].encode() in r.hget(hkey, f"{x}/{y}")

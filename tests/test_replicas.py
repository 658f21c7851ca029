"""Reads on a real PostgreSQL streaming replica, started by the test: a private primary
(initdb) and a standby made from it with ``pg_basebackup -R``, on free loopback ports.

The API, given the standby in ``database_replica_urls``, serves GET requests from it (a row
only the primary has is not found while the standby's replay is paused), goes back to the
primary for reads after a change notification until the standby has replayed it, shows the
standby's lag in /healthz, keeps answering while the primary takes writes, and fails no
request when the standby is stopped in the middle of a load."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from cimtwin.settings import Settings
from cimtwin.spatial.model import SCHEMA
from cimtwin.spatial.provenance import CHANGE_CHANNEL
from tests.browser import serve
from tests.replica_pair import Pair, available, pg_ctl, replica_pair

pytestmark = pytest.mark.skipif(
    not available(),
    reason="PostgreSQL 15 server binaries missing (scripts/setup.sh installs postgresql-15)",
)
#: a building inside the storage CRS's area (EPSG:4547 by default), near the North Station
SQUARE = "POLYGON((400000 2500000, 400020 2500000, 400020 2500020, 400000 2500020, 400000 2500000))"


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with replica_pair() as p:
        yield p


def add_building(pair: Pair, bid: int) -> None:
    pair.primary_sql(
        f"INSERT INTO {SCHEMA}.building (id, building_code, name, height_m, floors, "
        "underground_floors, county_code, footprint)"
        " VALUES (%s, %s, 'replica test', 12, 4, 0, '440309', ST_Multi(ST_GeomFromText(%s, "
        f"(SELECT srid FROM geometry_columns WHERE f_table_schema = '{SCHEMA}'"
        " AND f_table_name = 'building' AND f_geometry_column = 'footprint'))))",
        (bid, f"REPL-{bid}", SQUARE),
    )


@pytest.fixture(scope="module")
def api(pair: Pair, settings: Settings) -> Iterator[str]:
    yield from serve(
        settings.model_copy(
            update={"database_url": pair.url, "database_replica_urls": pair.replica_url}
        )
    )


def test_reads_come_from_the_replica_until_a_change_needs_the_primary(pair: Pair, api: str) -> None:
    add_building(pair, 1)
    pair.caught_up()
    assert httpx.get(f"{api}/collections/buildings/items/1").status_code == 200
    # the API's connections on the standby
    names = {r[0] for r in pair.replica_sql("SELECT application_name FROM pg_stat_activity")}
    assert "cimtwin-api-replica" in names, names
    health = httpx.get(f"{api}/healthz").json()
    (replica,) = health["replicas"]
    assert replica["healthy"] is True and replica["lag_bytes"] is not None, replica
    # replay paused: a row only the primary has is not found by reads on the standby
    pair.replica_sql("SELECT pg_wal_replay_pause()")
    try:
        add_building(pair, 2)
        assert httpx.get(f"{api}/collections/buildings/items/2").status_code == 404
        # a change notification: reads go to the primary until the standby has replayed it
        pair.primary_sql(
            "SELECT pg_notify(%s, %s)",
            (CHANGE_CHANNEL, '{"tables": ["building"], "bbox": null, "seq": null}'),
        )
        deadline = time.monotonic() + 10
        status = 404
        while status == 404 and time.monotonic() < deadline:
            status = httpx.get(f"{api}/collections/buildings/items/2").status_code
            time.sleep(0.1)
        assert status == 200, "reads stayed on the paused standby after a change"
        time.sleep(1.0)  # a few polls: the standby is still behind, it stays skipped
        assert httpx.get(f"{api}/collections/buildings/items/2").status_code == 200
        lag = httpx.get(f"{api}/healthz").json()["replicas"][0]["lag_bytes"]
        assert lag > 0, lag
    finally:
        pair.replica_sql("SELECT pg_wal_replay_resume()")
    pair.caught_up()


def test_reads_hold_while_the_primary_writes_and_the_replica_stops(pair: Pair, api: str) -> None:
    statuses: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def read_loop() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                for path in (
                    "/collections/buildings/items?limit=50",
                    "/tiles/buildings/16/53520/28540.mvt",
                ):
                    try:
                        statuses.append(client.get(f"{api}{path}").status_code)
                    except httpx.HTTPError as exc:
                        errors.append(repr(exc))

    def write_loop() -> None:
        bid = 100
        while not stop.is_set():
            add_building(pair, bid)
            bid += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=read_loop) for _ in range(3)]
    threads.append(threading.Thread(target=write_loop))
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        served_before = len(statuses)
        pg_ctl(pair.replica_dir, "-m", "immediate", "stop")  # the standby dies mid-load
        time.sleep(4)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert served_before > 10 and len(statuses) > served_before + 10, len(statuses)
    failed = [s for s in statuses if s not in (200, 204)]
    assert errors == [] and failed == [], (errors[:5], failed[:20])
    (replica,) = httpx.get(f"{api}/healthz").json()["replicas"]
    assert replica["healthy"] is False and replica["error"], replica
    # the writes went on: the primary has them all, and the API (now on it) sees them
    (count,) = pair.primary_sql(f"SELECT count(*) FROM {SCHEMA}.building WHERE id >= 100")[0]
    assert count > 10
    got = httpx.get(f"{api}/collections/buildings/items?limit=1").json()
    assert got["numberMatched"] == count + 2, got.get("numberMatched")

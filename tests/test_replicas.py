"""Reads on a real PostgreSQL streaming replica, started by the test: a private primary
(initdb) and a standby made from it with ``pg_basebackup -R``, on free loopback ports.

The API, given the standby in ``database_replica_urls``, serves GET requests from it (a row
only the primary has is not found while the standby's replay is paused), goes back to the
primary for reads after a change notification until the standby has replayed it, shows the
standby's lag in /healthz, keeps answering while the primary takes writes, and fails no
request when the standby is stopped in the middle of a load."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from cimtwin.db import bootstrap
from cimtwin.settings import Settings
from cimtwin.spatial.model import SCHEMA
from cimtwin.spatial.provenance import CHANGE_CHANNEL
from tests.browser import serve

BIN = Path("/usr/lib/postgresql/15/bin")
pytestmark = pytest.mark.skipif(
    not (BIN / "pg_basebackup").exists(),
    reason="PostgreSQL 15 server binaries missing (scripts/setup.sh installs postgresql-15)",
)
#: a building inside the storage CRS's area (EPSG:4547 by default), near the North Station
SQUARE = "POLYGON((400000 2500000, 400020 2500000, 400020 2500020, 400000 2500020, 400000 2500000))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_postgres(*cmd: str) -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


def pg_ctl(data: Path, *args: str) -> None:
    subprocess.run(
        as_postgres(str(BIN / "pg_ctl"), "-D", str(data), *args),
        check=True,
        capture_output=True,
        timeout=120,
    )


class Pair:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.primary_port, self.replica_port = free_port(), free_port()
        self.primary_dir, self.replica_dir = root / "primary", root / "replica"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.primary_port}/twin"
        self.replica_url = f"postgresql+psycopg://postgres@127.0.0.1:{self.replica_port}/twin"

    def dsn(self, port: int) -> str:
        return f"host=127.0.0.1 port={port} user=postgres dbname=twin"

    def start(self, data: Path, port: int) -> None:
        options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
        pg_ctl(data, "-w", "-l", str(data / "server.log"), "-o", options, "start")

    def replica_sql(self, statement: str) -> list[tuple]:
        with psycopg.connect(self.dsn(self.replica_port), autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def primary_sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.dsn(self.primary_port), autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def caught_up(self, timeout_s: float = 30) -> None:
        (want,) = self.primary_sql("SELECT pg_current_wal_lsn()")[0]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            (ok,) = self.replica_sql(f"SELECT pg_last_wal_replay_lsn() >= '{want}'::pg_lsn")[0]
            if ok:
                return
            time.sleep(0.1)
        raise AssertionError("the standby did not catch up")


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    root = Path(tempfile.mkdtemp(prefix="cimtwin-replica-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    p = Pair(root)
    subprocess.run(
        as_postgres(
            str(BIN / "initdb"), "-D", str(p.primary_dir), "-U", "postgres", "--auth=trust"
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    p.start(p.primary_dir, p.primary_port)
    try:
        bootstrap.recreate_database(p.url)
        subprocess.run(
            as_postgres(
                str(BIN / "pg_basebackup"),
                *("-h", "127.0.0.1", "-p", str(p.primary_port), "-U", "postgres"),
                *("-D", str(p.replica_dir), "-R", "-X", "stream", "-c", "fast"),
            ),
            check=True,
            capture_output=True,
            timeout=300,
        )
        p.start(p.replica_dir, p.replica_port)
        yield p
    finally:
        for data in (p.replica_dir, p.primary_dir):
            if (data / "postmaster.pid").exists():
                pg_ctl(data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def add_building(pair: Pair, bid: int) -> None:
    pair.primary_sql(
        f"INSERT INTO {SCHEMA}.building (id, building_code, name, height_m, floors, "
        "underground_floors, footprint)"
        " VALUES (%s, %s, 'replica test', 12, 4, 0, ST_Multi(ST_GeomFromText(%s, "
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

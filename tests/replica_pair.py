"""A private PostgreSQL primary and a streaming standby made from it, on free loopback ports:
``initdb``, then ``pg_basebackup -R -X stream``, each started with ``pg_ctl``.

Shared by tests/test_replicas.py and benchmarks/city.py (the query mix against the primary
alone and with one replica). The machine's own PostgreSQL is never touched: both servers live
in a temporary folder and are stopped and removed on leaving :func:`replica_pair`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from cimtwin.db import bootstrap

BIN = Path("/usr/lib/postgresql/15/bin")


def available() -> bool:
    """True when the PostgreSQL 15 server programs are installed (scripts/setup.sh)."""
    return (BIN / "pg_basebackup").exists()


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
    """Ports, folders and URLs of the primary and its standby (database ``twin``)."""

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
        """Wait until the standby has replayed everything the primary has written so far."""
        (want,) = self.primary_sql("SELECT pg_current_wal_lsn()")[0]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            (ok,) = self.replica_sql(f"SELECT pg_last_wal_replay_lsn() >= '{want}'::pg_lsn")[0]
            if ok:
                return
            time.sleep(0.1)
        raise AssertionError("the standby did not catch up")


@contextmanager
def replica_pair() -> Iterator[Pair]:
    """A running primary with a migrated ``twin`` database and a standby streaming from it."""
    root = Path(tempfile.mkdtemp(prefix="cimtwin-replica-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    p = Pair(root)
    try:
        subprocess.run(
            as_postgres(
                str(BIN / "initdb"), "-D", str(p.primary_dir), "-U", "postgres", "--auth=trust"
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        p.start(p.primary_dir, p.primary_port)
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

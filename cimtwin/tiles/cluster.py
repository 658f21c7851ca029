"""Tile jobs on Dask distributed: a LocalCluster on this machine, or an existing cluster.

Both tile builds run here: 3D Tiles (a :class:`~cimtwin.tiles.threed.plan.TileJob` per tile:
the worker reads PostGIS and writes the tile's glb itself, and only a small summary comes
back; the driver plans the tree and assembles tileset.json) and the static vector-tile export
(an :class:`~cimtwin.tiles.export.MvtJob` per run of tiles: the worker renders them, the
driver writes the one PMTiles or MBTiles file). A job is plain data carrying the database
DSN; nothing is shared beyond the database and the output, so any ``dask-worker`` that can
reach both can build tiles (``--scheduler tcp://host:8786``).

Clients are kept for the process's life (like the pool they replace): the CLI builds several
tilesets in a row, and a LocalCluster's start-up (a few seconds of imports per worker) is paid
once.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from cimtwin.errors import UserError

if TYPE_CHECKING:
    from distributed import Client

#: the environment variable naming an existing scheduler (``--scheduler``)
SCHEDULER_ENV = "CIMTWIN_DASK_SCHEDULER"
#: seconds to wait for an existing scheduler before telling the user it is unreachable
#: (``CIMTWIN_DASK_CONNECT_TIMEOUT_S``; a scheduler across a slow link may need more)
CONNECT_TIMEOUT_ENV = "CIMTWIN_DASK_CONNECT_TIMEOUT_S"
CONNECT_TIMEOUT_S = 10.0


def connect_timeout_s() -> float:
    """The scheduler connect timeout: the environment's, else CONNECT_TIMEOUT_S."""
    text = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    if not text:
        return CONNECT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise UserError(f"{CONNECT_TIMEOUT_ENV}={text!r}: give seconds between 0 and 3600")
    return value


_CLIENTS: dict[tuple[str, str], Client] = {}
#: per worker process: its database connections, by DSN (kept for the next jobs)
WORKER_CONNECTIONS: dict[str, psycopg.Connection] = {}

Job = TypeVar("Job")


def worker_connection(dsn: str) -> psycopg.Connection:
    """The worker's connection to ``dsn``: opened by the first job that needs it, kept for
    the next jobs, opened again when the server closed it (a restart between builds)."""
    conn = WORKER_CONNECTIONS.get(dsn)
    if conn is None or conn.closed or conn.broken:
        conn = WORKER_CONNECTIONS[dsn] = psycopg.connect(dsn, autocommit=True)
    return conn


def forget_connection(dsn: str) -> None:
    """Drop the kept connection to ``dsn`` (it failed; the next job opens a new one)."""
    WORKER_CONNECTIONS.pop(dsn, None)


def _close_all() -> None:
    for client in list(_CLIENTS.values()):
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    _CLIENTS.clear()


atexit.register(_close_all)


def client_for(workers: int, scheduler: str | None = None, memory_limit: str = "auto") -> Client:
    """A client of ``scheduler`` or, without one, of a LocalCluster of ``workers`` processes
    with one thread each (jobs are CPU-bound numpy and keep one connection per worker) and
    ``memory_limit`` per worker (dask's ``auto``: the machine's memory shared out; a worker
    over it is restarted and its job run again elsewhere)."""
    from distributed import Client, LocalCluster

    key = ("scheduler", scheduler) if scheduler else ("local", f"{workers}/{memory_limit}")
    client = _CLIENTS.get(key)
    if client is not None and client.status == "running":
        return client
    if scheduler:
        try:
            client = Client(scheduler, timeout=connect_timeout_s())
        except (OSError, TimeoutError, ValueError) as exc:
            raise UserError(
                f"--scheduler {scheduler}: no Dask scheduler answers there "
                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            ) from None
    else:
        check_memory_limit(memory_limit)
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=None,  # no fixed port to clash with another build
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    _CLIENTS[key] = client
    return client


def check_memory_limit(text: str) -> None:
    """Refuse a ``--memory-limit`` dask cannot read before any work starts."""
    from dask.utils import parse_bytes

    if text == "auto":
        return
    try:
        if parse_bytes(text) <= 0:
            raise ValueError(text)
    except ValueError:
        raise UserError(f"--memory-limit {text!r}: give a size such as 2GiB, or auto") from None


def run_on_cluster(
    client: Client,
    fn: Callable[[Job], Any],
    jobs: Sequence[Job],
    on_done: Callable[[], None] | None = None,
    *,
    key: str = "tile-job",
    ordered: bool = False,
) -> Iterator[Any]:
    """``fn(job)`` for every job on the cluster's workers, one future per job (so the
    progress bar moves with the cluster's completed tasks): results as they finish, or in
    the jobs' order with ``ordered`` (what a single output file is written in)."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    # pure=False: every job gets a fresh key (the prefix names them in the task stream), so
    # no job is answered from an earlier build's result for the same tile
    futures = client.map(fn, jobs, pure=False, key=key)
    try:
        for future in futures if ordered else as_completed(futures):
            try:
                result = future.result()
            except KilledWorker as exc:
                raise UserError(
                    f"a tile job's worker died again and again ({exc}); a tile over the "
                    "worker memory limit? give --memory-limit more"
                ) from None
            yield result
            if on_done:
                on_done()
    finally:
        client.cancel(futures)

"""The API while its database is away (issue 9 defect 9, issue 9 defect 10): a refused
connection answers the JSON 503 at once instead of after the pool timeout, connections lost
in the middle of a query answer the JSON 503 on every route (never a plain-text 500), and the
pool recovers by itself once the database is back.

The shared PostgreSQL is never stopped: "refused" is a port where nothing listens, "comes
back" is a TCP forwarder started on that port, "lost" is ``pg_terminate_backend`` of this
app's own connections."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from cimtwin.api.app import create_app
from cimtwin.db.engine import libpq_dsn
from cimtwin.settings import Settings

#: what the issue measured: every request waited the full pool timeout (5 s)
POOL_TIMEOUT_S = 5.0
FAST_S = 0.5
#: a single request's bound: a quarter of the pool timeout it must not wait for
ONE_REQUEST_S = POOL_TIMEOUT_S / 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_503(r) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    err = r.json()
    assert err["code"] == "ServiceUnavailable" and "database" in err["description"], err


class Forwarder:
    """A TCP forwarder from a loopback port to the real PostgreSQL, started on demand."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def start(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(32)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
        for s in self.sockets:
            s.close()


def settings_for(url: str, **extra) -> Settings:
    return Settings(database_url=url, pool_timeout_s=POOL_TIMEOUT_S, **extra)


def timed_get(client: TestClient, path: str):
    t0 = time.perf_counter()
    r = client.get(path)
    return r, time.perf_counter() - t0


DB_ROUTES = [
    "/collections",
    "/collections/buildings/items",
    "/incidents",
    "/healthz",
    "/tiles/buildings/15/26762/14270.mvt",
    "/tiles/buildings/tilejson.json",
    "/grids/locate?lon=114.0291&lat=22.609",
]


def test_refused_connections_answer_503_at_once(capsys: pytest.CaptureFixture) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    with TestClient(create_app(settings_for(dead))) as client:
        took: list[float] = []
        for path in DB_ROUTES * 5:
            r, s = timed_get(client, path)
            if path == "/healthz":
                assert r.status_code == 503 and "database unavailable" in r.text, r.text
            else:
                assert_503(r)
                assert r.headers.get("retry-after"), r.headers
            took.append(s)
    took.sort()
    with capsys.disabled():
        print(
            f"\n503 latency with the database refusing connections ({len(took)} requests):"
            f" median {1000 * took[len(took) // 2]:.1f} ms, max {1000 * took[-1]:.1f} ms"
            f" (pool timeout {POOL_TIMEOUT_S:g} s)"
        )
    # none waited for the pool (5 s); a lone slow one is a pause of the test process itself
    # (a full suite's garbage collection was seen at 0.53 s), not the service waiting
    assert took[len(took) // 2] < FAST_S / 5, took
    assert took[-1] < ONE_REQUEST_S, took


def test_the_pool_recovers_when_the_database_comes_back(
    database_url: str, loaded_sample, capsys: pytest.CaptureFixture
) -> None:
    url = make_url(database_url)
    port = free_port()
    forwarder = Forwarder(port, (url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    try:
        with TestClient(create_app(settings_for(proxied))) as client:
            r, s = timed_get(client, "/collections/buildings/items?limit=1")
            assert_503(r)
            # one request at a time: bounded as the slowest of the test above is (a pause of
            # the test process under a loaded full suite was seen at 0.75 s), far from the
            # pool timeout it must not wait for
            assert s < ONE_REQUEST_S, s
            forwarder.start()
            back = time.monotonic()
            deadline, answers = back + 20, []
            while time.monotonic() < deadline:
                r, s = timed_get(client, "/collections/buildings/items?limit=1")
                answers.append(r.status_code)
                if r.status_code == 200:
                    break
                assert_503(r)
                assert s < ONE_REQUEST_S, s
                time.sleep(0.1)
            assert answers[-1] == 200, answers
            with capsys.disabled():
                print(
                    f"\nserved again {time.monotonic() - back:.2f} s after the database "
                    f"came back ({len(answers) - 1} fast 503s meanwhile)"
                )
            for path in ("/incidents", "/tiles/buildings/15/26762/14270.mvt", "/healthz"):
                assert client.get(path).status_code in (200, 204), path
    finally:
        forwarder.stop()


# --- connections lost mid-request -----------------------------------------------------------


def terminate_backends(database_url: str) -> int:
    """End every backend of this test database but ours (only this session's database)."""
    name = make_url(database_url).database
    assert name and name.startswith("cimtwin_test_"), name
    with psycopg.connect(libpq_dsn(database_url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() "
            "AND application_name = 'cimtwin-api'",
            (name,),
        ).fetchall()
    return len(rows)


@pytest.fixture
def outage_client(settings: Settings, loaded_sample) -> Iterator[TestClient]:
    # no tile cache: every tile request reaches the database
    with TestClient(
        create_app(settings.model_copy(update={"tile_cache_mb": 0})), raise_server_exceptions=False
    ) as c:
        yield c


LOST_ROUTES = [
    ("GET", "/tiles/buildings/15/26762/14270.mvt", None),
    ("GET", "/collections/buildings/items?limit=5", None),
    ("GET", "/grids/locate?lon=114.0291&lat=22.609", None),
    ("GET", "/incidents", None),
    ("GET", "/pipelines/qa", None),
]


@pytest.mark.parametrize("method, path, body", LOST_ROUTES)
def test_lost_connections_answer_json_503_then_recover(
    outage_client: TestClient, database_url: str, method: str, path: str, body
) -> None:
    client = outage_client
    # a warm pool: several connections that are all about to die
    for _ in range(3):
        assert client.request(method, path, json=body).status_code in (200, 204)
    assert terminate_backends(database_url) >= 1
    first = client.request(method, path, json=body)
    if first.status_code not in (200, 204):
        assert_503(first)
    # the broken connections are swept out at once: the next requests are served
    for _ in range(5):
        r = client.request(method, path, json=body)
        assert r.status_code in (200, 204), r.text


def test_every_route_answers_json_when_its_connection_breaks(
    outage_client: TestClient, database_url: str
) -> None:
    """A connection dying between the pool's hand-out and the query (no sweep can help):
    every route answers the JSON 503, never the plain-text 500."""
    client = outage_client
    pool = client.app.state.pool
    seen = []
    for method, path, body in LOST_ROUTES:
        for _ in range(5):  # an idle connection may still be one of the last round's dead
            r = client.request(method, path, json=body)
            if r.status_code in (200, 204):
                break
            assert_503(r)
        assert r.status_code in (200, 204), (path, r.text)
        stats = pool.get_stats()
        assert stats["pool_available"] >= 1, stats
        terminate_backends(database_url)
        time.sleep(0.05)  # the backends are gone; the pool does not know yet
        r = client.request(method, path, json=body)
        seen.append((path, r.status_code))
        if r.status_code not in (200, 204):
            assert_503(r)
    assert any(s == 503 for _, s in seen), seen

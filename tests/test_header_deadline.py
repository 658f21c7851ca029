"""``cimtwin serve`` closes connections whose request headers come too slowly (slowloris),
while normal and keep-alive requests go through: the real server in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cimtwin.settings import Settings
from tests.conftest import wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 1.5
MARGIN_S = 1.5
SERVE = "import sys; sys.argv[0] = 'cimtwin'; from cimtwin.cli import main; main()"
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[tuple[str, int]]:
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CIMTWIN_DATABASE_URL": settings.database_url,
        "CIMTWIN_HEADER_TIMEOUT_S": str(DEADLINE_S),
        "CIMTWIN_ACCESS_LOG": "false",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}")
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _closed_after(sock: socket.socket, trickle: bytes, every_s: float, limit_s: float) -> float:
    """Send ``trickle`` a byte every ``every_s`` until the server closes; seconds it took
    (``limit_s`` + 1 if it never did)."""
    t0 = time.monotonic()
    sock.settimeout(every_s)
    for i in range(int(limit_s / every_s) + 1):
        try:
            sock.sendall(trickle[i % len(trickle) : i % len(trickle) + 1])
            if sock.recv(4096) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - t0
    return limit_s + 1


def _response(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += sock.recv(4096)
    return head


def test_a_half_sent_request_line_is_closed_at_the_deadline(server: tuple[str, int]) -> None:
    with socket.create_connection(server) as sock:
        took = _closed_after(sock, b"GET /healthz HTTP/1.1", 0.2, DEADLINE_S + MARGIN_S)
    assert DEADLINE_S - 0.3 <= took <= DEADLINE_S + MARGIN_S, took


def test_a_silent_connection_is_closed_at_the_deadline(server: tuple[str, int]) -> None:
    with socket.create_connection(server) as sock:
        sock.settimeout(DEADLINE_S + MARGIN_S)
        t0 = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - t0 <= DEADLINE_S + MARGIN_S


def test_normal_and_keep_alive_requests_still_work(server: tuple[str, int]) -> None:
    host, port = server
    assert httpx.get(f"http://{host}:{port}/healthz").status_code == 200
    with socket.create_connection(server) as sock:
        assert _response_after(sock, REQUEST).startswith(b"HTTP/1.1 200")
        time.sleep(DEADLINE_S + 0.3)  # idle longer than the header deadline, within keep-alive
        # the next request comes in pieces, each piece within the deadline of the first byte
        for piece in (REQUEST[:10], REQUEST[10:25]):
            sock.sendall(piece)
            time.sleep(DEADLINE_S / 4)
        assert _response_after(sock, REQUEST[25:]).startswith(b"HTTP/1.1 200")
        # and a third that trickles past the deadline is cut off
        took = _closed_after(sock, REQUEST[:-4], 0.2, DEADLINE_S + MARGIN_S)
        assert took <= DEADLINE_S + MARGIN_S


def _response_after(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return _response(sock)

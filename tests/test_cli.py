"""The command line: --help everywhere, user mistakes as one line without a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "cimtwin.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "args",
    [(), ("db",), ("db", "setup"), ("db", "upgrade"), ("db", "downgrade"), ("db", "status"),
     ("samples",), ("samples", "generate"), ("samples", "load"), ("serve",), ("import",),
     ("tiles",), ("tiles", "export-mvt"), ("keys",), ("keys", "create"), ("keys", "list"),
     ("keys", "revoke")],
)
def test_help_everywhere(args: tuple[str, ...]) -> None:
    r = run(*args, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout


def test_unreachable_database_is_a_clear_error() -> None:
    r = run("db", "upgrade", env={"CIMTWIN_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"})
    assert r.returncode == 2
    assert "no PostgreSQL answers at" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_readme_holds_the_two_commands_ci_runs() -> None:
    """README's commands exist as make targets, and .ci/run calls the README's test command."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    ci = (root / ".ci" / "run").read_text(encoding="utf-8")
    makefile = (root / "Makefile").read_text(encoding="utf-8")
    assert "make run" in readme and "make test" in readme
    assert "make test" in ci
    assert "\nrun:" in makefile and "\ntest:" in makefile


@pytest.mark.parametrize("flag, logged", [("--access-log", True), ("--no-access-log", False)])
def test_serve_access_log_switch(database_url: str, loaded_sample, flag: str,
                                 logged: bool) -> None:
    """`cimtwin serve` logs each request unless told not to (a proxy in front logs them)."""
    import os
    import socket

    import httpx

    from tests.conftest import wait_until_healthy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), flag], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "CIMTWIN_DATABASE_URL": database_url})
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", 60)
        assert httpx.get(f"http://127.0.0.1:{port}/collections").status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "Uvicorn running" in out  # the server's own log is there either way
    assert ('"GET /collections HTTP/1.1" 200' in out) is logged, out[-2000:]

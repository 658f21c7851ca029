"""The command line: --help everywhere, user mistakes as one line without a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "cimtwin.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


HELP_ARGS = [
    (),
    ("db",),
    ("db", "setup"),
    ("db", "upgrade"),
    ("db", "downgrade"),
    ("db", "status"),
    ("samples",),
    ("samples", "generate"),
    ("samples", "load"),
    ("serve",),
    ("import",),
    ("tiles",),
    ("tiles", "export-mvt"),
    ("keys",),
    ("keys", "create"),
    ("keys", "list"),
    ("keys", "revoke"),
]


def invoke(*args: str, env: dict[str, str] | None = None):
    """The CLI run in this process (click's test runner): no interpreter start-up per test."""
    from typer.testing import CliRunner

    from cimtwin.cli import app

    return CliRunner().invoke(app, list(args), env=env, prog_name="cimtwin")


@pytest.mark.parametrize("args", HELP_ARGS)
def test_help_everywhere(args: tuple[str, ...]) -> None:
    r = invoke(*args, "--help")
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output


def test_help_of_the_real_entry_point() -> None:
    """One subprocess for the installed entry point; the rest run in-process."""
    r = run("--help")
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout and "import" in r.stdout


def test_command_overview_matches_each_command_s_own_help() -> None:
    """The overview's one-line help is kept without importing the commands: it must say what
    each command's own help says."""
    from cimtwin.cli import COMMANDS, load_command

    for name, (_, short) in COMMANDS.items():
        own = load_command(name)
        first = (own.help or "").strip().split("\n\n")[0].replace("\n", " ")
        assert first == short, name


def test_the_cli_loads_no_heavy_library_to_list_or_check_status() -> None:
    """`cimtwin --help`, `import --help` and `db ...` start fast: pandas, GeoPandas, shapely
    and pyarrow are imported only by the commands that read or write data."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "import cimtwin.cli as c\n"
        "for args in (['--help'], ['import', '--help'], ['db', '--help'],"
        " ['db', 'status', '--help']):\n"
        "    r = CliRunner().invoke(c.app, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('pandas', 'geopandas', 'shapely', 'pyarrow', 'pyogrio')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


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


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    """A setting nobody can find is a setting nobody uses: each CIMTWIN_* variable has a row
    (a new setting without one fails here)."""
    import re
    from pathlib import Path

    from cimtwin.settings import Settings

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    rows = {
        v
        for line in readme.splitlines()
        if line.startswith("| `CIMTWIN_")
        for v in re.findall(r"`(CIMTWIN_[A-Z0-9_]+)`", line.split("|")[1])
    }
    variables = [f"CIMTWIN_{n.upper()}" for n in Settings.model_fields]
    assert len(variables) > 30
    assert [v for v in variables if v not in rows] == []


@pytest.mark.parametrize("flag, logged", [("--access-log", True), ("--no-access-log", False)])
def test_serve_access_log_switch(database_url: str, loaded_sample, flag: str, logged: bool) -> None:
    """`cimtwin serve` logs each request unless told not to (a proxy in front logs them)."""
    import os
    import socket

    import httpx

    from tests.conftest import wait_until_healthy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), flag],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CIMTWIN_DATABASE_URL": database_url},
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", 60)
        assert httpx.get(f"http://127.0.0.1:{port}/collections").status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "Uvicorn running" in out  # the server's own log is there either way
    assert ('"GET /collections HTTP/1.1" 200' in out) is logged, out[-2000:]


def test_import_kinds_come_from_the_one_registry() -> None:
    """A new import kind is one registry line: the CLI's choices are the registry's kinds and
    every registered class declares the kind it is registered under."""
    from cimtwin.importers.cli import Kind
    from cimtwin.importers.registry import IMPORTERS, importer_for

    assert [k.value for k in Kind] == list(IMPORTERS)
    for kind in IMPORTERS:
        assert importer_for(kind).kind == kind
    with pytest.raises(ValueError, match="unknown import kind 'bogus'"):
        importer_for("bogus")
    r = invoke("import", "bogus", "x.csv")
    assert r.exit_code == 2 and "bogus" in r.output

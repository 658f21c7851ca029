"""Mistakes on the command line: one line naming the file or setting and what to do, exit
code 2, no traceback, and nothing left behind in the database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cimtwin.db import bootstrap
from cimtwin.db.engine import libpq_dsn, sqlalchemy_url
from tests.conftest import ROOT, SAMPLE

PID = os.getpid()
BARE = f"cimtwin_nopostgis_{PID}"  # a database without PostGIS and without the schema
ABSENT = f"cimtwin_absent_{PID}"  # never created
ROLE = f"no_such_role_{PID}"
OLD = f"cimtwin_oldschema_{PID}"  # migrated, then taken back one revision


def _url(database_url: str, database: str | None = None, **parts) -> str:
    u = sqlalchemy_url(database_url).set(drivername="postgresql", **parts)
    return u.set(database=database or u.database).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def bare_db(database_url: str) -> Iterator[str]:
    url = _url(database_url, BARE)
    bootstrap.drop_database(url)
    bootstrap.create_database(url)
    yield url
    bootstrap.drop_database(url)


@pytest.fixture(scope="module")
def old_db(database_url: str) -> Iterator[str]:
    """A database at revision 0004: set up by an older cimtwin, not yet upgraded."""
    url = _url(database_url, OLD)
    bootstrap.recreate_database(url)
    r = cli(["db", "downgrade", "0004"], url)
    assert r.returncode == 0, r.stdout + r.stderr
    yield url
    bootstrap.drop_database(url)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli_errors")
    (d / "folder").mkdir()
    (d / "empty.csv").write_bytes(b"")
    (d / "components.csv").write_text(
        "comp_id,class_cd,name\n4403090101000001,0101,x\n", encoding="utf-8"
    )
    (d / "parcels.xls").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504)
    for s in (".shp", ".shx", ".prj"):
        shutil.copy(SAMPLE / "shp" / f"component{s}", d / f"nodbf{s}")
    return d


def cli(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cimtwin.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "CIMTWIN_DATABASE_URL": url, "COLUMNS": "80"},
    )


GPKG = str(SAMPLE / "gpkg" / "components.gpkg")
CASES = {
    # id: (args, which database URL, text the message must hold)
    "upgrade-without-postgis": (["db", "upgrade"], "bare", [BARE, "PostGIS", "db setup"]),
    "import-never-set-up": (["import", "components", GPKG], "bare", [BARE, "db setup"]),
    "import-missing-database": (
        ["import", "components", GPKG],
        "absent",
        [f'"{ABSENT}" does not exist', "db setup"],
    ),
    "folder-not-file": (
        ["import", "components", "{files}/folder"],
        "ok",
        ["folder", "is a folder"],
    ),
    "url-not-a-url": (["db", "status"], "not a url", ["CIMTWIN_DATABASE_URL", "not a url"]),
    "url-mysql": (
        ["db", "status"],
        "mysql://u@localhost/db",
        ["CIMTWIN_DATABASE_URL", "postgresql://"],
    ),
    "downgrade-unknown-revision": (
        ["db", "downgrade", "nosuchrev"],
        "ok",
        ["nosuchrev", "revision"],
    ),
    "csv-to-components": (
        ["import", "components", "{files}/components.csv", "--crs", "EPSG:4547"],
        "ok",
        ["components.csv", "geometr"],
    ),
    "xls-to-parcels": (["import", "parcels", "{files}/parcels.xls"], "ok", ["parcels.xls", "XLSX"]),
    "status-missing-database": (
        ["db", "status"],
        "absent",
        [f'"{ABSENT}" does not exist', "db setup"],
    ),
    "tiles-database-down": (
        ["tiles", "export-mvt", "--layers", "components", "--out", "{files}/x.pmtiles"],
        "down",
        ["no PostgreSQL answers", ":1/"],
    ),
    "tiles-never-set-up": (
        ["tiles", "export-mvt", "--layers", "components", "--out", "{files}/x.pmtiles"],
        "bare",
        [BARE, "db setup"],
    ),
    "zero-byte-csv": (
        ["import", "pipelines", "{files}/empty.csv", "--crs", "EPSG:4547"],
        "ok",
        ["empty.csv", "empty"],
    ),
    "shapefile-without-dbf": (
        ["import", "components", "{files}/nodbf.shp"],
        "ok",
        ["nodbf.shp", ".dbf"],
    ),
    "role-does-not-exist": (["db", "status"], "role", [f'role "{ROLE}" does not exist']),
    "keys-role-does-not-exist": (["keys", "list"], "role", [f'role "{ROLE}" does not exist']),
    "keys-never-set-up": (["keys", "list"], "bare", [BARE, "db setup"]),
    "import-into-an-older-schema": (
        ["import", "components", GPKG],
        "old",
        [OLD, "revision 0004", "db upgrade"],
    ),
    "samples-into-an-older-schema": (
        ["samples", "load", str(SAMPLE)],
        "old",
        [OLD, "revision 0004", "db upgrade"],
    ),
    "build-3d-on-an-older-schema": (
        ["tiles", "build-3d", "--out", "{files}/3d"],
        "old",
        [OLD, "revision 0004", "db upgrade"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mistake_is_one_line_exit_2_no_traceback(
    case: str, database_url: str, bare_db: str, files: Path, request: pytest.FixtureRequest
) -> None:
    args, which, expected = CASES[case]
    url = {
        "bare": bare_db,
        "absent": _url(database_url, ABSENT),
        "ok": database_url,
        "down": _url(database_url, port=1),
        "role": _url(database_url, username=ROLE),
    }.get(which, which)
    if which == "old":
        url = request.getfixturevalue("old_db")
    r = cli([a.format(files=files) for a in args], url)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert r.returncode == 2, out
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, out
    for text in expected:
        assert text in errors[0], errors[0]


def test_failed_upgrade_leaves_nothing_behind(bare_db: str) -> None:
    """`db upgrade` without PostGIS creates no schema, so `db status` still says why."""
    cli(["db", "upgrade"], bare_db)
    with psycopg.connect(libpq_dsn(bare_db)) as conn:
        schemas = [
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%' "
                "AND nspname NOT IN ('public', 'information_schema')"
            )
        ]
    assert schemas == []
    r = cli(["db", "status"], bare_db)
    assert r.returncode == 2 and "not set up" in r.stderr and "db setup" in r.stderr, r.stderr

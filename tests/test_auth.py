"""API keys: the `cimtwin keys` commands, and what the API answers with no key, a key of too low
a role, the right role, a revoked key; reads open or closed by the ``open_reads`` setting.

Runs on the scratch database (keys and incidents are written)."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
from fastapi.testclient import TestClient

from cimtwin.api.app import create_app
from cimtwin.db.engine import libpq_dsn
from cimtwin.settings import Settings
from cimtwin.spatial.access_queries import create_key, key_hash, revoke_key

KEYS = [sys.executable, "-m", "cimtwin.cli", "keys"]
INCIDENT = {
    "incident_type": "fire",
    "severity": 2,
    "title": "auth test",
    "geometry": {"type": "Point", "coordinates": [114.02, 22.61]},
}


ClosedReads = Settings  # open_reads is a setting


def keys_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYS, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CIMTWIN_DATABASE_URL": url},
    )


@pytest.fixture(scope="module")
def keys(scratch_database: str) -> dict[str, str]:
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        out = {
            role: create_key(conn, f"auth-{role}", role)[0]
            for role in ("viewer", "editor", "importer", "admin")
        }
        out["revoked"] = create_key(conn, "auth-revoked", "admin")[0]
        revoke_key(conn, "auth-revoked")
    return out


@pytest.fixture(scope="module")
def client(scratch_database: str, keys) -> TestClient:
    with TestClient(create_app(Settings(database_url=scratch_database))) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_no_key_is_401_with_bearer_challenge(client: TestClient) -> None:
    r = client.post("/incidents", json=INCIDENT)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "needs an API key with role 'editor'" in r.json()["description"]
    r = client.patch("/incidents/1", json={"severity": 1})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_unknown_and_revoked_keys_are_401(client: TestClient, keys: dict) -> None:
    for headers, words in (
        (bearer("cim_not-a-key"), "invalid or revoked key"),
        ({"X-API-Key": "x" * 500}, "invalid or revoked key"),
        (bearer(keys["revoked"]), "invalid or revoked key"),
    ):
        r = client.post("/incidents", json=INCIDENT, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["description"] == words  # no key name, prefix or role
        assert r.headers["www-authenticate"] == "Bearer"


def test_role_too_low_is_403(client: TestClient, keys: dict) -> None:
    r = client.post("/incidents", json=INCIDENT, headers=bearer(keys["viewer"]))
    assert r.status_code == 403
    assert "needs role 'editor' or higher" in r.json()["description"]
    # the key's own name and role stay untold
    assert "'viewer'" not in r.json()["description"]
    assert "auth-viewer" not in r.json()["description"]


def test_right_or_higher_role_writes(client: TestClient, keys: dict, scratch_database: str) -> None:
    made = []
    for role in ("editor", "importer", "admin"):
        r = client.post("/incidents", json=INCIDENT, headers=bearer(keys[role]))
        assert r.status_code == 201, (role, r.text)
        made.append(r.json()["id"])
    r = client.post("/incidents", json=INCIDENT, headers={"X-API-Key": keys["editor"]})
    assert r.status_code == 201
    r = client.patch(
        f"/incidents/{made[0]}",
        json={"status": "dispatched"},
        headers={"X-API-Key": keys["editor"]},
    )
    assert r.status_code == 200 and r.json()["properties"]["status"] == "dispatched"
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        used = conn.execute(
            "SELECT name, last_used_at IS NOT NULL FROM cim.api_key ORDER BY name"
        ).fetchall()
        stored = conn.execute(
            "SELECT key_hash, prefix FROM cim.api_key WHERE name = 'auth-editor'"
        ).fetchone()
    assert dict(used) == {
        "auth-admin": True,
        "auth-editor": True,
        "auth-importer": True,
        "auth-revoked": False,
        "auth-viewer": True,
    }
    # only the hash and a short prefix are stored
    assert stored == (key_hash(keys["editor"]), keys["editor"][:12])


def test_reads_open_by_default(client: TestClient, keys: dict) -> None:
    assert client.get("/incidents").status_code == 200
    assert client.get("/incidents", headers=bearer(keys["viewer"])).status_code == 200
    # a key that is sent is checked, also on open reads
    r = client.get("/incidents", headers=bearer(keys["revoked"]))
    assert r.status_code == 401


def test_reads_closed_by_setting(scratch_database: str, keys: dict) -> None:
    closed = ClosedReads(database_url=scratch_database, open_reads=False)
    with TestClient(create_app(closed)) as c:
        for url in (
            "/incidents",
            "/grids/locate?lon=114.02&lat=22.61",
            "/districts",
            "/parcels",
            "/grids/44030900200101",
            "/collections/grids/items",
            "/tiles/grids/14/13381/7133.mvt",
            "/pipelines/qa?network=JS",
        ):
            r = c.get(url)
            assert r.status_code == 401, url
            assert r.headers["www-authenticate"] == "Bearer"
            body = r.json()  # tiles answer in FastAPI's format, the rest in OGC's
            assert "open_reads is off" in body.get("description", body.get("detail", ""))
        assert c.get("/incidents", headers=bearer(keys["viewer"])).status_code == 200
        r = c.get("/collections/grids/items", headers=bearer(keys["viewer"]))
        assert r.status_code == 200
        assert c.get(
            "/tiles/grids/14/13381/7133.mvt", headers=bearer(keys["viewer"])
        ).status_code in (200, 204)
        assert c.get("/healthz").status_code == 200  # the probe stays open
        assert c.get("/districts", headers=bearer(keys["admin"])).status_code == 200
        assert c.get("/incidents", headers=bearer(keys["revoked"])).status_code == 401
        r = c.post("/grids/assign", json={"rows": [{"lon": 114.02, "lat": 22.61}]})
        assert r.status_code == 401
        r = c.post("/incidents", json=INCIDENT, headers=bearer(keys["viewer"]))
        assert r.status_code == 403
    opened = ClosedReads(database_url=scratch_database, open_reads=True)
    with TestClient(create_app(opened)) as c:
        assert c.get("/incidents").status_code == 200


def test_keys_cli(scratch_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the real command line once: the key alone on stdout, errors as one line, exit 2
    r = keys_cli(scratch_database, "create", "cli-desk", "--role", "editor")
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip()
    assert key.startswith("cim_") and len(key) > 40 and "shown once" in r.stderr
    r = keys_cli(scratch_database, "create", "cli-desk", "--role", "editor")
    assert r.returncode == 2 and "error:" in r.stderr and "already exists" in r.stderr
    assert "Traceback" not in r.stderr
    # the rest in-process
    from typer.testing import CliRunner

    from cimtwin.errors import UserError
    from cimtwin.keys_cli import app
    from cimtwin.settings import get_settings

    monkeypatch.setenv("CIMTWIN_DATABASE_URL", scratch_database)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        for args in ((), ("create",), ("list",), ("revoke",)):
            r = runner.invoke(app, [*args, "--help"])
            assert r.exit_code == 0 and "Usage:" in r.output, (args, r.output)
        with TestClient(create_app(Settings(database_url=scratch_database))) as c:
            assert c.post("/incidents", json=INCIDENT, headers=bearer(key)).status_code == 201
            r = runner.invoke(app, ["list"])
            assert r.exit_code == 0, r.output
            rows = {line.split("\t")[0]: line.split("\t") for line in r.output.splitlines()}
            assert rows["cli-desk"][1:3] == ["editor", key[:12] + "..."]
            assert rows["cli-desk"][5] == "active" and rows["cli-desk"][4] != "never"
            assert key not in r.output
            r = runner.invoke(app, ["revoke", "cli-desk"])
            assert r.exit_code == 0 and "revoked" in r.output
            assert c.post("/incidents", json=INCIDENT, headers=bearer(key)).status_code == 401
        for args, words in (
            (["create", "bad name", "--role", "viewer"], "key name"),
            (["revoke", "cli-desk"], "already revoked"),
            (["revoke", "nobody"], "no key named 'nobody'"),
        ):
            r = runner.invoke(app, args)
            assert isinstance(r.exception, UserError), (args, r.output)
            assert words in str(r.exception)
        r = runner.invoke(app, ["create", "x", "--role", "god"])
        assert r.exit_code == 2
        monkeypatch.setenv("CIMTWIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/x")
        get_settings.cache_clear()
        r = runner.invoke(app, ["list"])
        assert isinstance(r.exception, UserError)
        assert "no PostgreSQL answers" in str(r.exception)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()

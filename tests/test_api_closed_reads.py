"""Closed reads (``open_reads`` off) close every door: the OpenAPI document, the docs pages,
styles, legends, glyphs, /map and /viewer need a key (the pages also take ``?key=`` and then
a cookie); /healthz answers a bare liveness without a key; keyed tiles are private to caches.

Runs on the scratch database (keys are written)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from cimtwin.api.app import create_app
from cimtwin.api.page_gate import COOKIE
from cimtwin.db.engine import libpq_dsn
from cimtwin.settings import Settings
from cimtwin.spatial.access_queries import create_key, revoke_key

DOORS = (
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/styles",
    "/styles/twin.json",
    "/legends",
    "/fonts/cimtwin%20Sans/0-255.pbf",
    "/map",
    "/viewer/",
    "/viewer/map.html",
    "/viewer/js/viewer.js",
    "/viewer/lib/maplibre-gl/maplibre-gl.js",
)


@pytest.fixture(scope="module")
def keys(scratch_database: str) -> dict[str, str]:
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        out = {"viewer": create_key(conn, "closed-viewer", "viewer")[0]}
        out["revoked"] = create_key(conn, "closed-revoked", "admin")[0]
        revoke_key(conn, "closed-revoked")
    return out


@pytest.fixture(scope="module")
def closed(scratch_database: str, keys: dict) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=scratch_database, open_reads=False))
    with TestClient(app, follow_redirects=False) as c:
        yield c


@pytest.fixture(scope="module")
def opened(scratch_database: str, keys: dict) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=scratch_database))) as c:
        yield c


@pytest.mark.parametrize("path", DOORS)
def test_every_door_needs_a_key(closed: TestClient, keys: dict, path: str) -> None:
    closed.cookies.clear()
    r = closed.get(path)
    assert r.status_code == 401, (path, r.status_code)
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["code"] == "Unauthorized"
    assert "open_reads is off" in r.json()["description"]
    r = closed.get(path, headers={"X-API-Key": keys["revoked"]})
    assert r.status_code == 401 and r.json()["description"] == "invalid or revoked key"
    r = closed.get(path, headers={"Authorization": f"Bearer {keys['viewer']}"})
    assert r.status_code in (200, 307), (path, r.status_code, r.text[:200])


def test_every_get_route_is_closed(closed: TestClient, keys: dict) -> None:
    # whatever a router adds later: every GET route without path parameters answers 401
    closed.cookies.clear()
    documented = closed.get("/openapi.json", headers={"X-API-Key": keys["viewer"]}).json()
    plain = [p for p, ops in documented["paths"].items() if "get" in ops and "{" not in p]
    plain = [p for p in plain if p != "/healthz"]
    assert "/collections" in plain and "/styles" in plain
    for path in plain:
        assert closed.get(path).status_code == 401, path


def test_a_page_opened_with_a_key_lets_its_assets_follow(closed: TestClient, keys: dict) -> None:
    closed.cookies.clear()
    r = closed.get(f"/viewer/map.html?key={keys['viewer']}")
    assert r.status_code == 200 and "maplibre" in r.text
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # the page's script and library load with the cookie alone
    assert closed.get("/viewer/js/legend.js").status_code == 200
    assert closed.get("/openapi.json").status_code == 200
    # the cookie counts for the pages only, not for data routes (no cookie-borne reads/writes)
    assert closed.get("/incidents").status_code == 401
    closed.cookies.clear()
    assert closed.get("/viewer/js/legend.js").status_code == 401
    r = closed.get(f"/viewer/map.html?key={keys['revoked']}")
    assert r.status_code == 401 and "set-cookie" not in r.headers


def test_healthz_is_bare_without_a_key(closed: TestClient, opened: TestClient, keys: dict) -> None:
    closed.cookies.clear()
    r = closed.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = closed.get("/healthz", headers={"X-API-Key": keys["viewer"]})
    assert r.status_code == 200 and r.json()["postgis"] and r.json()["postgresql"]
    assert closed.get("/healthz", headers={"X-API-Key": keys["revoked"]}).status_code == 401
    r = opened.get("/healthz")  # open reads: as before
    assert r.status_code == 200 and r.json()["postgis"]


def test_keyed_tiles_are_private(closed: TestClient, opened: TestClient, keys: dict) -> None:
    closed.cookies.clear()
    url = "/tiles/grids/14/13381/7133.mvt"
    r = closed.get(url, headers={"X-API-Key": keys["viewer"]})
    assert r.status_code in (200, 204)
    assert r.headers["cache-control"] == "private, max-age=60"
    vary = {v.strip().lower() for v in r.headers["vary"].split(",")}
    assert {"authorization", "x-api-key", "accept-encoding"} <= vary
    r = closed.get("/fonts/cimtwin%20Sans/0-255.pbf", headers={"X-API-Key": keys["viewer"]})
    assert r.headers["cache-control"].startswith("private")
    r = opened.get(url)
    assert r.headers["cache-control"] == "public, max-age=60"
    assert r.headers["vary"] == "Accept-Encoding"
    r = opened.get("/fonts/cimtwin%20Sans/0-255.pbf")
    assert r.headers["cache-control"].startswith("public")

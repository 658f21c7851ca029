"""The service answers /healthz from the real database and says so when it cannot."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from cimtwin.api.app import create_app
from cimtwin.db.migrate import heads
from cimtwin.settings import Settings


def test_healthz_reports_postgis(settings: Settings, engine: Engine) -> None:
    with engine.connect() as c:
        postgis = c.execute(text("SELECT postgis_lib_version()")).scalar()
    with TestClient(create_app(settings)) as client:
        r = client.get("/healthz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert body["postgis"] == postgis
    assert body["postgresql"].startswith("15") or body["postgresql"][:2].isdigit()
    assert body["schema_revision"] == heads()[0] == "0011"  # the newest shipped migration
    assert body["storage_srid"] == 4547


def test_healthz_503_when_database_is_gone(settings: Settings) -> None:
    dead = Settings(database_url="postgresql://postgres@127.0.0.1:1/nowhere", pool_timeout_s=1)
    with TestClient(create_app(dead)) as client:
        r = client.get("/healthz")
    assert r.status_code == 503
    assert "database unavailable" in r.json()["description"]


def test_openapi_served(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        spec = client.get("/openapi.json").json()
        docs = client.get("/docs")
    assert "/healthz" in spec["paths"]
    assert docs.status_code == 200


def test_cross_origin_viewers_may_read_tiles_and_send_keys(client: TestClient) -> None:
    """A map app on another host: simple reads carry Access-Control-Allow-Origin, and the
    preflight for a write with an API key is allowed."""
    origin = {"Origin": "http://viewer.example:5173"}
    r = client.get("/tiles/pipelines/15/26762/14270.mvt", headers=origin)
    assert r.status_code in (200, 204) and r.headers["access-control-allow-origin"] == "*"
    assert "etag" in r.headers["access-control-expose-headers"].lower()
    r = client.get("/collections", headers=origin)
    assert r.headers["access-control-allow-origin"] == "*"
    r = client.options(
        "/incidents",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert r.status_code == 200
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()


def test_cors_can_be_limited_or_turned_off(settings: Settings, loaded_sample) -> None:
    origin = "http://viewer.example:5173"
    only = settings.model_copy(update={"cors_origins": "https://twin.longhua.example"})
    with TestClient(create_app(only)) as c:
        r = c.get("/collections", headers={"Origin": origin})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        r = c.get("/collections", headers={"Origin": "https://twin.longhua.example"})
        assert r.headers["access-control-allow-origin"] == "https://twin.longhua.example"
    off = settings.model_copy(update={"cors_origins": ""})
    with TestClient(create_app(off)) as c:
        r = c.get("/collections", headers={"Origin": origin})
        assert "access-control-allow-origin" not in r.headers


def test_every_error_has_the_one_format(client: TestClient) -> None:
    """Also errors no router catches: unknown paths, styles, static files, bad methods."""
    for method, path, status in [
        ("GET", "/nosuch", 404),
        ("GET", "/styles/nosuch.json", 404),
        ("GET", "/map/nosuch.js", 404),
        ("DELETE", "/healthz", 405),
    ]:
        r = client.request(method, path)
        assert r.status_code == status, (path, r.text)
        body = r.json()
        assert body["code"] in ("NotFound", "MethodNotAllowed") and body["description"], body

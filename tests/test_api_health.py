"""The service answers /healthz from the real database and says so when it cannot."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from cimtwin.api.app import create_app
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
    assert body["schema_revision"] == "0004"
    assert body["storage_srid"] == 4547


def test_healthz_503_when_database_is_gone(settings: Settings) -> None:
    dead = Settings(database_url="postgresql://postgres@127.0.0.1:1/nowhere", pool_timeout_s=1)
    with TestClient(create_app(dead)) as client:
        r = client.get("/healthz")
    assert r.status_code == 503
    assert "database unavailable" in r.json()["detail"]


def test_openapi_served(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        spec = client.get("/openapi.json").json()
        docs = client.get("/docs")
    assert "/healthz" in spec["paths"]
    assert docs.status_code == 200

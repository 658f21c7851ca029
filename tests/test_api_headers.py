"""Security headers on every answer, and an unhandled error answers a JSON 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cimtwin.api.app import create_app
from cimtwin.settings import Settings


@pytest.fixture(scope="module")
def app(settings: Settings) -> FastAPI:
    app = create_app(settings)

    @app.get("/test-boom", include_in_schema=False)
    async def boom() -> dict:
        raise RuntimeError("secret internals")

    return app


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as c:
        yield c


@pytest.mark.parametrize(
    "path", ["/healthz", "/docs", "/viewer/", "/no-such-path", "/tiles/nope/0/0/0.mvt"]
)
def test_security_headers_everywhere(client: TestClient, path: str) -> None:
    r = client.get(path, headers={"Origin": "https://elsewhere.example"})
    assert r.headers["x-content-type-options"] == "nosniff", path
    assert r.headers["referrer-policy"] == "no-referrer", path


def test_unhandled_error_is_json_500(client: TestClient) -> None:
    r = client.get("/test-boom")
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["code"] == "InternalServerError"
    assert "secret internals" not in r.text
    assert r.headers["x-content-type-options"] == "nosniff"

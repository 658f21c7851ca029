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


def test_a_half_sent_body_is_408(settings: Settings) -> None:
    import asyncio

    from cimtwin.api.hardening import BodyTimeout

    async def echo(scope, receive, send) -> None:  # an app that reads the whole body
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def run(chunks: list[bytes]) -> list[dict]:
        queue: asyncio.Queue = asyncio.Queue()
        for c in chunks:
            queue.put_nowait({"type": "http.request", "body": c, "more_body": c != b"end"})
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
        await BodyTimeout(echo, seconds=0.2)(scope, queue.get, send)
        return sent

    # a body that stops half-way: 408 in the error format, in about the deadline
    sent = asyncio.run(asyncio.wait_for(run([b"{", b"half"]), 5))
    assert sent[0]["status"] == 408
    assert b"RequestTimeout" in sent[1]["body"] and b"0.2 s" in sent[1]["body"]
    # a whole body goes through
    sent = asyncio.run(run([b"{", b"end"]))
    assert sent[0]["status"] == 200


def test_the_app_times_out_slow_bodies(settings: Settings) -> None:
    from cimtwin.api.hardening import BodyTimeout

    app = create_app(settings.model_copy(update={"body_timeout_s": 7.5}))
    found = [m for m in app.user_middleware if m.cls is BodyTimeout]
    assert found and found[0].kwargs["seconds"] == 7.5


def test_an_untrusted_host_gets_no_style(settings: Settings) -> None:
    trusting = settings.model_copy(update={"trusted_hosts": "twin.example.gov.cn, testserver"})
    with TestClient(create_app(trusting)) as c:
        r = c.get("/styles/twin.json", headers={"Host": "evil.example"})
        assert r.status_code == 400 and r.json()["code"] == "InvalidParameterValue"
        assert "evil" not in r.text
        r = c.get("/styles/twin.json", headers={"Host": "twin.example.gov.cn:8443"})
        assert r.status_code == 200
        assert r.json()["glyphs"].startswith("http://twin.example.gov.cn:8443/fonts/")
    public = settings.model_copy(update={"public_url": "https://twin.example.gov.cn/cim"})
    with TestClient(create_app(public)) as c:
        r = c.get("/styles/twin.json", headers={"Host": "evil.example"})
        assert "evil" not in r.text
        assert r.json()["glyphs"].startswith("https://twin.example.gov.cn/cim/fonts/")
        r = c.get("/tiles/grids/tilejson.json", headers={"Host": "evil.example"})
        assert r.json()["tiles"][0].startswith("https://twin.example.gov.cn/cim/tiles/grids/")


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/viewer/", "/viewer/map.html"])
def test_pages_have_a_content_security_policy(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'self'" and csp["object-src"] == "'none'"
    assert "http" not in r.headers["content-security-policy"]  # no foreign origin anywhere
    assert "blob:" in csp["worker-src"]


def test_data_answers_have_no_page_policy(client: TestClient) -> None:
    r = client.get("/healthz")
    assert "content-security-policy" not in r.headers

"""The API docs work without internet: /docs (Swagger UI) and /redoc load every asset from this
service (npm ``swagger-ui-dist`` and ``redoc``, served at /viewer/lib), not a CDN; and
``/map?style=...`` keeps its query string through the redirect to the page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient

from cimtwin.api.app import create_app
from cimtwin.api.viewer import viewer_dir
from cimtwin.settings import Settings
from tests.browser import CHROMIUM, FLAGS, needs_chromium, only_this_server, serve, watch

#: src/href attributes, and the quoted URLs the inline scripts pass (url: '/openapi.json')
REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")
TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",)}


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def references(html: str) -> list[str]:
    return [a or b for a, b in REFERENCE.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_reference_only_this_service(
    client: TestClient, settings: Settings, page: str
) -> None:
    for pkg in ("swagger-ui-dist", "redoc"):
        assert (viewer_dir(settings) / "node_modules" / pkg).is_dir(), (
            f"{pkg} not installed: run scripts/setup.sh (npm ci in viewer/)"
        )
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    # no other host anywhere in the page: no CDN, no Google Fonts, no validator badge
    assert not re.search(r"https?://|//cdn|cdn\.|fonts\.googleapis", html), html
    refs = references(html)
    assert "/openapi.json" in refs, refs
    assets = [u for u in refs if u != "/openapi.json"]
    assert any(u.endswith(".js") for u in assets), assets
    if page == "/docs":
        assert any(u.endswith(".css") for u in assets), assets
    for url in assets:
        assert url.startswith("/viewer/lib/"), url  # same origin, from the npm packages
        got = client.get(url)
        assert got.status_code == 200 and got.content, url
        assert b"https://cdn." not in got.content, url  # nor a CDN fetched by the bundle
        suffix = url[url.rfind(".") :]
        if suffix in TYPES:
            assert got.headers["content-type"].split(";")[0] in TYPES[suffix], (url, got.headers)
    assert "/docs/oauth2-redirect" in html or page == "/redoc"
    assert client.get("/docs/oauth2-redirect").status_code == 200


def test_docs_pages_follow_the_document_rule_on_closed_reads(scratch_database: str) -> None:
    """open_reads off: the pages answer as /openapi.json does (nothing weaker, nothing new)."""
    closed = Settings(database_url=scratch_database, open_reads=False)
    with TestClient(create_app(closed)) as c:
        spec = c.get("/openapi.json").status_code
        assert c.get("/docs").status_code == spec
        assert c.get("/redoc").status_code == spec
        assert c.get("/incidents").status_code == 401  # the data stays closed


def test_docs_pages_are_not_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]


def test_map_redirect_keeps_the_query_string(client: TestClient) -> None:
    r = client.get("/map?style=parcels&z=15", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == (
        "/viewer/map.html?style=parcels&z=15"
    )
    r = client.get("/map", follow_redirects=False)
    assert r.headers["location"] == "/viewer/map.html"
    r = client.get("/map?style=pipelines")  # and the page itself is there
    assert r.status_code == 200 and str(r.url).endswith("/viewer/map.html?style=pipelines")


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[str]:
    """The API on a free loopback port in a thread, for a real browser."""
    yield from serve(settings)


def open_in_chromium(base: str, page_path: str, selector: str) -> tuple[int, list[str], set[str]]:
    """Open a docs page, wait for ``selector``; (how many, problems, hosts asked)."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    hosts: set[str] = set()

    def seen(url: str) -> None:
        if not url.startswith(("data:", "blob:")):
            hosts.add(urlsplit(url).netloc)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.route("**/*", only_this_server(base, problems, seen))
        watch(page, problems)
        page.goto(urljoin(base, page_path))
        page.wait_for_selector(selector, state="attached", timeout=60_000)
        page.wait_for_load_state("networkidle")
        count = page.locator(selector).count()
        browser.close()
    return count, problems, hosts


@needs_chromium
def test_swagger_ui_renders_the_operations_offline(served: str) -> None:
    count, problems, hosts = open_in_chromium(served, "/docs", ".opblock")
    assert problems == [], problems
    assert hosts == {urlsplit(served).netloc}, hosts
    assert count >= 10, count


@needs_chromium
def test_redoc_renders_the_operations_offline(served: str) -> None:
    # ReDoc draws one menu entry per operation (a label with the HTTP method)
    count, problems, hosts = open_in_chromium(served, "/redoc", "span.operation-type")
    assert problems == [], problems
    assert hosts == {urlsplit(served).netloc}, hosts
    assert count >= 10, count

"""CesiumJS (npm ``cesium``, served by cimtwin; no CDN, no Cesium ion) loads every tileset that
``GET /3dtiles`` lists in headless Chromium: no console error, no failed or outside request,
each tileset with loaded contents and triangles."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cimtwin.api.viewer import viewer_dir
from cimtwin.settings import Settings
from tests.conftest import wait_until_healthy
from tests.test_threed_api import make_tileset

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian chromium is not installed (scripts/setup.sh installs it when run as root)",
)
#: WebGL in software (SwiftShader): no GPU on CI machines
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--ignore-gpu-blocklist",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def serve(settings: Settings) -> Iterator[str]:
    """The API on a free loopback port in a thread, for a real browser."""
    import uvicorn

    from cimtwin.api.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(url)
    yield url
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def hand_made(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("3dtiles")
    make_tileset(root / "check", title="A box at the North Station")
    yield from serve(settings.model_copy(update={"tiles_dir": str(root)}))


def load_in_cesium(base: str, query: str = "") -> tuple[dict[str, Any], list[str], list[str]]:
    """Open the check page; (its report, problems seen by the browser, URLs it asked for)."""
    from playwright.sync_api import Route, sync_playwright

    problems: list[str] = []
    requested: list[str] = []

    def only_this_server(route: Route) -> None:
        url = route.request.url
        requested.append(url)
        if url.startswith(base) or url.startswith("data:") or url.startswith("blob:"):
            route.continue_()
        else:
            problems.append(f"outside request {url}")
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 800, "height": 600})
        page.route("**/*", only_this_server)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on(
            "response",
            lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
        )
        page.on("requestfailed", lambda r: problems.append(f"failed {r.url}: {r.failure}"))
        page.goto(f"{base}/viewer/threed-check.html{query}")
        page.wait_for_function("window.cimtwin3d && window.cimtwin3d.ready", timeout=120_000)
        report = page.evaluate("window.cimtwin3d")
        browser.close()
    return report, problems, requested


def test_cesium_is_installed_and_served(hand_made: str, settings: Settings) -> None:
    import httpx

    assert (viewer_dir(settings) / "node_modules/cesium/Build/Cesium/Cesium.js").is_file(), (
        "cesium not installed: run scripts/setup.sh (npm ci in viewer/)"
    )
    r = httpx.get(f"{hand_made}/viewer/lib/cesium/Cesium.js")
    assert (
        r.status_code == 200 and b"Cesium - https://github.com/CesiumGS/cesium" in r.content[:500]
    )
    # only the build is served, not the package's sources or node_modules
    assert httpx.get(f"{hand_made}/viewer/lib/cesium/package.json").status_code == 404


def test_cesium_loads_a_hand_made_tileset(hand_made: str) -> None:
    report, problems, requested = load_in_cesium(hand_made)
    assert problems == [] and report["errors"] == [], (problems, report["errors"])
    (ts,) = report["tilesets"]
    assert ts["id"] == "check" and ts["url"] == f"{hand_made}/3dtiles/check/tileset.json"
    # the root box and the box of the external tileset under it, 12 triangles each
    assert ts["rootReady"] and ts["readyContents"] >= 2 and ts["triangles"] == 24, ts
    assert report["picked"] == "check"  # drawn where the camera looks
    asked = {u.removeprefix(hand_made) for u in requested}
    assert {"/3dtiles/check/tiles/0.glb", "/3dtiles/check/nested/b.glb"} <= asked
    assert any(u.startswith("/viewer/lib/cesium/Assets/Textures/NaturalEarthII/") for u in asked)

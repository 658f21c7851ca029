"""MapLibre GL JS (npm, served by cimtwin) renders the pipeline style in headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cimtwin import reference
from cimtwin.api.viewer import viewer_dir
from cimtwin.settings import Settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian chromium is not installed (scripts/setup.sh installs it when run as root)",
)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _hex(c: str) -> np.ndarray:
    return np.array([int(c[i : i + 2], 16) for i in (1, 3, 5)])


def test_pipeline_style_renders_in_standard_colours(
    live_server: str, settings: Settings, tmp_path: Path
) -> None:
    assert (viewer_dir(settings) / "node_modules/maplibre-gl/dist").is_dir(), (
        "maplibre-gl not installed: run scripts/setup.sh (npm ci in viewer/)"
    )
    from PIL import Image
    from playwright.sync_api import sync_playwright

    console_errors: list[str] = []
    shot = tmp_path / "pipelines.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1024, "height": 768})
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: console_errors.append(str(e)))
        page.on(
            "response",
            lambda r: (
                console_errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None
            ),
        )
        page.goto(f"{live_server}/viewer/map.html?style=pipelines&z=16")
        page.wait_for_function("window.cimtwinReady === true", timeout=60_000)
        errors = page.evaluate("window.cimtwinErrors")
        page.screenshot(path=str(shot))
        browser.close()
    assert console_errors == [] and errors == [], (console_errors, errors)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    colours = {}
    for t in reference.pipeline_types():
        colours.setdefault(t.major_code, t.color_hex)
    found = {}
    for net, hexcol in colours.items():
        near = (np.abs(img - _hex(hexcol)).max(axis=2) <= 8).sum()
        found[net] = int(near)
    # the sample has water, drainage, gas, power and telecom under the station's roads
    for net in ("JS", "PS", "RQ", "DL", "TX"):
        assert found[net] >= 30, (net, found)


def test_grid_style_draws_labels_from_local_glyphs(live_server: str, tmp_path: Path) -> None:
    """Grid codes are drawn as text: glyphs come from this server, not a CDN."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    glyph_requests: list[str] = []
    shot = tmp_path / "grids.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1024, "height": 768})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on(
            "response",
            lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
        )
        page.on("request", lambda r: glyph_requests.append(r.url) if "/fonts/" in r.url else None)
        page.goto(f"{live_server}/viewer/map.html?style=grids&z=15")
        page.wait_for_function("window.cimtwinReady === true", timeout=60_000)
        problems += page.evaluate("window.cimtwinErrors")
        page.screenshot(path=str(shot))
        browser.close()
    assert problems == []
    assert glyph_requests and all(u.startswith(live_server) for u in glyph_requests)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    label = (np.abs(img - _hex("#073763")).max(axis=2) <= 40).sum()
    assert label > 200, label  # dark blue text of the grid codes (and community lines)

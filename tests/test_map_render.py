"""MapLibre GL JS (npm, served by cimtwin) renders the pipeline style in headless Chromium."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cimtwin import reference
from cimtwin.api.viewer import viewer_dir
from cimtwin.settings import Settings
from tests.browser import CHROMIUM, FLAGS, needs_chromium

pytestmark = needs_chromium


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


def _idle_after(page: Any, js: str) -> None:
    """Run ``js`` (with ``m`` the map) and wait until MapLibre is idle again."""
    page.evaluate(
        "(js) => new Promise((done) => { const m = window.cimtwinMap;"
        " m.once('idle', () => done(null)); new Function('m', js)(m); m.triggerRepaint(); })",
        js,
    )


def test_grid_names_render_in_chinese_from_server_glyphs(live_server: str, tmp_path: Path) -> None:
    """Grid names (民治社区第01网格 ...) are drawn with CJK glyphs served by /fonts: a render with
    ideograph-only labels differs from one without the label layer where the labels sit."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    cjk_ranges: dict[str, int] = {}

    def on_response(r: Any) -> None:
        if r.status >= 400:
            problems.append(f"HTTP {r.status} {r.url}")
        elif "/fonts/" in r.url and int(r.url.rsplit("/", 1)[1].split("-")[0]) >= 0x3000:
            cjk_ranges[r.url.rsplit("/", 1)[1]] = len(r.body())

    shots = {k: tmp_path / f"grids-{k}.png" for k in ("names", "none", "ideographs")}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1024, "height": 768})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("response", on_response)
        page.goto(f"{live_server}/viewer/map.html?style=grids&z=16")
        page.wait_for_function("window.cimtwinReady === true", timeout=60_000)
        page.screenshot(path=str(shots["names"]))
        _idle_after(page, "m.setLayoutProperty('grids-label', 'visibility', 'none')")
        page.screenshot(path=str(shots["none"]))
        # only the ideographs of each name (民治, 白石, ...): no digit or Latin glyph can draw them
        _idle_after(
            page,
            "m.setLayoutProperty('grids-label', 'text-field', ['slice', ['get', 'name'], 0, 2]);"
            "m.setLayoutProperty('grids-label', 'visibility', 'visible')",
        )
        page.screenshot(path=str(shots["ideographs"]))
        problems += page.evaluate("window.cimtwinErrors")
        browser.close()
    assert problems == []
    # 民 (U+6C11) is in 27648-27903: the names' ranges were asked for and are not empty
    assert cjk_ranges.get("27648-27903.pbf", 0) > 10_000, cjk_ranges
    img = {k: np.asarray(Image.open(v).convert("RGB")).astype(int) for k, v in shots.items()}
    for k in ("names", "ideographs"):
        changed = np.abs(img[k] - img["none"]).max(axis=2) > 80
        dark = (np.abs(img[k] - _hex("#073763")).max(axis=2) <= 40) & changed
        assert int(dark.sum()) > 300, (k, int(dark.sum()))  # dark blue strokes of the labels


def test_parcels_are_labelled_with_their_land_use_in_chinese(
    live_server: str, tmp_path: Path
) -> None:
    """Parcels carry their GB 50137 land-use name (二类居住用地, 商业用地 ...) as a label."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    shots = {k: tmp_path / f"parcels-{k}.png" for k in ("labels", "none")}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1024, "height": 768})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on(
            "response",
            lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
        )
        page.goto(f"{live_server}/viewer/map.html?style=parcels&z=16")
        page.wait_for_function("window.cimtwinReady === true", timeout=60_000)
        page.screenshot(path=str(shots["labels"]))
        _idle_after(page, "m.setLayoutProperty('parcels-label', 'visibility', 'none')")
        page.screenshot(path=str(shots["none"]))
        problems += page.evaluate("window.cimtwinErrors")
        browser.close()
    assert problems == []
    img = {k: np.asarray(Image.open(v).convert("RGB")).astype(int) for k, v in shots.items()}
    changed = np.abs(img["labels"] - img["none"]).max(axis=2) > 80
    dark = (np.abs(img["labels"] - _hex("#333333")).max(axis=2) <= 40) & changed
    assert int(dark.sum()) > 300, int(dark.sum())  # the ideographs of the land-use names

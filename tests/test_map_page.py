"""The 2D map page (/map, MapLibre in headless Chromium): the twin style with every theme over
its own basemap, the theme panel, the legend, Chinese labels, buildings extruded at pitch and
popups with the clicked feature's record. Pixel checks use the colours /legends serves."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.browser import CHROMIUM, FLAGS, needs_chromium, only_this_server

pytestmark = needs_chromium

VIEWPORT = {"width": 1024, "height": 768}
#: water, drainage, gas, power, telecom: the networks under the sample's streets
SAMPLE_NETWORKS = ("JS", "PS", "RQ", "DL", "TX")


def _rgb(c: str) -> np.ndarray:
    return np.array([int(c[i : i + 2], 16) for i in (1, 3, 5)])


def _near(img: np.ndarray, colour: np.ndarray, tol: int = 8) -> np.ndarray:
    return np.abs(img - colour).max(axis=2) <= tol


class MapPage:
    """One page of the map with everything that went wrong on it: console errors, failed
    responses and requests to anything but the test server; and the CJK glyph ranges read."""

    def __init__(
        self, browser: Any, base: str, path: str, shots: Path, viewport: dict = VIEWPORT
    ) -> None:
        self.problems: list[str] = []
        self.cjk_glyphs: dict[str, int] = {}
        self.shots = shots
        self.page = browser.new_page(viewport=viewport)
        self.page.route("**/*", only_this_server(base, self.problems))
        self.page.on(
            "console", lambda m: self.problems.append(m.text) if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))
        self.page.on("response", self._response)
        self.page.goto(base + path)
        self.page.wait_for_function("document.body.dataset.ready", timeout=60_000)

    def _response(self, r: Any) -> None:
        if r.status >= 400:
            self.problems.append(f"HTTP {r.status} {r.url}")
        elif "/fonts/" in r.url:
            start = int(r.url.rsplit("/", 1)[1].split("-")[0])
            if start >= 0x3000:  # CJK symbols and ideographs onwards
                self.cjk_glyphs[r.url.rsplit("/", 1)[1]] = len(r.body())

    def ready(self) -> None:
        state = self.page.evaluate("[document.body.dataset.ready, document.body.dataset.error]")
        assert state == ["true", None], state
        assert self.page.evaluate("window.cimtwinReady") is True
        assert self.page.evaluate("window.cimtwinErrors") == []

    def settle(self, js: str = "") -> None:
        """Run ``js`` (``m`` is the map) and wait until MapLibre has drawn everything again
        (resolving with null: the idle event holds the whole map, slow to serialise)."""
        self.page.evaluate(
            "(js) => new Promise((done) => { const m = window.cimtwinMap;"
            " m.once('idle', () => done(null)); new Function('m', js)(m); m.triggerRepaint(); })",
            js,
        )

    def shot(self, name: str) -> np.ndarray:
        from PIL import Image

        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        img = np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB")).astype(int)
        # only the map counts: the panel and the legend (its swatches) are blanked out
        for x, y, w, h in self.page.evaluate(
            "[...document.querySelectorAll('.box')].map((e) => {"
            " const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })"
        ):
            img[int(y) : int(y + h) + 2, int(x) : int(x + w) + 2] = -1000
        return img

    def toggle(self, theme: str) -> None:
        """Click a theme's visibility box in the panel and wait for the map to redraw."""
        self.page.evaluate(
            "(t) => new Promise((done) => { const m = window.cimtwinMap;"
            " m.once('idle', () => done(null));"
            " document.querySelector(`#theme-list [data-theme='${t}'] input.visible`).click();"
            " m.triggerRepaint(); })",
            theme,
        )

    def themes(self, selector: str) -> set[str]:
        return set(
            self.page.evaluate(
                "(s) => [...document.querySelectorAll(s)].map((e) => e.dataset.theme)", selector
            )
        )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def legends(live_server: str) -> dict[str, dict]:
    return {t["id"]: t for t in httpx.get(f"{live_server}/legends").json()["themes"]}


@pytest.fixture(scope="module")
def twin_style(live_server: str) -> dict[str, dict]:
    style = httpx.get(f"{live_server}/styles/twin.json").json()
    return {layer["id"]: layer for layer in style["layers"]}


def test_twin_style_is_complete() -> None:
    """Every placeholder filled, every layer from one catalogue layer of the composite
    source, every theme's layers named after it, and the glyphs from this server."""
    import json

    from cimtwin import styles
    from cimtwin.spatial.catalogue import BY_ID

    doc = styles.render("twin", "http://host")
    assert "$" not in json.dumps(doc)
    assert doc["glyphs"].startswith("http://host/fonts/")
    (source,) = doc["sources"].values()
    served = source["url"].split("/tiles/")[1].split("/")[0].split(",")
    assert set(served) <= set(BY_ID)
    themes = set()
    for layer in doc["layers"]:
        theme = layer["metadata"]["cimtwin:theme"]
        themes.add(theme)
        # ids grouped by theme (grids-..., and the grids' community outlines)
        assert layer["id"].startswith(theme + "-") or layer["id"] == "communities-outline"
        if layer["type"] != "background":
            assert layer["source-layer"] in served, layer["id"]
    assert themes == {
        "base",
        "parcels",
        "buildings",
        "pipelines",
        "grids",
        "components",
        "incidents",
    }
    (extrusion,) = [la for la in doc["layers"] if la["type"] == "fill-extrusion"]
    assert extrusion["source-layer"] == "buildings"
    assert ["get", "height_m"] in extrusion["paint"]["fill-extrusion-height"]


def _land_use(legends: dict[str, dict], code: str) -> np.ndarray:
    return _rgb(next(e["color"] for e in legends["parcels"]["entries"] if e["value"] == code))


def _networks(legends: dict[str, dict]) -> dict[str, np.ndarray]:
    return {e["value"]: _rgb(e["color"]) for e in legends["pipelines"]["entries"]}


def test_parcels_style_shows_land_use_colours_chinese_labels_and_its_legend(
    browser: Any, live_server: str, legends: dict[str, dict], tmp_path: Path
) -> None:
    # through /map: the redirect keeps the query string
    m = MapPage(browser, live_server, "/map?style=parcels&z=16&fade=0", tmp_path)
    m.ready()
    assert m.page.url == f"{live_server}/viewer/map.html?style=parcels&z=16&fade=0"
    assert m.page.evaluate("document.getElementById('style').value") == "parcels"
    assert m.themes("#legend [data-theme]") == {"parcels"}
    assert m.themes("#theme-list [data-theme]") == {"base", "parcels"}
    labelled = m.shot("parcels-labels")
    m.settle("m.setLayoutProperty('parcels-label', 'visibility', 'none')")
    bare = m.shot("parcels-no-labels")
    m.page.close()
    assert m.problems == [], m.problems
    # fills: 75 % of the GB 50137 colour over the white background
    for code in ("R", "B", "A", "G"):
        drawn = 0.75 * _land_use(legends, code) + 0.25 * 255
        assert int(_near(bare, drawn, 10).sum()) > 2000, code
    # the labels are land-use names, ideographs only (二类居住用地 ...): their dark strokes
    # appear where the label layer is drawn, from the CJK glyph ranges the page asked for
    changed = np.abs(labelled - bare).max(axis=2) > 80
    strokes = _near(labelled, _rgb("#333333"), 40) & changed
    assert int(strokes.sum()) > 300, int(strokes.sum())
    assert m.cjk_glyphs.get("22272-22527.pbf", 0) > 10_000, m.cjk_glyphs  # 地 U+5730


def test_twin_style_shows_every_theme_over_its_own_basemap(
    browser: Any,
    live_server: str,
    legends: dict[str, dict],
    twin_style: dict[str, dict],
    tmp_path: Path,
) -> None:
    m = MapPage(browser, live_server, "/map?z=16&fade=0", tmp_path)  # no style: the twin
    m.ready()
    assert m.page.evaluate("document.getElementById('style').value") == "twin"
    assert m.themes("#legend [data-theme]") == {
        "parcels",
        "pipelines",
        "components",
        "incidents",
        "grids",
        "buildings",
    }
    assert m.themes("#theme-list [data-theme]") == {
        "base",
        "parcels",
        "pipelines",
        "buildings",
        "grids",
        "components",
        "incidents",
    }
    img = m.shot("twin")
    # land use: translucent fills over the basemap's white blocks
    alpha = twin_style["parcels-fill"]["paint"]["fill-opacity"]
    block = _rgb(twin_style["base-blocks"]["paint"]["fill-color"])
    parcels = {
        code: int(_near(img, alpha * _land_use(legends, code) + (1 - alpha) * block, 10).sum())
        for code in ("R", "B", "A", "G")
    }
    assert all(n > 1500 for n in parcels.values()), parcels
    # pipes in their CJJ 61 network colours (the sample's networks: heat's orange, for one,
    # is also a component class colour)
    networks = {k: c for k, c in _networks(legends).items() if k in SAMPLE_NETWORKS}
    pipes = {net: int(_near(img, c).sum()) for net, c in networks.items()}
    assert sum(n >= 100 for n in pipes.values()) >= 4, pipes
    # streets: the basemap's road surface between the blocks
    road = _rgb(twin_style["base-streets"]["paint"]["fill-color"])
    assert int(_near(img, road, 4).sum()) > 5000

    # a click on a parcel opens a popup with its record
    parcel, (x, y) = _feature_point(m, live_server, "parcels", "parcels-fill")
    m.page.mouse.click(x, y)
    popup = m.page.wait_for_selector(
        ".maplibregl-popup .feature-popup[data-collection='parcels'] .record[data-record='loaded']",
        timeout=10_000,
    )
    m.shot("twin-popup")
    text = m.page.inner_text(".maplibregl-popup .feature-popup")
    record = popup.inner_text()
    props = parcel["properties"]
    assert props["parcel_code"] in text
    # from the record, not the tile: the tiles carry no area nor grid
    assert "area_m2" in record and props["grid_code"] in record, record
    # the 3D viewer link looks at the same place
    href = m.page.get_attribute("#viewer-link", "href")
    match = re.fullmatch(r"/viewer/#([\d.]+),([\d.]+),(\d+),0,-45", href or "")
    assert match, href
    centre = m.page.evaluate("window.cimtwinMap.getCenter().toArray()")
    assert abs(float(match[1]) - centre[0]) < 1e-5 and float(match[2]) < centre[1]
    # and on a building, with its building code
    building, (x, y) = _feature_point(m, live_server, "buildings", "buildings-extrusion")
    m.page.mouse.click(x, y)
    m.page.wait_for_selector(
        ".feature-popup[data-collection='buildings'] .record[data-record='loaded']", timeout=10_000
    )
    heading = m.page.inner_text(".maplibregl-popup .feature-popup h2")
    assert building["properties"]["building_code"] in heading, heading
    m.page.evaluate("window.cimtwinPopup.remove()")

    # the opacity slider: land use at half its opacity
    m.settle(
        "const s = document.querySelector(\"#theme-list [data-theme='parcels'] input.opacity\");"
        " s.value = '0.5'; s.dispatchEvent(new Event('input'))"
    )
    half = m.shot("twin-parcels-half")
    faint = {c: alpha * 0.5 * _land_use(legends, c) + (1 - alpha * 0.5) * block for c in parcels}
    halved = {c: int(_near(half, tint, 10).sum()) for c, tint in faint.items()}
    assert all(n > 1500 for n in halved.values()), halved

    # the panel hides a theme: its colours vanish, the others stay
    m.toggle("pipelines")
    hidden = m.shot("twin-no-pipelines")
    left = {net: int(_near(hidden, c).sum()) for net, c in networks.items()}
    for net, n in pipes.items():
        assert left[net] < n * 0.05, (net, n, left[net])
    m.toggle("parcels")
    bare = m.shot("twin-no-parcels")
    for code, n in halved.items():
        assert int(_near(bare, faint[code], 10).sum()) < n * 0.05, code
    assert int(_near(bare, block, 2).sum()) > 20_000  # the white blocks of the basemap remain
    m.page.close()
    assert m.problems == [], m.problems


def test_buildings_are_extruded_when_the_map_is_tilted(
    browser: Any, live_server: str, tmp_path: Path
) -> None:
    # a smaller view: software WebGL draws tilted extrusions slowly
    m = MapPage(browser, live_server, "/map?z=16&fade=0", tmp_path, {"width": 800, "height": 600})
    m.ready()
    assert m.page.evaluate("window.cimtwinMap.getPitch()") == 0
    m.page.click("#pitch-toggle")
    m.page.wait_for_function("window.cimtwinMap.getPitch() > 59.9", timeout=10_000)
    m.settle()
    rendered = m.page.evaluate(
        "window.cimtwinMap.queryRenderedFeatures({layers: ['buildings-extrusion']})"
        ".map((f) => f.properties.height_m)"
    )
    assert len(rendered) > 20 and max(rendered) > 50, rendered
    tilted = m.shot("twin-pitch-60")
    m.toggle("buildings")
    flat = m.shot("twin-pitch-60-no-buildings")
    # the buildings' walls and roofs: grey (the extrusion colour, shaded), a large share of
    # the view at this tilt
    changed = np.abs(tilted - flat).max(axis=2) > 30
    grey = (tilted.max(axis=2) - tilted.min(axis=2)) < 24
    assert changed.mean() > 0.08, changed.mean()
    assert (changed & grey).sum() > 0.7 * changed.sum(), ((changed & grey).sum(), changed.sum())
    m.page.click("#pitch-toggle")
    m.page.wait_for_function("window.cimtwinMap.getPitch() < 0.1", timeout=10_000)
    m.page.close()
    assert m.problems == [], m.problems


#: the topmost themed (not basemap) feature drawn at a place, where the map is not covered
#: by the panel or the legend: [layer id, feature id, x, y], or null
TOP_FEATURE = """([lon, lat]) => {
  const m = window.cimtwinMap;
  const p = m.project([lon, lat]);
  if (document.elementFromPoint(p.x, p.y) !== m.getCanvas()) return null;
  const hits = m.queryRenderedFeatures([[p.x - 3, p.y - 3], [p.x + 3, p.y + 3]])
    .filter((f) => !f.layer.id.startsWith("base-"));
  return hits.length ? [hits[0].layer.id, hits[0].id, p.x, p.y] : null;
}"""


def _feature_point(
    m: MapPage, base: str, collection: str, layer_id: str
) -> tuple[dict, tuple[float, float]]:
    """A feature of ``collection`` in the view and a screen point where it is the topmost
    feature drawn (on the style layer ``layer_id``)."""
    from shapely.geometry import Point, shape

    west, south, east, north = m.page.evaluate("window.cimtwinMap.getBounds().toArray().flat()")
    bbox = f"{west},{south},{east},{north}"
    features = httpx.get(
        f"{base}/collections/{collection}/items", params={"bbox": bbox, "limit": 50}
    )
    for feature in features.json()["features"]:
        polygon = shape(feature["geometry"])
        x0, y0, x1, y1 = polygon.bounds
        for fx in np.linspace(0.2, 0.8, 5):
            for fy in np.linspace(0.2, 0.8, 5):
                lon, lat = x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)
                if not polygon.contains(Point(lon, lat)):
                    continue
                top = m.page.evaluate(TOP_FEATURE, [lon, lat])
                if top and top[0] == layer_id and top[1] == feature["id"]:
                    return feature, (top[2], top[3])
    raise AssertionError(f"no point on a feature of {collection} found in the view")


def test_an_unknown_style_sets_the_error_flag(
    browser: Any, live_server: str, tmp_path: Path
) -> None:
    m = MapPage(browser, live_server, "/map?style=nosuch", tmp_path)
    assert m.page.evaluate("document.body.dataset.ready") == "error"
    assert "nosuch" in m.page.evaluate("document.body.dataset.error")
    assert m.page.evaluate("window.cimtwinReady") is False
    m.page.close()

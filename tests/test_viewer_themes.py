"""The 3D viewer's draped 2D themes (js/drape.js) in headless Chromium, in one browser session:
theme rows and legends, pixels of buildings, land-use fills and grid lines from a fixed camera
over the station, pipe colours of the CJJ 61 networks with the underground control on,
picking a draped parcel and a pipe, and the scale bar against the camera's own geometry."""

from __future__ import annotations

import colorsys
import math
import time
from pathlib import Path

import numpy as np

from tests.browser import CHROMIUM, FLAGS, SOFTWARE_GL, needs_chromium, only_this_server, watch

pytestmark = needs_chromium
#: a fixed camera south of the station looking north: lon, lat, height (m), heading, pitch
HASH = "#114.0239,22.6060,900,0,-40"
#: straight down, 45 m above a road where five networks run side by side (sample data)
PIPES_VIEW = (114.0192, 22.6118, 115.0)
THEMES = ["parcels", "grids", "components", "incidents"]
SHOWN = {"parcels", "grids", "incidents"}
W, H = 800, 600
PANEL_PX = 280  # the width of the layer panel and legend column
#: the shown frame after a change: CesiumJS renders continuously; wait for fresh frames
FRAMES = """() => new Promise((resolve) => { let n = 0;
  const off = cimtwinViewer.viewer.scene.postRender.addEventListener(() => {
    if (++n >= 2) { off(); resolve(); } }); })"""


def hsv(png: Path) -> np.ndarray:
    """The screenshot as an (h, w, 3) array of hue (degrees), saturation and value (0..1)."""
    from PIL import Image

    # only the 3D view right of the panels on the left (their sliders are blue)
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64)[:, PANEL_PX:] / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    delta = high - low
    safe = np.where(delta == 0, 1, delta)
    hue = np.where(
        high == r,
        ((g - b) / safe) % 6,
        np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4),
    )
    hue = np.where(delta == 0, 0, hue * 60.0)
    sat = np.where(high == 0, 0, delta / np.where(high == 0, 1, high))
    return np.stack([hue, sat, high], axis=2)


def hue_of(color: str) -> tuple[float, float, float]:
    r, g, b = (int(color[i : i + 2], 16) / 255 for i in (1, 3, 5))
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    return h * 360, s, v


def count_like(
    pixels: np.ndarray, color: str, tol: float = 12, sat: float = 0.45, value: float = 0.25
) -> int:
    """Pixels of this colour's hue (within ``tol`` degrees), saturated and not dark.
    Shading (sun light, the translucent ground over the pipes, the fills' alpha over the
    terrain) scales a colour's RGB and greys it a little, but keeps its hue: comparing hues
    of saturated pixels is what survives it (a plain RGB distance does not). Thin lines blend
    with the ground under them: they need a wider ``tol`` and a lower ``sat``."""
    want, _, _ = hue_of(color)
    distance = np.abs((pixels[..., 0] - want + 180) % 360 - 180)
    return int(np.sum((distance <= tol) & (pixels[..., 1] >= sat) & (pixels[..., 2] >= value)))


def vivid(entries: list[dict]) -> list[dict]:
    """Legend entries whose colour has a hue to find (not grey, black or dark brown)."""
    return [e for e in entries if hue_of(e["color"])[1] > 0.6 and hue_of(e["color"])[2] > 0.6]


def test_viewer_themes(viewer_site: str, engine, tmp_path: Path) -> None:
    import httpx
    from playwright.sync_api import sync_playwright

    from tests.conftest import q

    base = viewer_site
    legends = {t["id"]: t for t in httpx.get(f"{base}/legends").json()["themes"]}
    region = httpx.get(f"{base}/3dtiles/terrain/tileset.json").json()["root"]["boundingVolume"]
    ground = (region["region"][4] + region["region"][5]) / 2  # the terrain's mean height
    problems: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": W, "height": H})
        page.route("**/*", only_this_server(base, problems))
        watch(page, problems)
        started = time.monotonic()
        page.goto(f"{base}/viewer/?{SOFTWARE_GL}{HASH}")
        page.wait_for_function("document.body.dataset.ready", timeout=180_000)
        seconds = time.monotonic() - started
        state = page.evaluate("[document.body.dataset.ready, document.body.dataset.error]")
        assert state == ["true", None], (state, problems)
        print(f"viewer with themes ready in {seconds:.1f} s")

        def shot(name: str) -> np.ndarray:
            print(f"{time.monotonic() - started:.1f} s: {name}")
            page.evaluate(FRAMES)
            path = tmp_path / f"{name}.png"
            page.screenshot(path=str(path))
            return hsv(path)

        # checkboxes clicked in the page: Playwright's own click waits for the element to be
        # still over animation frames, slow while CesiumJS renders in software
        def show_themes(wanted: set[str]) -> None:
            page.evaluate(
                """wanted => { for (const box of document.querySelectorAll(
                  '#theme-list label[data-theme] input.visible')) {
                  const on = wanted.includes(box.closest('label').dataset.theme);
                  if (box.checked !== on) box.click();
                } }""",
                sorted(wanted),
            )

        def show_tileset(tileset: str, on: bool) -> None:
            page.eval_on_selector(
                f"label[data-tileset={tileset}] input.visible",
                "(box, on) => { if (box.checked !== on) box.click(); }",
                on,
            )

        def legend() -> list[str]:
            return page.eval_on_selector_all(
                "#legend .legend-theme", "bs => bs.map(b => b.dataset.theme)"
            )

        # the theme rows: one per theme, a checkbox and a slider; parcels, grids, incidents on
        rows = page.eval_on_selector_all(
            "#theme-list label",
            "ls => ls.map(l => [l.dataset.theme, l.querySelector('input.visible').checked,"
            " !!l.querySelector('input.opacity')])",
        )
        assert sorted(r[0] for r in rows) == sorted(THEMES), rows
        assert {r[0] for r in rows if r[1]} == SHOWN and all(r[2] for r in rows), rows
        # the legend: the shown themes and the pipelines (the pipes tileset's colours)
        assert sorted(legend()) == sorted(SHOWN | {"pipelines"})
        entries = page.eval_on_selector_all(
            "#legend [data-theme=parcels] .legend-entry", "es => es.map(e => e.dataset.value)"
        )
        assert entries == [str(e["value"]) for e in legends["parcels"]["entries"]]
        shot("view")  # everything as it opens, for the eye

        # buildings: their colours (their use's land-use colour) with the themes off, and
        # (nearly) none of them once the buildings are hidden as well
        show_themes(set())
        assert legend() == ["pipelines"]
        colours = ["#ffff00", "#ff0000", "#ff00bf"]  # R, B, A: the sample's building uses
        buildings = shot("buildings")
        with_buildings = sum(count_like(buildings, c, sat=0.6) for c in colours)
        show_tileset("buildings", False)
        bare = shot("bare")
        without = sum(count_like(bare, c, sat=0.6) for c in colours)
        assert with_buildings > 5000 and without < with_buildings / 20, (with_buildings, without)
        # land use: the parcels' fills on the ground (buildings hidden: they share the colours)
        show_themes({"parcels"})
        parcels = shot("parcels")
        land = {
            e["value"]: (count_like(parcels, e["color"]), count_like(bare, e["color"]))
            for e in vivid(legends["parcels"]["entries"])
        }
        assert sum(1 for on, off in land.values() if on > 500 and off < on / 10) >= 2, land
        # grid lines: the grid and community outline colours, only where the grids theme is
        show_themes({"grids"})
        grids = shot("grids")
        line = [
            (
                count_like(grids, e["color"], 15, 0.3, 0.15),
                count_like(bare, e["color"], 15, 0.3, 0.15),
            )
            for e in legends["grids"]["entries"]
        ]
        assert any(on > 300 and off < on / 10 for on, off in line), line

        # picking a draped parcel: large parcels' inner points on screen, from the camera
        show_themes({"parcels", "grids", "incidents"})
        # (inner points 25 m from any grid outline: on an outline the grid is what is picked)
        inner = q(
            engine,
            "SELECT id, parcel_code, ST_X(p), ST_Y(p) FROM (SELECT id, parcel_code,"
            " ST_Transform(ST_PointOnSurface(ST_Difference(geom, (SELECT"
            " ST_Union(ST_Buffer(ST_Boundary(geom), 25)) FROM cim.work_grid))), 4326) AS p"
            " FROM cim.parcel ORDER BY ST_Area(geom) DESC LIMIT 40) t"
            " WHERE p IS NOT NULL AND NOT ST_IsEmpty(p)",
        )
        spots = page.evaluate(
            """([points, height, w, h]) => points.map(([id, code, lon, lat]) => {
              const s = Cesium.SceneTransforms.worldToWindowCoordinates(cimtwinViewer.viewer.scene,
                Cesium.Cartesian3.fromDegrees(lon, lat, height));
              return s && s.x > 300 && s.x < w - 20 && s.y > 250 && s.y < h - 40
                ? [id, code, s.x, s.y] : null; }).filter(Boolean)""",
            [inner, ground, W, H],
        )
        assert spots, "no large parcel in the fixed view"
        parcel_id, code, x, y = spots[0]
        picked = page.evaluate(f"cimtwinViewer.pick({x}, {y})")
        assert picked["theme"] == "parcels" and picked["collection"] == "parcels", picked
        assert picked["properties"]["id"] == parcel_id, (picked, parcel_id)
        assert picked["record"]["parcel_code"] == code and code in page.inner_text("#record")
        page.wait_for_function("cimtwinDrape.highlight.length > 0")
        shot("parcel-picked")
        # an incident: the topmost theme, picked within a few pixels of its point
        points = q(
            engine,
            "SELECT id, ST_X(p), ST_Y(p) FROM"
            " (SELECT id, ST_Transform(geom, 4326) AS p FROM cim.incident) t",
        )
        on_screen = page.evaluate(
            """([points, height, w, h]) => points.map(([id, lon, lat]) => {
              const s = Cesium.SceneTransforms.worldToWindowCoordinates(cimtwinViewer.viewer.scene,
                Cesium.Cartesian3.fromDegrees(lon, lat, height));
              return s && s.x > 300 && s.x < w - 20 && s.y > 250 && s.y < h - 40
                ? [id, s.x, s.y] : null; }).filter(Boolean)""",
            [points, ground, W, H],
        )
        assert on_screen, "no incident in the fixed view"
        _, ix, iy = on_screen[0]
        hit = page.evaluate(f"cimtwinViewer.pick({ix}, {iy})")
        near = [i for i, sx, sy in on_screen if math.hypot(sx - ix, sy - iy) < 10]
        assert hit["theme"] == "incidents" and hit["properties"]["id"] in near, (hit, near)
        (title,) = q(
            engine, "SELECT title FROM cim.incident WHERE id = :i", i=hit["properties"]["id"]
        )[0]
        assert hit["record"]["title"] == title
        # a real click on the parcel's spot shows the parcel again
        page.evaluate("cimtwinViewer.clearPick()")
        assert page.evaluate("cimtwinDrape.highlight.length") == 0
        page.mouse.click(x, y)
        page.wait_for_function(f"document.querySelector('#record').textContent.includes('{code}')")

        # the scale bar: its metres per pixel against the camera's: the ray through the
        # bottom centre meets the ground plane at distance d = (camera height - ground) /
        # sin(its angle below the horizon), a pixel there spans 2 z tan(fovx / 2) / width
        metres, pixels, fovy, aspect, cam_h, pitch, y_bar = page.evaluate(
            """(() => { const s = document.getElementById('scale'), c = cimtwinViewer.viewer.camera;
              return [Number(s.dataset.metres), Number(s.dataset.pixels), c.frustum.fovy,
                c.frustum.aspectRatio, c.positionCartographic.height, c.pitch,
                cimtwinViewer.viewer.scene.canvas.clientHeight - 20]; })()"""
        )
        assert metres / 10 ** math.floor(math.log10(metres)) in (1, 2, 5), metres
        tan_y = math.tan(fovy / 2)
        below = (y_bar - H / 2) / (H / 2) * tan_y  # tangent of the ray's angle below the axis
        angle = -pitch + math.atan(below)
        depth = (cam_h - ground) / math.sin(angle) * math.cos(math.atan(below))
        per_px = 2 * depth * tan_y * aspect / W
        assert abs(metres / pixels - per_px) / per_px < 0.1, (metres, pixels, per_px)
        assert page.inner_text("#scale").strip() in (f"{metres:g} m", f"{metres / 1000:g} km")

        # underground: the pipes under the translucent ground, seen from above a road
        show_themes(set())
        page.eval_on_selector("#underground", "e => e.click()")
        lon, lat, height = PIPES_VIEW
        page.evaluate(
            f"""cimtwinViewer.viewer.camera.setView({{
              destination: Cesium.Cartesian3.fromDegrees({lon}, {lat}, {height}),
              orientation: {{ heading: 0, pitch: -Math.PI / 2, roll: 0 }} }})"""
        )
        page.wait_for_function(
            "cimtwinViewer.layers.every(l => l.tileset.tilesLoaded)", timeout=60_000
        )
        pipes = shot("pipes")
        networks = {
            e["value"]: count_like(pipes, e["color"]) for e in legends["pipelines"]["entries"]
        }
        seen = [
            n
            for n in (e["value"] for e in vivid(legends["pipelines"]["entries"]))
            if networks[n] > 100
        ]
        assert len(seen) >= 4, networks
        # picking a pipe shows its network and size
        ids = page.evaluate("cimtwinViewer.featureIds('pipelines')")
        assert ids, "no pipe loaded"
        network, diameter = q(
            engine,
            "SELECT network, diameter_mm FROM cim.pipeline_segment WHERE id = :i",
            i=ids[0],
        )[0]
        result = page.evaluate(f"cimtwinViewer.pickFeatureById('pipelines', {ids[0]})")
        assert result["record"]["network"] == network
        text = page.inner_text("#attributes")
        assert network in text and (diameter is None or f"DN{diameter:.0f}" in text), text
        # no pipes tileset shown: no pipelines legend
        show_tileset("pipelines", False)
        assert legend() == []
        browser.close()
    assert problems == [], problems
    print(tmp_path)

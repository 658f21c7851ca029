"""The twin viewer page (/viewer/) in headless Chromium: every tileset of ``GET /3dtiles`` in a
layer panel, the ready flag, picking a building shows its code from OGC API Features, the
underground control makes the globe translucent; no console error, no request elsewhere."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cimtwin.settings import Settings
from tests.browser import (
    CHROMIUM,
    FLAGS,
    SOFTWARE_GL,
    needs_chromium,
    only_this_server,
    serve,
    watch,
)
from tests.conftest import TWIN_TILESETS

pytestmark = needs_chromium
TILESETS = TWIN_TILESETS
#: a fixed camera over the North Station: lon, lat, height (m), heading, pitch (degrees)
HASH = "#114.0239,22.6060,900,0,-40"


def test_viewer_without_slash_reaches_the_page(viewer_site: str) -> None:
    import httpx

    r = httpx.get(f"{viewer_site}/viewer", follow_redirects=True)
    assert r.status_code == 200 and "js/viewer.js" in r.text


def test_viewer_page(viewer_site: str, engine, tmp_path: Path) -> None:
    import httpx
    from playwright.sync_api import sync_playwright

    from tests.conftest import q

    base = viewer_site
    titles = {t["id"]: t["title"] for t in httpx.get(f"{base}/3dtiles").json()}
    assert sorted(titles) == sorted(TILESETS)
    problems: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 800, "height": 600})
        page.route("**/*", only_this_server(base, problems))
        watch(page, problems)
        started = time.monotonic()
        page.goto(f"{base}/viewer/?{SOFTWARE_GL}{HASH}")
        page.wait_for_function("document.body.dataset.ready", timeout=180_000)
        seconds = time.monotonic() - started
        state = page.evaluate("[document.body.dataset.ready, document.body.dataset.error]")
        assert state == ["true", None], (state, problems)
        print(f"viewer ready in {seconds:.1f} s")
        # ?resolution=0.5 draws half the CSS pixels each way, and the layout keeps its size
        canvas = page.evaluate(
            """(() => { const c = cimtwinViewer.viewer.scene.canvas;
                 return [c.width, c.height, c.clientWidth, c.clientHeight]; })()"""
        )
        assert canvas[2] > 0 and abs(canvas[0] - canvas[2] / 2) <= 1, canvas
        assert abs(canvas[1] - canvas[3] / 2) <= 1, canvas
        page.screenshot(path=str(tmp_path / "viewer.png"))
        # the view is the hash's
        lon, lat, height, heading, pitch = page.evaluate(
            """(() => { const c = cimtwinViewer.viewer.camera, d = Cesium.Math.toDegrees;
              const p = c.positionCartographic;
              return [d(p.longitude), d(p.latitude), p.height, d(c.heading), d(c.pitch)]; })()"""
        )
        want = [float(v) for v in HASH[1:].split(",")]
        assert abs(lon - want[0]) < 1e-6 and abs(lat - want[1]) < 1e-6, (lon, lat)
        assert abs(height - want[2]) < 0.5 and abs(pitch - want[4]) < 0.1, (height, pitch)
        assert abs((heading - want[3] + 180) % 360 - 180) < 0.1, heading
        # the layer panel: one row per tileset, with its title, a checkbox and a slider
        rows = page.eval_on_selector_all(
            "#layer-list label",
            "ls => ls.map(l => [l.dataset.tileset, l.textContent.trim(),"
            " !!l.querySelector('input.visible'), !!l.querySelector('input.opacity')])",
        )
        assert sorted(r[0] for r in rows) == sorted(TILESETS)
        for tileset_id, text, checkbox, slider in rows:
            assert titles[tileset_id] in text and checkbox and slider, rows
        # picking a known building shows its code (metadata, then the OGC API record)
        ids = page.evaluate("window.cimtwinViewer.featureIds('buildings')")
        assert ids, "no building loaded in view"
        building = ids[0]
        (code,) = q(engine, "SELECT building_code FROM cim.building WHERE id = :i", i=building)[0]
        result = page.evaluate(f"window.cimtwinViewer.pickFeatureById('buildings', {building})")
        assert result["properties"]["id"] == building
        assert result["record"]["building_code"] == code
        assert code in page.inner_text("#attributes")
        assert page.inner_text("#record").count(code) >= 1
        assert page.evaluate("cimtwinViewer.picked.color.equals(Cesium.Color.CYAN)")
        page.evaluate("() => { window.firstPick = cimtwinViewer.picked; }")
        # a pick at a screen position: the first building under a coarse grid of points
        hit = page.evaluate(
            """async () => {
              for (let y = 150; y < 600; y += 50) for (let x = 25; x < 800; x += 50) {
                const r = await cimtwinViewer.pick(x, y);
                if (r && r.tileset === 'buildings') return [x, y, r];
              }
              return null;
            }"""
        )
        assert hit, "no building under the grid of screen points"
        x, y, picked = hit
        (code,) = q(
            engine,
            "SELECT building_code FROM cim.building WHERE id = :i",
            i=picked["properties"]["id"],
        )[0]
        assert picked["record"]["building_code"] == code and code in page.inner_text("#record")
        # highlighted; the building picked before got its colour back
        assert page.evaluate("cimtwinViewer.picked.color.equals(Cesium.Color.CYAN)")
        assert page.evaluate(
            "firstPick === cimtwinViewer.picked || firstPick.color.equals(Cesium.Color.WHITE)"
        )
        page.screenshot(path=str(tmp_path / "viewer-picked.png"))
        # a real click on the same point shows the same building
        page.mouse.click(x, y)
        page.wait_for_function(f"document.querySelector('#record').textContent.includes('{code}')")
        # opacity: the slider styles the tileset translucent
        page.eval_on_selector(
            "label[data-tileset=buildings] input.opacity",
            "e => { e.value = '0.5'; e.dispatchEvent(new Event('input')); }",
        )
        alpha = "cimtwinViewer.layers.find(l => l.id === 'buildings').tileset.style.color"
        assert page.evaluate(f"{alpha}.evaluateColor(undefined).alpha") == 0.5
        # the picked building stays highlighted (as translucent as its layer)
        page.wait_for_function(
            "cimtwinViewer.picked.color.equalsEpsilon(Cesium.Color.CYAN.withAlpha(0.5), 0.01)"
        )
        page.eval_on_selector("label[data-tileset=buildings] input.visible", "e => e.click()")
        assert not page.evaluate(
            "cimtwinViewer.layers.find(l => l.id === 'buildings').tileset.show"
        )
        page.eval_on_selector("label[data-tileset=buildings] input.visible", "e => e.click()")
        # underground: translucent globe, camera may go below ground
        page.click("#underground")
        under = page.evaluate(
            "[cimtwinViewer.viewer.scene.globe.translucency.enabled,"
            " cimtwinViewer.viewer.scene.screenSpaceCameraController.enableCollisionDetection]"
        )
        assert under == [True, False]
        terrain = "cimtwinViewer.layers.find(l => l.id === 'terrain').tileset.style"
        assert abs(page.evaluate(f"{terrain}.color.evaluateColor(undefined).alpha") - 0.3) < 1e-9
        page.wait_for_timeout(1000)
        page.screenshot(path=str(tmp_path / "viewer-underground.png"))
        # the hash follows the camera
        page.evaluate("cimtwinViewer.viewer.camera.moveEnd.raiseEvent()")
        assert page.evaluate("location.hash").startswith("#114.02")
        browser.close()
    assert problems == [], problems
    print(tmp_path)


def ready_flag(base: str) -> tuple[str, str | None]:
    """Open /viewer/ (only this server reachable); the ready flag and error once set."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 400, "height": 300})
        page.route("**/*", only_this_server(base))
        page.goto(f"{base}/viewer/?imagery=none")
        page.wait_for_function("document.body.dataset.ready", timeout=120_000)
        ready, error = page.evaluate("[document.body.dataset.ready, document.body.dataset.error]")
        browser.close()
    return ready, error


def test_a_broken_tileset_sets_the_error_flag(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("broken3d")
    (root / "broken").mkdir()
    (root / "broken" / "tileset.json").write_text("{not json")
    for base in serve(settings.model_copy(update={"tiles_dir": str(root)})):
        ready, error = ready_flag(base)
    assert ready == "error" and error, (ready, error)

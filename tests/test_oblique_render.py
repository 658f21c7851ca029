"""CesiumJS loads the imported oblique tileset (textures included) in headless Chromium with
no console error and no outside request, and decodes the building baked into the photo mesh
(单体化) as a feature with its record's id and properties; the screenshot is kept under
tmp_path to look at."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cimtwin.importers.oblique.footprints import Footprints
from cimtwin.importers.oblique.georef import ToStorage, read_metadata
from cimtwin.importers.oblique.pyramid import PyramidWriter, production_roots
from cimtwin.importers.report import Report
from cimtwin.settings import Settings
from tests.browser import CHROMIUM, FLAGS, SOFTWARE_GL, needs_chromium, only_this_server, serve
from tests.test_oblique_buildings import BUILDING_ID, GRID, footprint, sample_extent
from tests.test_oblique_read import OBLIQUE, production

pytestmark = [
    needs_chromium,
    pytest.mark.skipif(
        OBLIQUE is None, reason="../shared/data/oblique (the OSGB sample) is absent"
    ),
    pytest.mark.skipif(
        shutil.which("osgconv") is None, reason="osgconv missing (apt-get install openscenegraph)"
    ),
]


def test_cesium_draws_the_textured_photo_mesh(settings: Settings, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    folder = tmp_path / "tiles" / "oblique-sample"
    folder.mkdir(parents=True)
    meta = read_metadata(production() / "metadata.xml")
    to_storage = ToStorage(meta.srs, meta.origin, None)
    shape = footprint(*sample_extent())
    baked = Footprints(
        np.array([BUILDING_ID]),
        [("TEST-OBL-1", "照片楼", "office", 42.5, 12, GRID)],
        np.array([shape], dtype=object),
    )
    PyramidWriter(production(), to_storage, folder, Report(), footprints=lambda _box: baked).build(
        production_roots(production()), {"title": "sample"}
    )
    problems: list[str] = []
    for base in serve(settings.model_copy(update={"tiles_dir": str(tmp_path / "tiles")})):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.route("**/*", only_this_server(base, problems, lambda _: None))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{base}/viewer/threed-check.html?imagery=none&{SOFTWARE_GL}")
            page.wait_for_function("window.cimtwin3d && window.cimtwin3d.ready", timeout=120_000)
            report = page.evaluate("window.cimtwin3d")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(tmp_path / "oblique.png"))
            browser.close()
    print(f"screenshot: {tmp_path / 'oblique.png'}")
    assert problems == [] and report["errors"] == [], (problems, report["errors"])
    (ts,) = report["tilesets"]
    assert ts["id"] == "oblique-sample" and ts["readyContents"] > 0 and ts["triangles"] > 0, ts
    # the building is a feature of the loaded photo tiles (one per tile that carries it)
    assert ts["features"] > 0 and ts["sample"], ts
    assert {f["id"] for f in ts["sample"]} == {BUILDING_ID}, ts["sample"]
    assert ts["sample"][0]["code"] == "TEST-OBL-1" and ts["sample"][0]["name"] == "照片楼"

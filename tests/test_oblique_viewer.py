"""单体化 in the twin viewer: the sample production imported with a building footprint over part
of it, served beside the building's record, and opened in /viewer/ in headless Chromium.
Clicking the photo mesh inside the footprint selects that building (its code from OGC API
Features in the attribute panel, the mesh highlighted); clicking the mesh outside every
footprint selects no building. No console error, no request elsewhere. The database holds
nothing else (a fresh install with one photo import): the draped 2D themes, whose bounds are
then the whole world, must not keep the viewer from getting ready."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import psycopg
import pytest
import shapely
from pyproj import Transformer

from cimtwin.db.engine import libpq_dsn
from cimtwin.importers.oblique.footprints import Footprints
from cimtwin.importers.oblique.georef import ToStorage, read_metadata
from cimtwin.importers.oblique.pyramid import PyramidWriter, production_roots
from cimtwin.importers.report import Report
from cimtwin.settings import Settings
from cimtwin.spatial import crs as crs_mod
from cimtwin.spatial.model import SCHEMA
from tests.browser import (
    CHROMIUM,
    FLAGS,
    SOFTWARE_GL,
    needs_chromium,
    only_this_server,
    serve,
    watch,
)
from tests.test_oblique_buildings import BUILDING_ID, GRID, add_building, footprint, sample_extent
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
CODE, NAME = "TEST-OBL-VIEW", "照片楼"
TILESET = "oblique-sample"

#: after the viewer is ready: look straight down on the photo tileset from three radii of
#: its bounding sphere and resolve once every tile for that view is drawn
LOOK_DOWN = """async (id) => {
  const v = cimtwinViewer.viewer, layer = cimtwinViewer.layers.find(l => l.id === id);
  const sphere = layer.tileset.boundingSphere;
  const c = Cesium.Cartographic.fromCartesian(sphere.center);
  v.camera.setView({
    destination: Cesium.Cartesian3.fromRadians(c.longitude, c.latitude,
                                               c.height + 3 * sphere.radius),
    orientation: { heading: 0, pitch: -Cesium.Math.PI_OVER_TWO, roll: 0 } });
  // tilesLoaded is that of the last frame: count frames drawn from the new view first
  await new Promise(done => {
    let frames = 0;
    const off = v.scene.postRender.addEventListener(() => {
      frames += 1;
      if (frames >= 10 && layer.tileset.tilesLoaded) { off(); done(); }
    }); });
  return c.height;
}"""

#: the window position of a lon/lat at a height (the mesh's mid height)
TO_SCREEN = """([lon, lat, h]) => {
  const p = Cesium.SceneTransforms.worldToWindowCoordinates(cimtwinViewer.viewer.scene,
    Cesium.Cartesian3.fromDegrees(lon, lat, h));
  return [p.x, p.y];
}"""

#: the ellipsoidal height of the depth buffer's point under a window position
ON_MESH = """([x, y]) => {
  const p = cimtwinViewer.viewer.scene.pickPosition(new Cesium.Cartesian2(x, y));
  return p ? Cesium.Cartographic.fromCartesian(p).height : -1e9;
}"""


def test_clicking_the_photo_mesh_selects_the_building(settings: Settings, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    x0, y0, x1, y1 = sample_extent()
    shape = footprint(x0, y0, x1, y1)
    inside = shapely.Point(shape.representative_point())
    # the eastern part of the box is outside the pentagon (which covers x0 + 5 %..55 %)
    outside = shapely.Point(x0 + 0.85 * (x1 - x0), y0 + 0.5 * (y1 - y0))
    assert not shape.buffer(2.0).contains(outside)
    folder = tmp_path / "tiles" / TILESET
    folder.mkdir(parents=True)
    meta = read_metadata(production() / "metadata.xml")
    baked = Footprints(
        np.array([BUILDING_ID]),
        [(CODE, NAME, "office", 42.5, 12, GRID)],
        np.array([shape], dtype=object),
    )
    PyramidWriter(
        production(),
        ToStorage(meta.srs, meta.origin, None),
        folder,
        Report(),
        footprints=lambda _box: baked,
    ).build(production_roots(production()), {"title": "sample photo"})
    to_wgs84 = Transformer.from_crs(crs_mod.storage_crs(), "EPSG:4326", always_xy=True)
    lonlat_in = to_wgs84.transform(inside.x, inside.y)
    lonlat_out = to_wgs84.transform(outside.x, outside.y)

    add_building(settings.database_url, BUILDING_ID, CODE, shape, NAME)
    problems: list[str] = []
    try:
        for base in serve(settings.model_copy(update={"tiles_dir": str(tmp_path / "tiles")})):
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
                page = browser.new_page(viewport={"width": 800, "height": 600})
                page.route("**/*", only_this_server(base, problems))
                watch(page, problems)
                page.goto(f"{base}/viewer/?{SOFTWARE_GL}")
                page.wait_for_function("document.body.dataset.ready", timeout=180_000)
                assert page.evaluate("document.body.dataset.ready") == "true", problems
                mid_height = page.evaluate(LOOK_DOWN, TILESET)
                sx, sy = page.evaluate(TO_SCREEN, [*lonlat_in, mid_height])
                picked = page.evaluate(f"cimtwinViewer.pick({sx}, {sy})")
                page.screenshot(path=str(tmp_path / "oblique-picked.png"))
                assert picked is not None, "nothing picked inside the footprint"
                assert picked["collection"] == "buildings", picked
                assert picked["properties"]["id"] == BUILDING_ID, picked["properties"]
                assert picked["properties"]["code"] == CODE, picked["properties"]
                assert picked["record"]["building_code"] == CODE, picked["record"]
                assert page.evaluate("cimtwinViewer.picked.color.equals(Cesium.Color.CYAN)")
                # a real click on the mesh outside the footprint: no building, panel cleared
                ox, oy = page.evaluate(TO_SCREEN, [*lonlat_out, mid_height])
                assert 0 < ox < 800 and 0 < oy < 600, (ox, oy)
                # the photo mesh is there: the depth buffer's point is off the globe (the
                # ellipsoid, at 0 m) and at the photo's ground height (near -2 m here)
                assert abs(page.evaluate(ON_MESH, [ox, oy])) > 0.5
                outside_pick = page.evaluate(f"cimtwinViewer.pick({ox}, {oy})")
                assert outside_pick is None, outside_pick
                # the attribute panel (and its #record) went with the pick
                assert page.evaluate("document.querySelector('#record')") is None
                assert page.evaluate("cimtwinViewer.picked") is None
                # and a real mouse click inside shows the building's record again
                page.mouse.click(sx, sy)
                page.wait_for_function(
                    f"document.querySelector('#record').textContent.includes('{CODE}')"
                )
                browser.close()
    finally:
        with psycopg.connect(libpq_dsn(settings.database_url)) as conn:
            conn.execute(f"DELETE FROM {SCHEMA}.building WHERE id = %s", (BUILDING_ID,))
    print(f"screenshot: {tmp_path / 'oblique-picked.png'}")
    assert problems == [], problems

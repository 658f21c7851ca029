"""CesiumJS (npm ``cesium``, served by cimtwin; no CDN, no Cesium ion) loads every tileset that
``GET /3dtiles`` lists in headless Chromium: no console error, no failed or outside request,
each tileset with loaded contents and triangles. Tilesets: a hand-made one (independent of the
build), and what ``build_tileset`` writes for the loaded sample (every source installed, plus
a stand-in of the buildings from the core's tests) with per-feature metadata that CesiumJS
must decode to the database's values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cimtwin.api.viewer import viewer_dir
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
from tests.test_threed_api import make_tileset

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def hand_made(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("3dtiles")
    make_tileset(root / "check", title="A box at the North Station")
    yield from serve(settings.model_copy(update={"tiles_dir": str(root)}))


#: the core tests' stand-in: each sample building as a box, with its code and height
STAND_IN = ("fakebuildings", "tests.threed_fake:FakeBuildingSource")


@pytest.fixture(scope="module")
def built(
    settings: Settings, loaded_sample, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, list[str]]]:
    """The sample's 3D tilesets built by the engine into a fresh folder, served."""
    from cimtwin.tiles.cli import expand_families
    from cimtwin.tiles.threed import registry
    from cimtwin.tiles.threed.build import build_tileset

    root = tmp_path_factory.mktemp("built3d")
    made = []
    # a family (bim) stands for its members: the sample's BIM model
    sources = expand_families(registry.available(), settings.database_url, root)
    for tileset_id, target in [STAND_IN, *sources.items()]:
        result = build_tileset(
            tileset_id, root, database_url=settings.database_url, target=target, workers=1
        )
        if result.path is not None:
            made.append(tileset_id)
    yield from ((url, made) for url in serve(settings.model_copy(update={"tiles_dir": str(root)})))


def load_in_cesium(base: str, query: str = "") -> tuple[dict[str, Any], list[str], list[str]]:
    """Open the check page; (its report, problems seen by the browser, URLs it asked for)."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    requested: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 800, "height": 600})
        page.route("**/*", only_this_server(base, problems, requested.append))
        watch(page, problems)
        page.goto(f"{base}/viewer/threed-check.html{query or '?'}&{SOFTWARE_GL}")
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


def test_closed_reads_load_with_a_key(
    settings: Settings, scratch_database: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With open_reads off, the page itself needs the key (401 without, in the error format),
    and with ?key= it sends the key with the list and every tile request."""
    import httpx
    import psycopg

    from cimtwin.db.engine import libpq_dsn
    from cimtwin.spatial.access_queries import create_key

    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        key = create_key(conn, "cesium-check", "viewer")[0]
    root = tmp_path_factory.mktemp("closed3d")
    make_tileset(root / "check")
    closed = settings.model_copy(
        update={"database_url": scratch_database, "tiles_dir": str(root), "open_reads": False}
    )
    for base in serve(closed):
        denied = httpx.get(f"{base}/viewer/threed-check.html?imagery=none")
        report, problems, _ = load_in_cesium(base, f"?imagery=none&key={key}")
    assert denied.status_code == 401 and denied.json()["code"] == "Unauthorized", denied.text
    assert problems == [] and report["errors"] == [], (problems, report["errors"])
    assert report["tilesets"][0]["triangles"] == 24


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


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int):
        return abs(a - b) < 1e-6
    return a == b


def test_cesium_loads_every_tileset_the_build_writes(built: tuple[str, list[str]], engine) -> None:
    import httpx

    from cimtwin.tiles.threed import registry
    from tests.conftest import SAMPLE_BIM_TILESET, q

    base, made = built
    # the sample has every source, and one BIM model for the bim family
    singles = [i for i in registry.available() if i not in registry.FAMILIES]
    assert sorted(made) == sorted([STAND_IN[0], *singles, SAMPLE_BIM_TILESET])
    report, problems, _ = load_in_cesium(base, "?imagery=none")
    assert problems == [] and report["errors"] == [], (problems, report["errors"])
    loaded = {t["id"]: t for t in report["tilesets"]}
    assert sorted(loaded) == sorted(made)
    for t in loaded.values():
        assert t["readyContents"] > 0 and t["triangles"] > 0 and t["features"] > 0, t
        # every feature carries its OGC API Features id
        assert t["sample"] and all(isinstance(f.get("id"), int) for f in t["sample"]), t
    # what CesiumJS decoded from EXT_structural_metadata is what the database holds
    sample = loaded[STAND_IN[0]]["sample"]
    rows = {
        r[0]: (r[1], r[2])
        for r in q(
            engine,
            "SELECT id, building_code, height_m FROM cim.building WHERE id = ANY(:ids)",
            ids=[f["id"] for f in sample],
        )
    }
    assert len(rows) == len(sample)
    for f in sample:
        code, height = rows[f["id"]]
        assert f["code"] == code and abs(f["height"] - height) < 1e-9, (f, code, height)
    # a picked feature's id fetches the same object from OGC API Features: attributes that
    # both carry under one name agree
    compared = 0
    for tileset_id in loaded:
        layer = httpx.get(f"{base}/3dtiles/{tileset_id}/tileset.json").json()["asset"]["extras"]
        if not layer.get("layer") or tileset_id == STAND_IN[0]:
            continue
        for f in loaded[tileset_id]["sample"][:5]:
            item = httpx.get(f"{base}/collections/{layer['layer']}/items/{f['id']}")
            assert item.status_code == 200, (tileset_id, f)
            props = item.json()["properties"]
            shared = [k for k in f if k in props and props[k] is not None and f[k] is not None]
            assert all(_same(f[k], props[k]) for k in shared), (tileset_id, f, props)
            compared += len(shared)
    assert compared > 0

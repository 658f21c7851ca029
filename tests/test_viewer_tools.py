"""The viewer's search box and the analyses drawn in place (js/search.js, js/analyses.js) in
headless Chromium, against the API's own answers: valve isolation highlights exactly the
valves POST /pipelines/isolation returns, a trace draws its pipes, a cross-section charts one
mark per crossed pipe, an excavation check lists the API's hits, an incident placed with an
editor key shows its dispatch context, a grid summary names its grid, and the search box flies
to a building. One browser page for the module; no console error, no failed request, no
request off this server."""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import CHROMIUM, FLAGS, SOFTWARE_GL, needs_chromium, only_this_server, watch
from tests.conftest import q

pytestmark = needs_chromium
#: over the North Station, as tests/test_viewer_page.py
HASH = "#114.0239,22.6060,900,0,-40"
VALVE, ISOLATED, BUILDING = "#ff2d2d", "#ffd400", "#ff7a00"
#: a section across the east-west roads at 114.0230 E, and an excavation on one of them
SECTION = ([114.0230, 22.6080], [114.0230, 22.6100])
DIG = [[114.0225, 22.6082], [114.0235, 22.6082], [114.0235, 22.6088], [114.0225, 22.6088]]
#: one rendered frame (the scene renders on request in these tests)
FRAME = """new Promise(r => { const s = cimtwinViewer.viewer.scene;
  const off = s.postRender.addEventListener(() => { off(); r(); }); s.requestRender(); })"""


@dataclass
class Session:
    page: Any
    base: str
    shots: Path
    problems: list[str] = field(default_factory=list)

    def js(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def settle(self) -> None:
        """Wait until every tileset has loaded what the camera sees (asking for frames)."""
        # two frames first, so the tilesets have seen the camera where it is now
        for _ in range(2):
            self.js(FRAME)
        self.page.wait_for_function(
            """() => { cimtwinViewer.viewer.scene.requestRender();
                 return cimtwinViewer.layers.every(l => l.tileset.tilesLoaded); }""",
            timeout=90_000,
            polling=200,
        )
        # a few frames more: tile features appear (and take marks) in the frames after loading
        for _ in range(3):
            self.js(FRAME)

    def shot(self, name: str) -> None:
        self.settle()
        self.page.screenshot(path=str(self.shots / name))


@pytest.fixture(scope="module")
def session(viewer_site: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    from playwright.sync_api import sync_playwright

    shots = tmp_path_factory.mktemp("viewer-tools")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 960, "height": 640})
        s = Session(page, viewer_site, shots)
        page.route("**/*", only_this_server(viewer_site, s.problems))
        watch(page, s.problems)
        page.goto(f"{viewer_site}/viewer/?{SOFTWARE_GL}{HASH}")
        page.wait_for_function("document.body.dataset.ready", timeout=180_000)
        assert page.evaluate("document.body.dataset.ready") == "true", s.problems
        # software WebGL on a small shared machine: frames only when something changed, or
        # the render loop starves the page's scripts (each await waits for a slow frame)
        page.evaluate("cimtwinViewer.viewer.scene.requestRenderMode = true")
        yield s
        browser.close()
    print("screenshots in", shots)


@pytest.fixture(autouse=True)
def clean_page(session: Session) -> Iterator[None]:
    session.js("cimtwinViewer.clearAnalysis()")
    yield
    assert session.problems == [], session.problems


def post(base: str, path: str, body: dict) -> dict:
    r = httpx.post(f"{base}{path}", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def water_pipe_with_valves(engine, base: str) -> tuple[int, dict]:
    """A water pipe near the view's centre whose isolation closes two valves or more."""
    candidates = q(
        engine,
        """SELECT id FROM cim.pipeline_segment WHERE network = 'JS'
           ORDER BY geom <-> ST_Transform(ST_SetSRID(ST_MakePoint(114.0239, 22.6085), 4490),
                                          ST_SRID(geom)) LIMIT 20""",
    )
    for (seg,) in candidates:
        answer = post(base, "/pipelines/isolation", {"segment_id": seg})
        if len(answer["valves"]) >= 2 and answer["customers"]["buildings"] >= 1:
            return seg, answer
    raise AssertionError("no water pipe near the station with an isolation of 2+ valves")


def test_isolation_highlights_the_valves_the_api_returns(session: Session, engine) -> None:
    seg, want = water_pipe_with_valves(engine, session.base)
    got = session.js("id => cimtwinViewer.runIsolation(id)", seg)
    assert got["answer"]["valves"] == want["valves"]
    refs = [v["valve"] for v in want["valves"]]
    # one valve marker per valve to close, and nothing else drawn as a valve
    assert got["valves"] == refs
    assert sorted(session.js("cimtwinViewer.analysisMarks('valve')")) == sorted(refs)
    assert set(session.js("cimtwinViewer.analysisMarks('isolated')")) == {
        f["properties"]["segment_id"]
        for f in want["features"]["features"]
        if f["properties"]["kind"] == "segment"
    }
    assert sorted(got["outlined"]) == sorted(b["building_id"] for b in want["customers"]["items"])
    assert sorted(session.js("cimtwinViewer.analysisMarks('building-outline')")) == sorted(
        got["outlined"]
    )
    # the 3D features of what is loaded carry the colours: exactly the API's ids
    session.settle()
    session.shot("isolation.png")
    for tileset, colour, ids in (
        ("pipelines", ISOLATED, set(want["isolated_segments"]["ids"])),
        ("buildings", BUILDING, {b["building_id"] for b in want["customers"]["items"]}),
    ):
        coloured = marked(session, tileset, colour)
        assert coloured == ids & loaded(session, tileset), (tileset, coloured, ids)
    # the pipelines tileset may show merged groups only; the buildings are there
    assert marked(session, "buildings", BUILDING)
    # valves are small: their 3D points load up close, and take the colour as they load
    valve = want["valves"][0]
    ((lon, lat, h),) = q(
        engine,
        "SELECT ST_X(p), ST_Y(p), ST_Z(p) FROM (SELECT ST_Transform(geom, 4326) p "
        "FROM cim.pipeline_node WHERE id = :i) s",
        i=valve["node_id"],
    )
    close_to(session, lon, lat, h, 12)
    nodes = {v["node_id"] for v in want["valves"]}
    session.page.wait_for_function(
        """([id, c]) => { cimtwinViewer.viewer.scene.requestRender();
             return cimtwinViewer.markedFeatures('pipeline_points', c).includes(id); }""",
        arg=[valve["node_id"], VALVE],
        polling=250,
        timeout=30_000,
    )
    coloured = marked(session, "pipeline_points", VALVE)
    here = loaded(session, "pipeline_points")
    assert valve["node_id"] in coloured and coloured == nodes & here, (
        valve["node_id"] in here,
        len(here),
        coloured,
    )
    session.shot("isolation-valve.png")
    text = session.page.inner_text("#tools")
    for v in want["valves"]:
        assert v["valve"] in text
    assert f"{want['isolated_segments']['count']} (" in text


def loaded(session: Session, tileset: str) -> set:
    """Ids of the single (not merged far-view) features of a tileset loaded now."""
    return set(session.js("t => cimtwinViewer.markableFeatures(t)", tileset))


def close_to(session: Session, lon: float, lat: float, height: float, range_m: float) -> None:
    """The camera ``range_m`` from a position, looking down at it; tiles loaded."""
    session.js(
        """([lon, lat, h, r]) => { const c = cimtwinViewer.viewer.camera;
             c.lookAt(Cesium.Cartesian3.fromDegrees(lon, lat, h),
                      new Cesium.HeadingPitchRange(0, Cesium.Math.toRadians(-60), r));
             c.lookAtTransform(Cesium.Matrix4.IDENTITY); }""",
        [lon, lat, height, range_m],
    )
    session.settle()


def marked(session: Session, tileset: str, colour: str) -> set:
    return set(session.js("([t, c]) => cimtwinViewer.markedFeatures(t, c)", [tileset, colour]))


def test_isolation_from_a_picked_pipe_and_the_button(session: Session, engine) -> None:
    seg, want = water_pipe_with_valves(engine, session.base)
    # a pick of the pipe (as a click on it would) enables the buttons
    session.js(
        "id => cimtwinViewer.showAttributes('pipe', {id}, 'pipelines', {tileset: 'pipelines'})",
        seg,
    )
    session.page.wait_for_function("!document.querySelector('#tools .run-isolation').disabled")
    assert f"#{seg}" in session.page.inner_text("#tool-pipe")
    session.page.click("#tools .run-isolation")
    session.page.wait_for_selector("#tools .valve-list li")
    listed = session.page.eval_on_selector_all(
        "#tools .valve-list li", "ls => ls.map(l => l.dataset.id)"
    )
    assert listed == [v["valve"] for v in want["valves"]]


def test_trace_draws_its_result(session: Session, engine) -> None:
    ((seg,),) = q(
        engine,
        """SELECT id FROM cim.pipeline_segment WHERE network = 'PS' AND flow_direction <> 0
           ORDER BY geom <-> ST_Transform(ST_SetSRID(ST_MakePoint(114.0239, 22.6090), 4490),
                                          ST_SRID(geom)) LIMIT 1""",
    )
    body = {"network": "PS", "start": {"segment_id": seg}, "direction": "downstream"}
    want = post(session.base, "/pipelines/trace", {**body, "max_features": 2000})
    assert want["totals"]["segments"] >= 2
    got = session.js("id => cimtwinViewer.runTrace(id, 'downstream', 'PS')", seg)
    assert got["answer"]["segment_ids"] == want["segment_ids"]
    drawn = set(session.js("cimtwinViewer.analysisMarks('trace')"))
    assert drawn == {f["properties"]["segment_id"] for f in want["features"] if
                     f["properties"]["kind"] == "segment"}  # fmt: skip
    assert seg in drawn
    session.shot("trace.png")
    # the loaded single pipe features (far views keep merged groups) take the trace's colour
    coloured = marked(session, "pipelines", "#39ff14")
    assert coloured == set(want["segment_ids"]) & loaded(session, "pipelines")
    assert f"{want['totals']['segments']}" in session.page.inner_text("#tool-result")


def test_cross_section_charts_every_crossed_pipe(session: Session) -> None:
    a, b = SECTION
    want = post(session.base, "/pipelines/cross-section", {"line": [a, b]})
    assert len(want["pipes"]) >= 3
    got = session.js("([a, b]) => cimtwinViewer.runCrossSection(a, b)", [a, b])
    assert got["marks"] == [p["segment_id"] for p in want["pipes"]]
    marks = session.page.eval_on_selector_all(
        "#chart svg .pipe-mark",
        "ms => ms.map(m => [Number(m.dataset.segmentId), m.getAttribute('fill'), m.tagName])",
    )
    colours = {
        e["value"]: e["color"]
        for t in httpx.get(f"{session.base}/legends").json()["themes"]
        if t["id"] == "pipelines"
        for e in t["entries"]
    }
    for (sid, fill, tag), pipe in zip(marks, want["pipes"], strict=True):
        assert sid == pipe["segment_id"]
        assert fill == colours[pipe["network"]]
        assert tag == ("rect" if pipe["shape"] == "rectangular" else "circle")
    # x follows the offset along the line: marks in the order of their offsets
    xs = session.page.eval_on_selector_all(
        "#chart svg .pipe-mark",
        "ms => ms.map(m => { const b = m.getBBox(); return b.x + b.width / 2; })",
    )
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    offsets = [want["pipes"][i]["offset_m"] for i in order]
    assert offsets == sorted(offsets)
    assert session.page.locator("#chart svg .ground-line").count() == 1
    assert session.js("cimtwinViewer.analysisMarks('section')") == ["line"]
    session.shot("cross-section.png")


def test_excavation_lists_the_api_hits(session: Session) -> None:
    ring = [*DIG, DIG[0]]
    want = post(
        session.base,
        "/pipelines/excavation-check",
        {"polygon": {"type": "Polygon", "coordinates": [ring]}, "depth": 3},
    )
    assert want["pipes"] and want["nodes"]
    got = session.js("r => cimtwinViewer.runExcavation(r, 3)", DIG)
    assert got["listed"] == [p["segment_id"] for p in want["pipes"]]
    nodes = session.page.eval_on_selector_all(
        "#tools .hit-node-list li", "ls => ls.map(l => Number(l.dataset.id))"
    )
    assert nodes == [n["node_id"] for n in want["nodes"]]
    assert set(session.js("cimtwinViewer.analysisMarks('hit')")) == {
        p["segment_id"] for p in want["pipes"]
    }


def test_excavation_drawn_with_clicks(session: Session) -> None:
    """The UI path: the button, three corners clicked on the map, then "finish"."""
    session.page.click("#tools .tool-excavation")
    session.page.fill("#excavation-depth", "2")
    corners = [(450, 300), (550, 300), (550, 380)]
    for x, y in corners:
        session.page.mouse.click(x, y)
    assert len(session.js("cimtwinViewer.analysisMarks('vertex')")) == 3
    session.page.click("#tools .tool-finish")
    session.page.wait_for_selector("#tool-result .result-title")
    assert "excavation check, depth 2.0 m" in session.page.inner_text("#tool-result")
    assert session.js("cimtwinViewer.clickHandler") is None


@pytest.fixture
def editor_key(settings) -> Iterator[str]:
    """An editor key in the session database, revoked and removed afterwards."""
    import psycopg

    from cimtwin.db.engine import libpq_dsn
    from cimtwin.spatial.access_queries import create_key

    name = f"viewer-tools-{secrets.token_hex(4)}"
    with psycopg.connect(libpq_dsn(settings.database_url), autocommit=True) as conn:
        key = create_key(conn, name, "editor")[0]
    yield key
    with psycopg.connect(libpq_dsn(settings.database_url), autocommit=True) as conn:
        conn.execute("DELETE FROM cim.api_key WHERE name = %s", (name,))


def test_place_incident_shows_its_context(session: Session, editor_key: str, settings) -> None:
    import psycopg

    from cimtwin.db.engine import libpq_dsn

    page = session.page
    page.fill("#editor-key", editor_key)
    page.select_option("#incident-type", "pipe_burst")
    page.select_option("#incident-severity", "4")
    page.fill("#incident-title", "viewer test burst")
    page.click("#tools .tool-incident")
    x, y = 480, 330
    lon, lat = session.js(
        """([x, y]) => { const g = cimtwinViewer.groundAt(x, y);
             return [Cesium.Math.toDegrees(g.longitude), Cesium.Math.toDegrees(g.latitude)]; }""",
        [x, y],
    )
    page.mouse.click(x, y)
    page.wait_for_selector("#tools .hydrant-list", timeout=60_000)
    text = page.inner_text("#tool-result")
    incident_id = int(text.split("incident #")[1].split(":")[0])
    try:
        ((kind, severity, title, ilon, ilat),) = q_settings(
            settings,
            "SELECT incident_type, severity, title, ST_X(p), ST_Y(p) FROM (SELECT *, "
            "ST_Transform(geom, 4326) p FROM cim.incident WHERE id = %s) s",
            (incident_id,),
        )
        assert (kind, severity, title) == ("pipe_burst", 4, "viewer test burst")
        assert math.dist((ilon, ilat), (lon, lat)) < 1e-5  # where the click was
        ctx = httpx.get(f"{session.base}/incidents/{incident_id}/context").json()
        assert ctx["grid"]["name"] in text and ctx["grid"]["officer"] in text
        hydrants = page.eval_on_selector_all(
            "#tools .hydrant-list li", "ls => ls.map(l => Number(l.dataset.id))"
        )
        assert hydrants == [h["id"] for h in ctx["hydrants"]["items"]] and hydrants
        assert sorted(session.js("cimtwinViewer.analysisMarks('hydrant')")) == sorted(hydrants)
        assert session.js("cimtwinViewer.analysisMarks('incident')") == [incident_id]
        assert f"{ctx['gas_pipes']['count']}" in text and f"{ctx['buildings']['count']} (" in text
        valves = ctx["isolation"]["valves"]
        assert len(session.js("cimtwinViewer.analysisMarks('valve')")) == len(
            [v for v in valves if v.get("point")]
        )
        # the key stays for the session, not beyond
        assert session.js("sessionStorage.getItem('cimtwin.editorKey')") == editor_key
        assert session.js("localStorage.length") == 0
        session.shot("incident.png")
    finally:
        with psycopg.connect(libpq_dsn(settings.database_url), autocommit=True) as conn:
            conn.execute("DELETE FROM cim.incident WHERE id = %s", (incident_id,))


def q_settings(settings, sql: str, params: tuple) -> list[tuple]:
    import psycopg

    from cimtwin.db.engine import libpq_dsn

    with psycopg.connect(libpq_dsn(settings.database_url)) as conn:
        return conn.execute(sql, params).fetchall()


def test_placing_without_a_key_says_so(session: Session) -> None:
    session.js("sessionStorage.removeItem('cimtwin.editorKey')")
    session.page.fill("#editor-key", "")
    message = session.js(
        """() => cimtwinViewer.placeIncident({lon: 114.0239, lat: 22.609, type: 'fire',
             severity: 2, title: 'x'}).then(() => 'placed', e => e.message)"""
    )
    assert "editor key" in message


def test_grid_summary(session: Session, engine) -> None:
    ((code, name, officer),) = q(
        engine, "SELECT code, name, officer FROM cim.work_grid ORDER BY code LIMIT 1"
    )
    summary = session.js("c => cimtwinViewer.showGridSummary(c)", code)
    assert summary["grid"]["code"] == code
    text = session.page.inner_text("#tool-result")
    assert name in text and code in text and officer in text
    assert session.js("cimtwinViewer.analysisMarks('grid')") == [code]
    # a picked draped grid feature shows its summary too
    ((other, other_name),) = q(
        engine, "SELECT code, name FROM cim.work_grid ORDER BY code DESC LIMIT 1"
    )
    session.js(
        "c => cimtwinViewer.showAttributes('grid', {code: c}, null, {theme: 'grids'})", other
    )
    session.page.wait_for_function(
        "c => document.querySelector('#tool-result').dataset.grid === c", arg=other
    )
    assert other_name in session.page.inner_text("#tool-result")
    # "grid at this point": the button, then a click
    x, y = 470, 360
    lon, lat = session.js(
        """([x, y]) => { const g = cimtwinViewer.groundAt(x, y);
             return [Cesium.Math.toDegrees(g.longitude), Cesium.Math.toDegrees(g.latitude)]; }""",
        [x, y],
    )
    here = httpx.get(f"{session.base}/grids/locate", params={"lon": lon, "lat": lat}).json()
    session.page.click("#tools .tool-grid")
    session.page.mouse.click(x, y)
    session.page.wait_for_function(
        "c => document.querySelector('#tool-result').dataset.grid === c",
        arg=here["grid"]["code"],
    )
    assert here["grid"]["name"] in session.page.inner_text("#tool-result")
    session.shot("grid.png")


def test_search_finds_a_building_and_flies_there(session: Session, engine) -> None:
    # the building farthest from the starting view, so the flight is a real one
    ((bid, code, lon, lat),) = q(
        engine,
        """SELECT id, building_code, ST_X(p), ST_Y(p) FROM (SELECT id, building_code,
             ST_Transform(ST_PointOnSurface(footprint), 4326) p FROM cim.building) s
           ORDER BY (ST_X(p) - 114.0239)^2 + (ST_Y(p) - 22.6119)^2 DESC LIMIT 1""",
    )
    page = session.page
    page.fill("#search-input", code)
    page.wait_for_selector(f"#search-results .search-result[data-id='{bid}']")
    first = page.eval_on_selector(
        "#search-results .search-result", "b => [b.dataset.kind, Number(b.dataset.id)]"
    )
    assert first == ["building", bid]
    page.click("#search-results .search-result")
    page.wait_for_function(
        "c => document.querySelector('#record') && "
        "document.querySelector('#record').textContent.includes(c)",
        arg=code,
        timeout=60_000,
    )
    # the camera is near the building, looking at it
    cam_lon, cam_lat, height = session.js(
        """(() => { const p = cimtwinViewer.viewer.camera.positionCartographic;
             return [Cesium.Math.toDegrees(p.longitude), Cesium.Math.toDegrees(p.latitude),
                     p.height]; })()"""
    )
    metres = math.dist(
        (cam_lon * 111_320 * math.cos(math.radians(lat)), cam_lat * 110_574),
        (lon * 111_320 * math.cos(math.radians(lat)), lat * 110_574),
    )
    assert metres < 400 and 100 < height < 400, (metres, height)
    centre = session.js(
        """(() => { const c = cimtwinViewer.viewer.canvas;
             const g = cimtwinViewer.groundAt(c.clientWidth / 2, c.clientHeight / 2);
             return [Cesium.Math.toDegrees(g.longitude), Cesium.Math.toDegrees(g.latitude)]; })()"""
    )
    assert math.dist(centre, (lon, lat)) < 0.0008, (centre, lon, lat)
    # highlighted in 3D (the core's pick) when its tile is there
    assert session.js("cimtwinViewer.picked && cimtwinViewer.picked.getProperty('id')") == bid
    session.shot("search.png")
    # a grid by code, and a text with wildcards finds nothing
    page.fill("#search-input", "%_%")
    page.wait_for_selector("#search-results .search-none")

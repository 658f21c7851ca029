"""Incident endpoints on a scratch copy of the North Station sample (they write): create, list,
edit through the status workflow, and the dispatch context checked against SQL and against a
separate shortest-path computation (networkx)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import networkx as nx
import psycopg
import pytest
from fastapi.testclient import TestClient

from cimtwin.api.app import create_app
from cimtwin.db.engine import libpq_dsn
from cimtwin.settings import Settings
from cimtwin.spatial.access_queries import create_key
from cimtwin.spatial.incident_context import simple_isolation


@pytest.fixture(scope="module")
def db(sample_database: str) -> str:
    return sample_database


@pytest.fixture(scope="module")
def keys(db: str) -> dict[str, str]:
    with psycopg.connect(libpq_dsn(db)) as conn:
        return {
            role: create_key(conn, f"incidents-{role}", role)[0] for role in ("viewer", "editor")
        }


@pytest.fixture(scope="module")
def client(db: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=db))) as c:
        yield c


@pytest.fixture(scope="module")
def editor(keys: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys['editor']}"}


def q(db: str, sql: str, params=None) -> list[tuple]:
    with psycopg.connect(libpq_dsn(db)) as conn:
        return conn.execute(sql, params).fetchall()


def lonlat(db: str, point_sql: str) -> list[float]:
    """lon/lat (CGCS2000) of a storage-CRS point expression, made by PostGIS."""
    ((x, y),) = q(db, f"SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_Transform({point_sql}, 4490) p) s")
    return [x, y]


def report(
    client: TestClient, editor: dict, coords: list[float], kind: str = "fire", **extra
) -> dict:
    body = {
        "incident_type": kind,
        "severity": 3,
        "title": f"test {kind}",
        "geometry": {"type": "Point", "coordinates": coords},
        **extra,
    }
    r = client.post("/incidents", json=body, headers=editor)
    assert r.status_code == 201, r.text
    return r.json()


def test_create_assigns_the_grid_and_reads_back(client: TestClient, editor: dict, db: str) -> None:
    code, px, py = q(
        db,
        """SELECT code, ST_X(ST_PointOnSurface(geom)),
                            ST_Y(ST_PointOnSurface(geom)) FROM cim.work_grid
                            ORDER BY code OFFSET 10 LIMIT 1""",
    )[0]
    coords = lonlat(db, f"ST_SetSRID(ST_MakePoint({px}, {py}), 4547)")
    f = report(
        client,
        editor,
        coords,
        "manhole_cover_missing",
        description="井盖丢失",
        external_id="T-0001",
        attributes={"road": "民治大道"},
        elevation_m=74.2,
    )
    (expected,) = q(
        db,
        """SELECT code FROM cim.work_grid WHERE ST_Contains(geom,
        ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s), 4490), 4547))""",
        coords,
    )[0]
    assert f["properties"]["grid_code"] == expected == code
    assert f["properties"]["status"] == "reported"
    assert f["properties"]["next_statuses"] == ["dispatched"]
    got = client.get(f"/incidents/{f['id']}").json()
    assert got["properties"]["attributes"] == {"road": "民治大道"}
    assert got["properties"]["description"] == "井盖丢失"
    assert got["geometry"]["coordinates"] == pytest.approx(coords, abs=1e-7)
    ((status, grid, ext, county),) = q(
        db,
        "SELECT status, grid_code, external_id, county_code FROM cim.incident WHERE id = %s",
        (f["id"],),
    )
    assert (status, grid, ext, county) == ("reported", code, "T-0001", code[:6])
    r = client.post(
        "/incidents",
        headers=editor,
        json={
            "incident_type": "fire",
            "severity": 2,
            "title": "again",
            "external_id": "T-0001",
            "geometry": {"type": "Point", "coordinates": coords},
        },
    )
    assert r.status_code == 409


def test_create_validation(client: TestClient, editor: dict) -> None:
    base = {
        "incident_type": "fire",
        "severity": 2,
        "title": "x",
        "geometry": {"type": "Point", "coordinates": [114.02, 22.61]},
    }
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    for change, words in (
        ({"severity": 5}, "severity"),
        ({"incident_type": "Fire!"}, "incident_type"),
        ({"title": "  "}, "blank"),
        ({"geometry": {"type": "Point", "coordinates": [214.0, 22.6]}}, "longitude"),
        ({"geometry": {"type": "Polygon", "coordinates": [[[0, 0]]]}}, "geometry"),
        (
            {"geometry": {"type": "Point", "coordinates": [114.02, 22.61]}, "crs": "EPSG:4547"},
            "look like lon/lat",
        ),
        ({"reported_at": future}, "future"),
        ({"status": "closed"}, "status"),
        ({"attributes": {"blob": "x" * 20_000}}, "16384"),
    ):
        r = client.post("/incidents", json={**base, **change}, headers=editor)
        assert r.status_code == 422, (change, r.text)
        assert words in r.json()["description"], (change, r.text)
    body = {k: v for k, v in base.items() if k != "title"}
    r = client.post("/incidents", json=body, headers=editor)
    assert r.status_code == 422 and "title" in r.json()["description"]


def test_status_workflow_and_move(client: TestClient, editor: dict, db: str) -> None:
    f = report(client, editor, [114.02, 22.61], "illegal_parking")
    url = f"/incidents/{f['id']}"

    def patch(body: dict) -> tuple[int, dict]:
        r = client.patch(url, json=body, headers=editor)
        return r.status_code, r.json()

    assert patch({"status": "in_progress"})[0] == 409
    assert patch({"status": "closed"})[0] == 409
    for step in ("dispatched", "in_progress", "resolved"):
        code, body = patch({"status": step})
        assert code == 200 and body["properties"]["status"] == step
    code, body = patch({"status": "dispatched"})
    assert code == 409 and "resolved" in body["description"]
    code, body = patch({"status": "in_progress", "severity": 4})  # reopen
    assert code == 200 and body["properties"]["severity"] == 4
    assert patch({"status": "resolved"})[0] == 200
    assert patch({"status": "closed"})[0] == 200
    code, body = patch({"status": "in_progress"})
    assert code == 409 and "closed is final" in body["description"]
    # moving reassigns the grid
    px, py, code_b = q(
        db,
        """SELECT ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)),
                              code FROM cim.work_grid ORDER BY code DESC LIMIT 1""",
    )[0]
    coords = lonlat(db, f"ST_SetSRID(ST_MakePoint({px}, {py}), 4547)")
    code, body = patch({"geometry": {"type": "Point", "coordinates": coords}, "description": None})
    assert code == 200 and body["properties"]["grid_code"] == code_b
    ((grid, county),) = q(
        db, "SELECT grid_code, county_code FROM cim.incident WHERE id = %s", (f["id"],)
    )
    assert (grid, county) == (code_b, code_b[:6])
    code, body = patch({"geometry": {"type": "Point", "coordinates": [px, py]}, "crs": "EPSG:4547"})
    assert code == 200 and body["properties"]["grid_code"] == code_b
    for bad in (
        {},
        {"crs": "EPSG:4547"},
        {"status": None},
        {"status": "open"},
        {"severity": 0},
        {"id": 3},
    ):
        assert client.patch(url, json=bad, headers=editor).status_code == 422, bad
    assert (
        client.patch("/incidents/999999", json={"severity": 1}, headers=editor).status_code == 404
    )


def test_list_filters_equal_sql(client: TestClient, db: str) -> None:
    r = client.get("/incidents", params={"limit": 10_000})
    assert r.status_code == 200
    body = r.json()
    ((n,),) = q(db, "SELECT count(*) FROM cim.incident")
    assert body["numberMatched"] == n == len(body["features"])
    times = [f["properties"]["reported_at"] for f in body["features"]]
    assert times == sorted(times, reverse=True)
    since = "2026-10-25T00:00:00Z"
    ids = sorted(
        i
        for (i,) in q(
            db,
            """
        SELECT id FROM cim.incident WHERE status IN ('reported', 'dispatched')
          AND incident_type IN ('gas_leak', 'waterlogging', 'fire')
          AND reported_at >= %s""",
            (since,),
        )
    )
    r = client.get(
        "/incidents",
        params={
            "status": "reported,dispatched",
            "type": "gas_leak,waterlogging,fire",
            "since": since,
        },
    )
    assert sorted(f["id"] for f in r.json()["features"]) == ids and ids
    box = (114.02, 22.605, 114.03, 22.612)
    ids = sorted(
        i
        for (i,) in q(
            db,
            """
        SELECT id FROM cim.incident WHERE ST_Intersects(geom, ST_Transform(
          ST_MakeEnvelope(%s, %s, %s, %s, 4326), 4547)) AND reported_at < '2026-11-01'""",
            box,
        )
    )
    r = client.get(
        "/incidents", params={"bbox": ",".join(map(str, box)), "until": "2026-11-01T00:00:00+00:00"}
    )
    assert sorted(f["id"] for f in r.json()["features"]) == ids and ids
    r = client.get("/incidents", params={"limit": 3, "offset": 2})
    assert len(r.json()["features"]) == 3 and r.json()["numberMatched"] == n
    for params in (
        {"status": "open"},
        {"type": "Gas Leak"},
        {"limit": 10_001},
        {"since": "yesterday"},
        {"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"},
    ):
        assert client.get("/incidents", params=params).status_code == 422, params
    assert client.get("/incidents/999999").status_code == 404
    assert client.get("/incidents/abc").status_code == 422


# --- context --------------------------------------------------------------------------------


def water_graph(db: str, seg_id: int) -> tuple[nx.Graph, dict[int, str]]:
    g = nx.Graph()
    for a, b, w in q(
        db,
        """SELECT from_node_id, to_node_id, length_m FROM cim.pipeline_segment
                            WHERE network = 'JS'""",
    ):
        g.add_edge(a, b, weight=w)
    hydrants = dict(
        q(db, "SELECT id, point_no FROM cim.pipeline_node WHERE appurtenance = '消防栓'")
    )
    return g, hydrants


def test_context_on_a_water_pipe(client: TestClient, editor: dict, db: str) -> None:
    # an incident in the middle of a water main next to a hydrant branch
    seg, a, b, length, hx, hy = q(
        db,
        """
        SELECT s.id, s.from_node_id, s.to_node_id, s.length_m,
               ST_X(ST_LineInterpolatePoint(ST_Force2D(s.geom), 0.5)),
               ST_Y(ST_LineInterpolatePoint(ST_Force2D(s.geom), 0.5))
        FROM cim.pipeline_segment s WHERE s.network = 'JS' AND s.length_m > 20
        ORDER BY s.id LIMIT 1""",
    )[0]
    coords = lonlat(db, f"ST_SetSRID(ST_MakePoint({hx}, {hy}), 4547)")
    f = report(client, editor, coords, "fire")
    radius = 400
    r = client.get(f"/incidents/{f['id']}/context", params={"radius": radius, "hydrants": 8})
    assert r.status_code == 200, r.text
    ctx = r.json()
    h = ctx["hydrants"]
    assert h["method"] == "network" and h["snapped_to_segment"] == seg
    items = h["items"]
    assert items and len(items) <= 8
    dist = [i["distance_m"] for i in items]
    assert dist == sorted(dist) and dist[-1] <= radius
    assert all(i["distance_m"] >= i["straight_line_m"] - 0.05 for i in items)
    assert all(i["geometry"]["type"] == "Point" for i in items)
    # the same distances from a separate shortest-path computation
    g, hydrants = water_graph(db, seg)
    g.add_edge("incident", a, weight=length / 2)
    g.add_edge("incident", b, weight=length / 2)
    along = nx.single_source_dijkstra_path_length(g, "incident", weight="weight")
    ranked = sorted((d, n) for n, d in along.items() if n in hydrants and d <= radius)
    assert [i["id"] for i in items] == [n for _, n in ranked[:8]]
    assert dist == pytest.approx([d for d, _ in ranked[:8]], abs=0.05)
    # grid for dispatch, with its officer
    ((grid, officer),) = q(
        db,
        """SELECT g.code, g.officer FROM cim.work_grid g WHERE
        ST_Intersects(g.geom, ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s), 4490), 4547))
        ORDER BY g.code LIMIT 1""",
        coords,
    )
    assert ctx["grid"]["code"] == grid and ctx["grid"]["officer"] == officer
    assert "isolation" not in ctx  # a fire, not a pipe burst


def test_context_pipes_and_buildings_equal_sql(client: TestClient, editor: dict, db: str) -> None:
    # away from water pipes: straight-line hydrant distances
    bx, by = q(
        db,
        """
        SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(footprint) p FROM cim.building
          ORDER BY id) b
        WHERE NOT EXISTS (SELECT 1 FROM cim.pipeline_segment s WHERE s.network = 'JS'
                          AND ST_DWithin(s.geom, b.p, 60)) LIMIT 1""",
    )[0]
    coords = lonlat(db, f"ST_SetSRID(ST_MakePoint({bx}, {by}), 4547)")
    f = report(client, editor, coords, "gas_leak")
    pt = "ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s), 4490), 4547)"
    for radius in (150, 600):
        ctx = client.get(
            f"/incidents/{f['id']}/context", params={"radius": radius, "max_items": 200}
        ).json()
        h = ctx["hydrants"]
        assert h["method"] == "straight_line"
        ranked = q(
            db,
            f"""SELECT id, ST_Distance(geom, {pt}) d FROM cim.pipeline_node
            WHERE appurtenance = '消防栓' AND ST_DWithin(geom, {pt}, %s) ORDER BY d, id
            LIMIT 5""",
            [*coords, *coords, radius],
        )
        assert [i["id"] for i in h["items"]] == [r[0] for r in ranked]
        for key, net in (("gas_pipes", "RQ"), ("power_cables", "DL")):
            expected = q(
                db,
                f"""SELECT id, ST_Distance(geom, {pt}) d FROM cim.pipeline_segment
                WHERE network = %s AND ST_DWithin(geom, {pt}, %s) ORDER BY d, id""",
                [*coords, net, *coords, radius],
            )
            got = ctx[key]
            assert [i["id"] for i in got["items"]] == [e[0] for e in expected], key
            assert [i["distance_m"] for i in got["items"]] == pytest.approx(
                [e[1] for e in expected], abs=0.01
            )
            assert got["count"] == len(expected) and not got["truncated"]
        ((n, residents),) = q(
            db,
            f"""SELECT count(*), coalesce(sum(residents), 0)
            FROM cim.building WHERE ST_DWithin(footprint, {pt}, %s)""",
            [*coords, radius],
        )
        assert ctx["buildings"]["count"] == n and ctx["buildings"]["residents"] == residents
    assert ctx["gas_pipes"]["count"] > 0 and ctx["power_cables"]["count"] > 0
    for params in ({"radius": 0}, {"radius": 2001}, {"radius": "far"}, {"hydrants": 51}):
        r = client.get(f"/incidents/{f['id']}/context", params=params)
        assert r.status_code == 422, params
    assert client.get("/incidents/999999/context").status_code == 404


def test_pipe_burst_valves_to_close(client: TestClient, editor: dict, db: str) -> None:
    """A pipe between a valve and a junction whose other arms all end at valves: closing that
    valve and those arms' valves isolates it (worked out here from the rows)."""
    segs = q(
        db, "SELECT id, from_node_id, to_node_id FROM cim.pipeline_segment WHERE network = 'JS'"
    )
    valves = {
        i
        for (i,) in q(
            db, "SELECT id FROM cim.pipeline_node WHERE appurtenance = '阀门' AND network = 'JS'"
        )
    }
    at: dict[int, list[tuple[int, int]]] = {}
    for sid, a, b in segs:
        at.setdefault(a, []).append((sid, b))
        at.setdefault(b, []).append((sid, a))
    case = None
    for sid, a, b in sorted(segs):
        valve, junction = (a, b) if a in valves else (b, a)
        if valve not in valves or junction in valves:
            continue
        arms = [(o, far) for o, far in at[junction] if o != sid]
        if len(arms) >= 2 and all(far in valves for _, far in arms):
            case = (sid, {valve} | {far for _, far in arms}, {sid} | {o for o, _ in arms})
            break
    assert case is not None, "the sample has valves on every arm of its junctions"
    sid, expected_valves, expected_pipes = case
    ((x, y),) = q(
        db,
        "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_LineInterpolatePoint("
        "ST_Force2D(geom), 0.5) p FROM cim.pipeline_segment WHERE id = %s) s",
        (sid,),
    )
    f = report(
        client, editor, lonlat(db, f"ST_SetSRID(ST_MakePoint({x}, {y}), 4547)"), "pipe_burst"
    )
    ctx = client.get(f"/incidents/{f['id']}/context").json()
    iso = ctx["isolation"]
    assert iso["burst_segment"]["id"] == sid and iso["complete"]
    assert {v["node_id"] for v in iso["valves"]} == expected_valves
    assert iso["isolated_segments"] == len(expected_pipes)
    assert iso["valves_to_close"] == len(expected_valves)
    dist = [v["distance_m"] for v in iso["valves"]]
    assert dist == sorted(dist)
    assert iso["method"] in ("pipeline_analysis", "simple")
    # the incidents module's own walk (the fallback) gives the same answer

    async def walk():
        async with await psycopg.AsyncConnection.connect(libpq_dsn(db)) as conn:
            return await simple_isolation(conn, x, y)

    found = asyncio.run(walk())
    assert found.method == "simple" and found.complete
    assert {v["node_id"] for v in found.valves} == expected_valves
    assert set(found.segments) == expected_pipes

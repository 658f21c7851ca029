"""The /pipelines endpoints through the app, on the North Station sample: answers, their
structure and coordinates, and the 400 / 404 / 422 cases."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
import shapely
import shapely.ops
from fastapi.testclient import TestClient

from cimtwin.db.engine import libpq_dsn
from cimtwin.spatial.crs import transformer


@pytest.fixture(scope="module")
def sample(database_url: str, loaded_sample) -> dict:
    """Ids and positions picked from the sample with plain SQL."""
    with psycopg.connect(libpq_dsn(database_url)) as conn:

        def row(query: str) -> tuple:
            return conn.execute(query).fetchone()

        out = {
            "jp": row(
                "SELECT s.id, ST_X(ST_LineInterpolatePoint(s.geom, 0.5)), "
                "ST_Y(ST_LineInterpolatePoint(s.geom, 0.5)) FROM cim.pipeline_segment s "
                "WHERE s.subtype = 'JP' AND s.length_m > 30 ORDER BY s.id LIMIT 1"
            ),
            "ys": row(
                "SELECT id FROM cim.pipeline_segment WHERE subtype = 'YS' ORDER BY id "
                "OFFSET 20 LIMIT 1"
            )[0],
            "ws_node": row(
                "SELECT id FROM cim.pipeline_node WHERE subtype = 'WS' ORDER BY id LIMIT 1"
            )[0],
            "valve": row(
                "SELECT id FROM cim.pipeline_node WHERE appurtenance = '阀门' ORDER BY id LIMIT 1"
            )[0],
            "rq_cross": row(
                "SELECT ST_X(geom), ST_Y(geom) FROM cim.pipeline_node WHERE "
                "network = 'RQ' AND feature = '四通' ORDER BY id LIMIT 1"
            ),
            "max_seg": row("SELECT max(id) FROM cim.pipeline_segment")[0],
        }
    return out


def lonlat(x: float, y: float) -> list[float]:
    lon, lat = transformer(4547, "OGC:CRS84").transform(x, y)
    return [lon, lat]


def box(cx: float, cy: float, half: float, crs84: bool = True) -> dict:
    ring = [
        (cx - half, cy - half),
        (cx + half, cy - half),
        (cx + half, cy + half),
        (cx - half, cy + half),
        (cx - half, cy - half),
    ]
    coords = [lonlat(x, y) if crs84 else [x, y] for x, y in ring]
    return {"type": "Polygon", "coordinates": [coords]}


def problem(r, status: int, *words: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"code", "description"}
    for w in words:
        assert w in body["description"], body["description"]
    return body


def in_sample_area(position: list[float]) -> bool:
    lon, lat = position[:2]
    return 113.9 < lon < 114.2 and 22.5 < lat < 22.7


# --- isolation ------------------------------------------------------------------------------------


def test_isolation_by_segment_and_by_point(client: TestClient, sample):
    sid, x, y = sample["jp"]
    r = client.post("/pipelines/isolation", json={"segment_id": sid})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["network"] == "JS" and sid in body["isolated_segments"]["ids"]
    assert body["valves"] and all(
        v["kind"] == "valve_point" and v["action"] == "close" for v in body["valves"]
    )
    assert body["isolated_segments"]["length_m"] > 0
    assert body["customers"]["rule"].startswith("a building is served")
    fc = body["features"]
    assert fc["type"] == "FeatureCollection"
    kinds = {f["properties"]["kind"] for f in fc["features"]}
    assert kinds == {"segment", "valve"}
    for f in fc["features"]:
        first = (
            f["geometry"]["coordinates"][0]
            if f["geometry"]["type"] == "LineString"
            else f["geometry"]["coordinates"]
        )
        assert in_sample_area(first)
    # the same pipe from a lon/lat point on it, and from EPSG:4547 coordinates
    by_point = client.post("/pipelines/isolation", json={"point": lonlat(x, y)}).json()
    assert by_point["burst"]["segment_id"] == sid
    assert by_point["burst"]["snapped"]["distance_m"] < 0.01
    assert by_point["valves"] == body["valves"]
    projected = client.post(
        "/pipelines/isolation", json={"point": [x + 2, y], "crs": "EPSG:4547", "network": "JS"}
    )
    assert projected.status_code == 200 and projected.json()["burst"]["segment_id"] == sid
    # a failed valve grows the isolation
    failed = client.post(
        "/pipelines/isolation",
        json={"segment_id": sid, "failed_valves": [body["valves"][0]["valve"]]},
    ).json()
    assert failed["isolated_segments"]["count"] > body["isolated_segments"]["count"]
    assert failed["failed_valves"]["used"] == [body["valves"][0]["valve"]]
    assert max(v["ring"] for v in failed["valves"]) == 1


def test_isolation_errors(client: TestClient, sample):
    sid, x, y = sample["jp"]
    problem(
        client.post("/pipelines/isolation", json={"segment_id": sample["max_seg"] + 1}),
        404,
        "does not exist",
    )
    problem(
        client.post("/pipelines/isolation", json={"segment_id": sid, "failed_valves": ["node:1"]}),
        404,
        "not a valve of network JS",
        "node:1",
    )
    problem(
        client.post("/pipelines/isolation", json={"segment_id": sid, "dataset": "other"}),
        404,
        "not in dataset",
    )
    far = lonlat(x + 300, y + 300)
    problem(
        client.post("/pipelines/isolation", json={"point": far, "network": "RQ", "tolerance_m": 5}),
        400,
        "from the nearest pipe",
        "tolerance is 5 m",
    )
    problem(client.post("/pipelines/isolation", json={}), 422, "exactly one of")
    problem(
        client.post("/pipelines/isolation", json={"segment_id": sid, "point": far}),
        422,
        "exactly one of",
    )
    problem(
        client.post("/pipelines/isolation", json={"segment_id": sid, "failed_valves": [12]}),
        422,
        "failed_valves.0",
    )
    problem(
        client.post(
            "/pipelines/isolation", json={"segment_id": sid, "failed_valves": ["valve-12"]}
        ),
        422,
        "pattern",
    )
    problem(client.post("/pipelines/isolation", json={"point": [x, y]}), 422, "out of range")
    problem(
        client.post("/pipelines/isolation", json={"point": [0.0, 0.0]}), 422, "outside the area"
    )
    problem(
        client.post("/pipelines/isolation", json={"point": [x, y], "crs": "EPSG:9999"}), 422, "crs"
    )
    problem(
        client.post("/pipelines/isolation", json={"segment_id": sid, "network": "XX"}),
        422,
        "not a CJJ 61 network code",
    )
    problem(
        client.post("/pipelines/isolation", json={"segment_id": sid, "colour": "red"}),
        422,
        "colour",
    )
    problem(client.post("/pipelines/isolation", json={"segment_id": "abc"}), 422, "segment_id")
    problem(
        client.post("/pipelines/isolation", json={"segment_id": sid, "tolerance_m": -1}),
        422,
        "tolerance_m",
    )


# --- trace ----------------------------------------------------------------------------------------


def test_trace(client: TestClient, sample):
    r = client.post(
        "/pipelines/trace",
        json={"network": "PS", "start": {"segment_id": sample["ys"]}, "direction": "downstream"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/geo+json")
    body = r.json()
    assert body["type"] == "FeatureCollection" and body["direction_applied"] == "downstream"
    assert body["segment_ids"][0] == sample["ys"]
    assert body["totals"]["segments"] == len(body["segment_ids"]) > 1
    # downstream ends at an outfall
    outfalls = [
        f
        for f in body["features"]
        if f["properties"]["kind"] == "node" and f["properties"]["appurtenance"] == "出水口"
    ]
    assert len(outfalls) == 1
    dist = [
        f["properties"]["distance_m"]
        for f in body["features"]
        if f["properties"]["kind"] == "segment"
    ]
    assert dist == sorted(dist)
    # from a node, with a distance limit; the pressure network traced by connectivity
    r = client.post(
        "/pipelines/trace",
        json={
            "network": "PS",
            "start": {"node_id": sample["ws_node"]},
            "direction": "upstream",
            "max_distance_m": 50,
        },
    )
    assert r.status_code == 200
    assert all(d < 50 for d in (f["properties"]["distance_m"] for f in r.json()["features"]))
    sid, x, y = sample["jp"]
    r = client.post(
        "/pipelines/trace",
        json={
            "network": "JS",
            "start": {"point": lonlat(x, y)},
            "direction": "upstream",
            "stop_at_valves": True,
        },
    )
    body = r.json()
    assert body["direction_applied"] == "connected" and body["notes"]
    assert body["start"]["segment_id"] == sid and body["stops"]
    iso = client.post("/pipelines/isolation", json={"segment_id": sid}).json()
    assert set(body["segment_ids"]) == set(iso["isolated_segments"]["ids"])
    r = client.post(
        "/pipelines/trace", json={"network": "JS", "start": {"segment_id": sid}, "max_features": 3}
    )
    assert r.json()["truncated"] and len(r.json()["features"]) == 6


def test_trace_errors(client: TestClient, sample):
    problem(
        client.post("/pipelines/trace", json={"network": "PS", "start": {"node_id": 10**12}}),
        404,
        "does not exist",
    )
    problem(
        client.post(
            "/pipelines/trace", json={"network": "JS", "start": {"node_id": sample["ws_node"]}}
        ),
        400,
        "not on network JS",
    )
    problem(
        client.post(
            "/pipelines/trace", json={"network": "JS", "start": {"segment_id": sample["ys"]}}
        ),
        400,
        "belongs to network PS",
    )
    problem(
        client.post(
            "/pipelines/trace",
            json={"network": "PS", "start": {"segment_id": sample["ys"]}, "direction": "sideways"},
        ),
        422,
        "direction",
    )
    problem(client.post("/pipelines/trace", json={"start": {"segment_id": 1}}), 422, "network")
    problem(
        client.post(
            "/pipelines/trace", json={"network": "PS", "start": {"segment_id": 1, "node_id": 1}}
        ),
        422,
        "exactly one of",
    )
    problem(
        client.post(
            "/pipelines/trace",
            json={"network": "PS", "start": {"segment_id": 1}, "max_distance_m": 0},
        ),
        422,
        "max_distance_m",
    )


# --- clearance, excavation, cross-section ---------------------------------------------------------


def test_clearance_check(client: TestClient, sample):
    x, y = sample["rq_cross"]
    r = client.post("/pipelines/clearance-check", json={"area": box(x, y, 60)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["standard"].startswith("GB 50289-2016")
    for v in body["violations"]:
        assert v["measured_m"] < v["required_m"]
        assert v["shortfall_m"] == pytest.approx(v["required_m"] - v["measured_m"], abs=1e-3)
        assert v["rule"]["table"] in ("4.1.9", "4.1.14") and v["rule"]["csv_row"] >= 2
        assert v["rule"]["unverified"] == v["rule"]["status"].startswith("UNVERIFIED")
        assert in_sample_area(v["location"])
    shortfalls = [v["shortfall_m"] for v in body["violations"]]
    assert shortfalls == sorted(shortfalls, reverse=True)
    assert {n["note"] for n in body["no_rule"]} <= {
        "the shipped GB 50289 table has no row for this pair: not checked"
    }
    gas = client.post(
        "/pipelines/clearance-check", json={"networks": ["rq"], "buildings": False}
    ).json()
    assert all("RQ" in (v["a"]["network"], v["b"]["network"]) for v in gas["violations"])
    assert gas["counts"]["pipe_building_pairs"] == 0


def test_clearance_check_errors(client: TestClient, sample):
    x, y = sample["rq_cross"]
    problem(client.post("/pipelines/clearance-check", json={}), 422, "area, networks")
    open_ring = box(x, y, 20)
    open_ring["coordinates"][0] = open_ring["coordinates"][0][:-1] + [
        open_ring["coordinates"][0][1]
    ]
    problem(
        client.post("/pipelines/clearance-check", json={"area": open_ring}),
        422,
        "must end where it starts",
    )
    bowtie = {
        "type": "Polygon",
        "coordinates": [[[x, y], [x + 10, y + 10], [x + 10, y], [x, y + 10], [x, y]]],
    }
    problem(
        client.post("/pipelines/clearance-check", json={"area": bowtie, "crs": "EPSG:4547"}),
        422,
        "not a valid polygon",
    )
    problem(
        client.post("/pipelines/clearance-check", json={"area": box(x, y, 5000)}),
        422,
        "larger than",
    )
    problem(
        client.post(
            "/pipelines/clearance-check",
            json={"area": {"type": "Point", "coordinates": lonlat(x, y)}},
        ),
        422,
        # one polygon model for every router: the tag error names the field and the types
        "area: Input tag 'Point'",
        "'Polygon', 'MultiPolygon'",
    )
    problem(
        client.post("/pipelines/clearance-check", json={"networks": ["ZZ"]}), 422, "network code"
    )


VERTICAL_WATER_M = 0.15  # GB 50289 table 4.1.14: 给水管线 over/under 给水管线
WATER_ITEM = "给水管线"


def water_crossings_oracle(database_url: str) -> dict[tuple[int, int], tuple[float, tuple]]:
    """Water pipe pairs (not reclaimed water) that meet in plan without sharing a node, with
    their vertical clear distance, recomputed with shapely: outlines meet when the 2D centre
    line distance is below the sum of the half widths; the clear distance is the elevation
    difference of the centre lines at the crossing (the closest points when the centre lines
    do not meet) minus both half heights (diameter, else section height).

    Returns {(id, id): (clear distance m, (subtype, subtype, x, y))}."""
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        pipes = conn.execute(
            "SELECT id, subtype, from_node_id, to_node_id, coalesce(diameter_mm, width_mm, 0), "
            "coalesce(diameter_mm, height_mm, 0), ST_AsBinary(geom) FROM cim.pipeline_segment "
            "WHERE network = 'JS' AND coalesce(subtype, '') <> 'ZS' AND link_type = 'pipe' "
            "ORDER BY id"
        ).fetchall()
    lines = [shapely.from_wkb(bytes(p[6])) for p in pipes]
    flat = shapely.force_2d(lines)

    def z_at(k: int, point: shapely.Point) -> float:
        coords = np.asarray(lines[k].coords)
        along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(coords[:, :2], axis=0).T))])
        return float(np.interp(flat[k].project(point), along, coords[:, 2]))

    widest = max(p[4] for p in pipes) / 1000.0
    found = {}
    near_i, near_j = shapely.STRtree(flat).query(flat, predicate="dwithin", distance=widest)
    for i, j in zip(near_i.tolist(), near_j.tolist(), strict=True):
        a, b = pipes[i], pipes[j]
        if a[0] >= b[0] or {a[2], a[3]} & {b[2], b[3]}:
            continue
        if flat[i].distance(flat[j]) >= (a[4] + b[4]) / 2000.0:
            continue
        if flat[i].intersects(flat[j]):
            cut = flat[i].intersection(flat[j])
            points = [(p, p) for p in shapely.get_parts(shapely.extract_unique_points(cut))]
        else:
            points = [tuple(shapely.ops.nearest_points(flat[i], flat[j]))]
        dz, pa = min(
            ((abs(z_at(i, pa) - z_at(j, pb)), pa) for pa, pb in points), key=lambda t: t[0]
        )
        found[(a[0], b[0])] = (dz - (a[5] + b[5]) / 2000.0, (a[1], b[1], pa.x, pa.y))
    return found


def test_clearance_check_compares_water_mains_with_distribution_pipes(
    client: TestClient, database_url
):
    """Same-network crossings are checked (issue 9, defect 6): on the sample, distribution
    pipes (JP) crossing transmission mains (SS) without a junction, against the oracle."""
    oracle = water_crossings_oracle(database_url)
    r = client.post(
        "/pipelines/clearance-check",
        json={"networks": ["JS"], "buildings": False, "max_results": 10_000},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body["truncated"]
    checked = {(c["type"], c["item_a"], c["item_b"]): c["pairs"] for c in body["checked"]}
    assert checked[("vertical", WATER_ITEM, WATER_ITEM)] == len(oracle)
    got = {
        tuple(sorted((v["a"]["segment_id"], v["b"]["segment_id"]))): v
        for v in body["violations"]
        if v["type"] == "vertical" and v["a"]["network"] == v["b"]["network"] == "JS"
    }
    expected = {k: c for k, (c, _) in oracle.items() if c < VERTICAL_WATER_M - 1e-6}
    assert set(got) == set(expected)
    for k, clear in expected.items():
        v = got[k]
        assert v["measured_m"] == pytest.approx(clear, abs=2e-3)
        assert v["required_m"] == VERTICAL_WATER_M and v["rule"]["csv_row"] == 54
        assert v["rule"]["item_a"] == v["rule"]["item_b"] == WATER_ITEM
    jp_ss = {k for k, (_, (sa, sb, _, _)) in oracle.items() if {sa, sb} == {"JP", "SS"}}
    assert jp_ss and jp_ss & set(expected)
    # the example: the crossing near E 502955, N 2501160 is one of them
    (near,) = [
        k for k, (_, (_, _, x, y)) in oracle.items() if np.hypot(x - 502955, y - 2501160) < 2.0
    ]
    assert near in jp_ss and near in got
    assert got[near]["measured_m"] == pytest.approx(oracle[near][0], abs=2e-3)
    assert oracle[near][0] < 0  # the pipes' outlines overlap: they would have to touch


def test_excavation_check(client: TestClient, sample):
    x, y = sample["rq_cross"]
    r = client.post(
        "/pipelines/excavation-check",
        json={"polygon": box(x, y, 20, crs84=False), "crs": "EPSG:4547", "depth": 1.5},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pipes"] and body["pipes"][0]["network"] in ("RQ", "DL")
    keys = [(p["priority"], p["top_depth_m"]) for p in body["pipes"]]
    assert keys == sorted(keys)
    assert all(p["top_depth_m"] < 1.5 and p["owner"] for p in body["pipes"])
    assert body["nodes"] and body["summary"]
    shallow = client.post(
        "/pipelines/excavation-check", json={"polygon": box(x, y, 20), "depth": 0.3}
    ).json()
    assert shallow["pipes"] == []
    assert len(shallow["nodes"]) <= len(body["nodes"])
    problem(
        client.post("/pipelines/excavation-check", json={"polygon": box(x, y, 20), "depth": 0}),
        422,
        "depth",
    )
    problem(client.post("/pipelines/excavation-check", json={"depth": 2}), 422, "polygon")
    problem(
        client.post("/pipelines/excavation-check", json={"polygon": box(x, y, 400), "depth": 2}),
        422,
        "larger than",
    )


def test_cross_section(client: TestClient, sample, database_url):
    _, x, y = sample["jp"]
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        (wkb,) = conn.execute(
            "SELECT ST_AsBinary(geom) FROM cim.pipeline_segment WHERE id = %s", (sample["jp"][0],)
        ).fetchone()
    main = shapely.force_2d(shapely.from_wkb(bytes(wkb)))
    (ax, ay), (bx, by) = main.coords[0], main.coords[-1]
    ux, uy = (bx - ax) / main.length, (by - ay) / main.length
    a, b = (x + 25 * uy, y - 25 * ux), (x - 25 * uy, y + 25 * ux)
    r = client.post("/pipelines/cross-section", json={"line": [lonlat(*a), lonlat(*b)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["length_m"] == pytest.approx(50, abs=0.05)
    assert sample["jp"][0] in {p["segment_id"] for p in body["pipes"]}
    offsets = [p["offset_m"] for p in body["pipes"]]
    assert offsets == sorted(offsets) and all(0 <= o <= 50.05 for o in offsets)
    assert len(body["ground"]["samples"]) in (26, 27)  # every ~2 m
    assert "inverse distance" in body["ground"]["method"]
    same = client.post(
        "/pipelines/cross-section",
        json={
            "line": {"type": "LineString", "coordinates": [list(a), list(b)]},
            "crs": "EPSG:4547",
        },
    ).json()
    assert [p["segment_id"] for p in same["pipes"]] == [p["segment_id"] for p in body["pipes"]]
    assert [p["offset_m"] for p in same["pipes"]] == pytest.approx(offsets, abs=2e-3)
    problem(client.post("/pipelines/cross-section", json={"line": [lonlat(*a)] * 3}), 422, "line")
    problem(
        client.post("/pipelines/cross-section", json={"line": [lonlat(*a), lonlat(*a)]}),
        422,
        "the same",
    )
    problem(
        client.post(
            "/pipelines/cross-section",
            json={"line": [list(a), [a[0] + 5000, a[1]]], "crs": "EPSG:4547"},
        ),
        422,
        "longer than",
    )


# --- profile and QA -------------------------------------------------------------------------------


def test_profile(client: TestClient, sample):
    r = client.get(f"/pipelines/{sample['ys']}/profile")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "with the flow" and body["segments"][0]["segment_id"] == sample["ys"]
    chain = body["segments"]
    for prev, nxt in zip(chain, chain[1:], strict=False):
        assert nxt["chainage_start_m"] == pytest.approx(prev["chainage_end_m"], abs=2e-3)
        assert nxt["from_node_id"] == prev["to_node_id"]
        # gravity: the invert never rises along the flow
        assert nxt["bottom_start_m"] <= prev["bottom_start_m"] + 1e-6
    assert len(body["ground_line"]["points"]) == len(chain) + 1
    assert body["stopped"] == "outfall"
    r = client.get(f"/pipelines/{sample['jp'][0]}/profile", params={"max_segments": 5})
    assert r.status_code == 200 and len(r.json()["segments"]) == 5
    assert r.json()["mode"] == "straight through"
    problem(client.get(f"/pipelines/{sample['max_seg'] + 1}/profile"), 404, "does not exist")
    problem(client.get("/pipelines/abc/profile"), 422, "segment_id")
    problem(client.get("/pipelines/1/profile", params={"max_segments": 0}), 422, "max_segments")


def test_qa(client: TestClient):
    r = client.get("/pipelines/qa", params={"network": "PS"})
    assert r.status_code == 200, r.text
    (ps,) = r.json()["networks"]
    assert ps["network"] == "PS" and ps["gravity"]
    # the sample's drainage: one tree per catchment, no loops, no uphill pipes, no dead ends
    assert ps["subnetworks"]["count"] > 1 and sum(ps["subnetworks"]["sizes"]) == ps["segments"]
    assert ps["flow_loops"]["count"] == 0 and ps["reversed_slopes"]["count"] == 0
    assert ps["dangling_ends"]["count"] == 0
    everything = client.get("/pipelines/qa").json()["networks"]
    assert {n["network"] for n in everything} >= {"JS", "PS", "RQ", "DL", "TX"}
    js = next(n for n in everything if n["network"] == "JS")
    assert "flow_loops" not in js and js["dangling_ends"]["count"] == 0
    problem(client.get("/pipelines/qa", params={"network": "XX"}), 422, "network")
    problem(client.get("/pipelines/qa", params={"max_items": 0}), 422, "max_items")


# --- admission control ----------------------------------------------------------------------------


def test_analyses_queue_for_their_slots_and_lookups_do_not(settings, sample):
    """With every analysis slot taken, an analysis waits its turn and then gets a 503 with
    Retry-After, while lookups and features still answer at once."""
    from cimtwin.api.app import create_app

    busy = settings.model_copy(update={"analysis_concurrency": 1, "analysis_wait_s": 0.5})
    with TestClient(create_app(busy)) as c:
        slots = c.app.state.analysis_slots
        trace = {"network": "PS", "start": {"segment_id": sample["ys"]}, "direction": "downstream"}
        assert c.post("/pipelines/trace", json=trace).status_code == 200
        c.portal.call(slots.acquire)  # someone else's analysis is running
        try:
            r = c.post("/pipelines/trace", json=trace)
            problem(r, 503, "busy with other network analyses")
            assert r.headers["retry-after"] == "5"
            problem(c.get("/pipelines/qa", params={"network": "PS"}), 503, "busy")
            incident = c.get("/incidents", params={"limit": 1}).json()["features"][0]["id"]
            problem(c.get(f"/incidents/{incident}/context"), 503, "busy")
            x, y = sample["jp"][1:]
            lon, lat = lonlat(x, y)
            assert c.get("/grids/locate", params={"lon": lon, "lat": lat}).status_code == 200
            assert c.get("/collections/pipelines/items", params={"limit": 1}).status_code == 200
        finally:
            c.portal.call(slots.release)
        assert c.post("/pipelines/trace", json=trace).status_code == 200

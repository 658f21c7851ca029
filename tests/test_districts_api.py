"""District endpoints against the North Station sample: summary numbers equal SQL written here,
and volume queries find the metro below ground and nothing of the buildings."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.conftest import q

SLUG = "north-station"
D = "(SELECT geom FROM cim.district WHERE slug = 'north-station')"


@pytest.fixture(scope="module")
def summary(client: TestClient) -> dict:
    r = client.get(f"/districts/{SLUG}")
    assert r.status_code == 200, r.text
    return r.json()


def test_district_list(client: TestClient, engine: Engine) -> None:
    r = client.get("/districts")
    assert r.status_code == 200
    got = [(d["slug"], d["name"], d["kind"]) for d in r.json()["districts"]]
    assert got == q(engine, "SELECT slug, name, kind FROM cim.district ORDER BY slug")
    assert SLUG in [g[0] for g in got]
    r = client.get("/districts", params={"summary": "true"})
    full = {d["slug"]: d for d in r.json()["districts"]}
    assert full[SLUG]["above_ground"]["buildings"]["count"] > 0
    assert client.get("/districts/nowhere").status_code == 404
    assert client.get("/districts/Bad Slug!").status_code == 422


def test_buildings_above_ground_equal_sql(summary: dict, engine: Engine) -> None:
    # a building is in the district when the point on its footprint's surface is
    n, area, floor, hmin, hmax, havg, residents = q(
        engine,
        f"""
        SELECT count(*), sum(ST_Area(footprint)), sum(floor_area_m2), min(height_m),
               max(height_m), avg(height_m), sum(residents)
        FROM cim.building WHERE ST_Within(ST_PointOnSurface(footprint), {D})""",
    )[0]
    b = summary["above_ground"]["buildings"]
    assert b["count"] == n > 0
    assert b["footprint_area_m2"] == pytest.approx(area)
    assert b["floor_area_m2"] == pytest.approx(floor)
    assert b["residents"] == residents
    assert b["height_m"]["min"] == hmin and b["height_m"]["max"] == hmax
    assert b["height_m"]["mean"] == pytest.approx(havg)


def test_components_parcels_incidents_equal_sql(summary: dict, engine: Engine) -> None:
    above = summary["above_ground"]
    comps = q(
        engine,
        f"""
        SELECT substr(class_code, 1, 2), count(*) FROM cim.city_component
        WHERE ST_Intersects(geom, {D}) GROUP BY 1 ORDER BY 1""",
    )
    assert [(c["code"], c["count"]) for c in above["components"]["by_major_class"]] == comps
    parcels = q(
        engine,
        f"""
        SELECT land_use, sum(ST_Area(ST_Intersection(geom, {D}))) FROM cim.parcel
        WHERE ST_Area(ST_Intersection(geom, {D})) > 0 GROUP BY 1 ORDER BY 1""",
    )
    got = [(p["code"], p["area_m2"]) for p in above["parcels"]["by_land_use"]]
    assert [g[0] for g in got] == [p[0] for p in parcels]
    for (_, a), (_, b) in zip(got, parcels, strict=True):
        assert a == pytest.approx(b, rel=1e-9)
    incidents = q(
        engine,
        f"""
        SELECT incident_type, count(*) FROM cim.incident
        WHERE ST_Within(geom, {D}) AND status IN ('reported', 'dispatched', 'in_progress')
        GROUP BY 1 ORDER BY 1""",
    )
    got = [(i["type"], i["count"]) for i in above["open_incidents"]["by_type"]]
    assert got == incidents


def test_below_ground_equal_sql(summary: dict, engine: Engine) -> None:
    below = summary["below_ground"]
    ug = q(
        engine,
        f"""
        SELECT kind, count(*), max(top_elevation_m), min(bottom_elevation_m)
        FROM cim.underground_structure WHERE ST_Intersects(footprint, {D})
        GROUP BY 1 ORDER BY 1""",
    )
    got = [
        (k["kind"], k["count"], k["top_elevation_m"], k["bottom_elevation_m"])
        for k in below["underground_structures"]["by_kind"]
    ]
    assert got == ug and "metro_tunnel" in [g[0] for g in got]
    for k in below["underground_structures"]["by_kind"]:
        assert 0 < k["depth_m"]["top"] < k["depth_m"]["bottom"] < 40
    # depth band of a pipe: the shallower end's depth to the pipe top
    pipes = q(
        engine,
        f"""
        WITH p AS (
          SELECT network, ST_Length(ST_Intersection(geom, {D})) AS len,
                 least(from_depth_m, to_depth_m) - CASE depth_ref
                   WHEN 'invert' THEN coalesce(height_mm, diameter_mm) / 1000.0
                   WHEN 'centre' THEN coalesce(height_mm, diameter_mm) / 2000.0
                   ELSE 0 END AS top
          FROM cim.pipeline_segment WHERE ST_Intersects(geom, {D}))
        SELECT network, CASE WHEN top < 1 THEN '0-1' WHEN top < 2 THEN '1-2'
                             WHEN top < 3 THEN '2-3' WHEN top < 5 THEN '3-5' ELSE '>5' END,
               count(*), sum(len)
        FROM p GROUP BY 1, 2 ORDER BY 1, 2""",
    )
    got = sorted(
        (n["network"], d["band"], d["segments"], d["length_m"])
        for n in below["pipelines"]["by_network"]
        for d in n["by_depth"]
    )
    assert [g[:3] for g in got] == [p[:3] for p in pipes]
    for g, p in zip(got, pipes, strict=True):
        assert g[3] == pytest.approx(p[3])
    assert {n["network"] for n in below["pipelines"]["by_network"]} == {
        "DL",
        "JS",
        "PS",
        "RQ",
        "TX",
    }


def query(client: TestClient, body: dict, slug: str = SLUG):
    return client.post(f"/districts/{slug}/query", json=body)


def test_volume_below_ground_finds_the_metro_not_buildings(
    client: TestClient, engine: Engine
) -> None:
    r = query(client, {"elevation": {"from": -25, "to": -5, "reference": "ground"}})
    assert r.status_code == 200, r.text
    layers = r.json()["layers"]
    kinds = {f["properties"]["kind"] for f in layers["underground"]["features"]}
    assert "metro_tunnel" in kinds
    codes = {f["properties"]["code"] for f in layers["underground"]["features"]}
    tunnels = {
        c
        for (c,) in q(
            engine,
            f"""SELECT code FROM cim.underground_structure
        WHERE kind = 'metro_tunnel' AND ST_Intersects(footprint, {D})""",
        )
    }
    assert tunnels and tunnels <= codes
    assert layers["buildings"]["numberMatched"] == 0 and layers["buildings"]["features"] == []
    for f in layers["underground"]["features"]:
        rel = f["properties"]["relative_to_ground_m"]
        assert rel["bottom"] < -5 and rel["top"] > -25
    # the sample's pipes are all shallower than 5 m
    assert layers["pipelines"]["numberMatched"] == 0


def test_volume_above_ground_finds_buildings_not_the_metro(
    client: TestClient, engine: Engine
) -> None:
    r = query(client, {"elevation": {"from": 50, "to": 80}, "layers": ["buildings", "underground"]})
    layers = r.json()["layers"]
    assert set(layers) == {"buildings", "underground"}
    assert layers["underground"]["numberMatched"] == 0
    (n,) = q(
        engine,
        f"""SELECT count(*) FROM cim.building
                         WHERE ST_Intersects(footprint, {D}) AND height_m > 50""",
    )[0]
    assert layers["buildings"]["numberMatched"] == n > 0


def test_volume_absolute_in_a_box_equals_sql(client: TestClient, engine: Engine) -> None:
    x0, y0, x1, y1 = q(
        engine,
        f"""
        SELECT ST_XMin(e), ST_YMin(e), ST_XMin(e) + (ST_XMax(e) - ST_XMin(e)) / 2,
               ST_YMax(e) FROM (SELECT ST_Envelope({D}) e) s""",
    )[0]
    box = f"ST_Intersection({D}, ST_MakeEnvelope({x0}, {y0}, {x1}, {y1}, 4547))"
    body = {
        "bbox": [x0, y0, x1, y1],
        "crs": "EPSG:4547",
        "limit": 10_000,
        "elevation": {"from": 55, "to": 60, "reference": "absolute"},
    }
    r = query(client, body)
    assert r.status_code == 200, r.text
    layers = r.json()["layers"]
    ug = [
        c
        for (c,) in q(
            engine,
            f"""SELECT id FROM cim.underground_structure
        WHERE ST_Intersects(footprint, {box}) AND bottom_elevation_m < 60
          AND top_elevation_m > 55 ORDER BY id""",
        )
    ]
    assert [f["id"] for f in layers["underground"]["features"]] == ug
    bld = [
        c
        for (c,) in q(
            engine,
            f"""SELECT id FROM cim.building
        WHERE ST_Intersects(footprint, {box}) AND base_elevation_m < 60
          AND base_elevation_m + height_m > 55 ORDER BY id""",
        )
    ]
    assert [f["id"] for f in layers["buildings"]["features"]] == bld
    body["elevation"] = {"from": 70, "to": 71, "reference": "absolute"}
    pipes = [
        c
        for (c,) in q(
            engine,
            f"""
        SELECT id FROM cim.pipeline_segment WHERE ST_Intersects(geom, {box})
          AND ST_ZMin(geom) - coalesce(height_mm, diameter_mm) / 2000.0 < 71
          AND ST_ZMax(geom) + coalesce(height_mm, diameter_mm) / 2000.0 > 70 ORDER BY id""",
        )
    ]
    got = query(client, body).json()["layers"]["pipelines"]
    assert [f["id"] for f in got["features"]] == pipes and pipes


def test_volume_query_validation(client: TestClient) -> None:
    ring = [
        [114.02, 22.605],
        [114.03, 22.605],
        [114.03, 22.612],
        [114.02, 22.612],
        [114.02, 22.605],
    ]
    good = {
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "elevation": {"from": -5, "to": 0},
    }
    r = query(client, good)
    assert r.status_code == 200 and r.json()["area_m2"] > 0
    cases = [
        ({**good, "elevation": {"from": 0, "to": -5}}, "above to"),
        ({**good, "elevation": {"from": -5, "to": 0, "reference": "sea"}}, "reference"),
        ({**good, "layers": ["sewers"]}, "layers"),
        ({**good, "limit": 10_001}, "limit"),
        ({**good, "geometry": {"type": "Polygon", "coordinates": [ring[:3]]}}, "4 positions"),
        (
            {**good, "geometry": {"type": "Polygon", "coordinates": [ring[:-1]]}},
            "end where it starts",
        ),
        ({**good, "geometry": {"type": "LineString", "coordinates": ring}}, "geometry"),
        (
            {
                **good,
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [
                            [114.02, 22.605],
                            [114.03, 22.612],
                            [114.03, 22.605],
                            [114.02, 22.612],
                            [114.02, 22.605],
                        ]
                    ],
                },
            },
            "not a valid geometry",
        ),
        (
            {
                **good,
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[200, 22], [201, 22], [201, 23], [200, 22]]],
                },
            },
            "longitude",
        ),
        ({**good, "crs": "EPSG:4547"}, "look like lon/lat"),
        ({**good, "bbox": [1, 2, 3, 4]}, "not both"),
        ({"elevation": {"from": -5, "to": 0}, "bbox": [114.03, 22.6, 114.02, 22.61]}, "minx"),
        ({"geometry": good["geometry"]}, "elevation"),
    ]
    for body, words in cases:
        r = query(client, body)
        assert r.status_code == 422, (body, r.text)
        assert words in r.json()["description"], (words, r.text)
    assert query(client, good, "nowhere").status_code == 404
    far = {"bbox": [113.5, 22.2, 113.6, 22.3], "elevation": {"from": -5, "to": 0}}
    r = query(client, far)
    assert r.status_code == 200 and r.json()["note"] == "the area does not meet the district"


def test_bim_above_ground_equal_sql(summary: dict, engine: Engine) -> None:
    models, rooms = q(
        engine,
        f"""SELECT count(DISTINCT m.id), count(s.id) FROM cim.bim_model m
            LEFT JOIN cim.bim_space s ON s.model_id = m.id
            WHERE ST_Within(ST_PointOnSurface(m.footprint), {D})""",
    )[0]
    bim = summary["above_ground"]["bim"]
    assert (bim["models"], bim["rooms"]) == (models, rooms) == (1, 55)  # the sample's 天悦广场

"""Parcel endpoints against the North Station sample: listing filters and the planning report
(plot ratio and height worked out here by hand from the rows)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.conftest import q


def test_list_filters_equal_sql(client: TestClient, engine: Engine) -> None:
    r = client.get("/parcels", params={"limit": 10_000})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    body = r.json()
    assert body["numberMatched"] == body["numberReturned"] == 150
    f = body["features"][0]
    assert {"parcel_code", "land_use", "area_m2", "planned_plot_ratio", "height_limit_m"} <= set(
        f["properties"]
    )
    box = (114.02, 22.605, 114.03, 22.612)
    ids = [
        i
        for (i,) in q(
            engine,
            """
        SELECT id FROM cim.parcel WHERE land_use LIKE 'R%' AND ST_Intersects(geom,
          ST_Transform(ST_MakeEnvelope(114.02, 22.605, 114.03, 22.612, 4326), 4547))
        ORDER BY id""",
        )
    ]
    r = client.get("/parcels", params={"bbox": ",".join(map(str, box)), "land_use": "r"})
    got = r.json()
    assert [x["id"] for x in got["features"]] == ids and ids
    assert all(x["properties"]["land_use"].startswith("R") for x in got["features"])
    two = [
        i
        for (i,) in q(
            engine, "SELECT id FROM cim.parcel WHERE land_use IN ('B1', 'B2') ORDER BY id"
        )
    ]
    r = client.get("/parcels", params={"land_use": "B1,B2", "limit": 2})
    assert [x["id"] for x in r.json()["features"]] == two[:2]
    assert r.json()["numberMatched"] == len(two)


def test_list_rejects_bad_parameters(client: TestClient) -> None:
    for params, words in (
        ({"land_use": "Q9"}, "no GB 50137 class"),
        ({"land_use": "R-2"}, "not GB 50137 codes"),
        ({"bbox": "114,22"}, "4 comma-separated"),
        ({"bbox": "114.03,22.6,114.02,22.61"}, "minx"),
        ({"bbox": "114,95,115,96"}, "latitude"),
        ({"bbox": "1,2,3,4", "bbox_crs": "EPSG:4547"}, "outside the area"),
        ({"bbox_crs": "EPSG:0"}, "bbox_crs"),
        ({"limit": 0}, "limit"),
        ({"colour": "red"}, "colour"),
    ):
        r = client.get("/parcels", params=params)
        assert r.status_code == 422, (params, r.text)
        assert words in r.json()["description"], (params, r.text)


def test_report_plot_ratio_and_height_by_hand(client: TestClient, engine: Engine) -> None:
    # the parcel with the most buildings standing wholly on it
    pid, code, area, planned, limit = q(
        engine,
        """
        SELECT p.id, p.parcel_code, p.area_m2, p.planned_plot_ratio, p.height_limit_m
        FROM cim.parcel p JOIN cim.building b ON ST_Within(b.footprint, p.geom)
        GROUP BY p.id ORDER BY count(*) DESC, p.id LIMIT 1""",
    )[0]
    # buildings on it: covered, or more than half of the footprint inside
    on = q(
        engine,
        """
        SELECT b.building_code, b.floor_area_m2, b.height_m FROM cim.building b, cim.parcel p
        WHERE p.id = :p AND ST_Intersects(b.footprint, p.geom)
          AND ST_Area(ST_Intersection(b.footprint, p.geom)) > 0.5 * ST_Area(b.footprint)
        ORDER BY b.id""",
        p=pid,
    )
    floor = sum(f for _, f, _ in on)
    tallest = max(h for _, _, h in on)
    for ref in (str(pid), code):
        r = client.get(f"/parcels/{ref}/report")
        assert r.status_code == 200, r.text
        rep = r.json()
        assert rep["parcel"]["id"] == pid and rep["parcel"]["parcel_code"] == code
        assert rep["geometry"]["type"] == "MultiPolygon"
        assert [b["building_code"] for b in rep["buildings"]["items"]] == [c for c, _, _ in on]
        assert rep["buildings"]["floor_area_m2"] == pytest.approx(floor)
        assert rep["plot_ratio"]["actual"] == pytest.approx(floor / area)
        assert rep["plot_ratio"]["planned"] == planned
        assert rep["plot_ratio"]["exceeds"] == (floor / area > planned)
        assert rep["height"]["max_building_m"] == tallest
        assert rep["height"]["limit_m"] == limit
        assert rep["height"]["exceeds"] == (tallest > limit)
        assert rep["height"]["buildings_over_limit"] == [c for c, _, h in on if h > limit]


def test_report_pipes_and_components_equal_sql(client: TestClient, engine: Engine) -> None:
    pid, n = q(
        engine,
        """
        SELECT p.id, count(*) FROM cim.parcel p JOIN cim.pipeline_segment s
          ON ST_Intersects(s.geom, p.geom) GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""",
    )[0]
    rep = client.get(f"/parcels/{pid}/report").json()
    pipes = q(
        engine,
        """
        SELECT s.network, count(*), sum(ST_Length(ST_Intersection(s.geom, p.geom)))
        FROM cim.pipeline_segment s, cim.parcel p
        WHERE p.id = :p AND ST_Intersects(s.geom, p.geom) GROUP BY 1 ORDER BY 1""",
        p=pid,
    )
    got = [(x["network"], x["segments"], x["length_m"]) for x in rep["pipelines"]["by_network"]]
    assert [g[:2] for g in got] == [p[:2] for p in pipes] and sum(p[1] for p in pipes) == n
    for g, p in zip(got, pipes, strict=True):
        assert g[2] == pytest.approx(p[2])
    comps = q(
        engine,
        """
        SELECT c.class_code, count(*) FROM cim.city_component c, cim.parcel p
        WHERE p.id = :p AND ST_Intersects(c.geom, p.geom) GROUP BY 1 ORDER BY 1""",
        p=pid,
    )
    assert [(c["code"], c["count"]) for c in rep["components"]["by_class"]] == comps


def test_report_not_found(client: TestClient) -> None:
    assert client.get("/parcels/999999/report").status_code == 404
    assert client.get("/parcels/DK000/report").status_code == 404
    assert client.get("/parcels/a%20b/report").status_code == 422

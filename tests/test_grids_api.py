"""Work-grid endpoints against the North Station sample: every answer checked against SQL
written here (ST_Contains / ST_Intersects on the grid polygons, sums over the tables)."""

from __future__ import annotations

import json
import time

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from cimtwin.api.app import create_app
from cimtwin.db.engine import libpq_dsn
from cimtwin.settings import Settings
from tests.conftest import SAMPLE, q


def sample_extent(engine: Engine) -> tuple[float, float, float, float]:
    """Storage-CRS extent of the grids, widened by 100 m (so some points fall outside)."""
    return q(
        engine,
        "SELECT ST_XMin(e) - 100, ST_YMin(e) - 100, ST_XMax(e) + 100, "
        "ST_YMax(e) + 100 FROM (SELECT ST_Extent(geom) e FROM cim.work_grid) s",
    )[0]


# --- locate ---------------------------------------------------------------------------------


def test_locate_a_point_in_a_known_grid(client: TestClient, engine: Engine) -> None:
    # a point inside grid 05 of the 3rd community, its lon/lat made by PostGIS
    code, lon, lat, x, y = q(
        engine,
        """
        SELECT code, ST_X(p4326), ST_Y(p4326), ST_X(p), ST_Y(p) FROM (
          SELECT code, ST_PointOnSurface(geom) p,
                 ST_Transform(ST_PointOnSurface(geom), 4326) p4326
          FROM cim.work_grid ORDER BY code OFFSET 24 LIMIT 1) s""",
    )[0]
    expected = q(
        engine,
        """
        SELECT g.code, g.name, g.officer, c.code, c.name, s.code, s.name
        FROM cim.work_grid g JOIN cim.community c ON c.code = g.community_code
        JOIN cim.street s ON s.code = c.street_code
        WHERE ST_Contains(g.geom, ST_SetSRID(ST_MakePoint(:x, :y), 4547))""",
        x=x,
        y=y,
    )
    assert [e[0] for e in expected] == [code]
    g = expected[0]
    for params in ({"lon": lon, "lat": lat}, {"x": x, "y": y}):
        r = client.get("/grids/locate", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["grid"]["code"] == code and body["grid"]["name"] == g[1]
        assert body["grid"]["officer"] == g[2]
        assert body["community"] == {"code": g[3], "name": g[4]}
        assert body["street"] == {"code": g[5], "name": g[6]}
        assert code.startswith(g[3]) and g[3].startswith(g[5])
        assert abs(body["position"]["x"] - x) < 0.01 and abs(body["position"]["y"] - y) < 0.01


def test_locate_outside_and_invalid(client: TestClient) -> None:
    r = client.get("/grids/locate", params={"lon": 113.5, "lat": 22.2})
    assert r.status_code == 404 and "outside every work grid" in r.json()["description"]
    for params, words in (
        ({"lon": 181, "lat": 22.6}, "lon"),
        ({"lon": 114, "lat": -91}, "lat"),
        ({"lon": 114}, "lon and lat go together"),
        ({}, "a position is needed"),
        ({"lon": 114, "lat": 22.6, "x": 500000, "y": 2500000}, "not both"),
        ({"x": 2501000, "y": 502000}, "swapped"),
        ({"x": 114.02, "y": 22.6}, "look like lon/lat"),
        ({"lon": "abc", "lat": 22}, "lon"),
        ({"lon": 114, "lat": 22.6, "zoom": 3}, "zoom"),
    ):
        r = client.get("/grids/locate", params=params)
        assert r.status_code == 422, (params, r.text)
        assert words in r.json()["description"], (params, r.text)


# --- summary and features -------------------------------------------------------------------


def test_grid_summary_counts_equal_sql(client: TestClient, engine: Engine) -> None:
    (code,) = q(
        engine,
        """SELECT grid_code FROM cim.building GROUP BY 1
                           ORDER BY count(*) DESC, 1 LIMIT 1""",
    )[0]
    r = client.get(f"/grids/{code}")
    assert r.status_code == 200, r.text
    s = r.json()
    n, floor, residents = q(
        engine,
        """SELECT count(*), sum(floor_area_m2), sum(residents)
                                       FROM cim.building WHERE grid_code = :c""",
        c=code,
    )[0]
    assert s["buildings"]["count"] == n > 0
    assert s["buildings"]["floor_area_m2"] == pytest.approx(floor)
    assert s["residents"] == (residents or 0)
    comps = q(
        engine,
        """SELECT class_code, count(*) FROM cim.city_component
                         WHERE grid_code = :c GROUP BY 1 ORDER BY 1""",
        c=code,
    )
    assert [(c["code"], c["count"]) for c in s["components"]["by_class"]] == comps
    names = dict(q(engine, "SELECT code, name FROM cim.component_class"))
    assert all(c["name"] == names[c["code"]] for c in s["components"]["by_class"])
    pipes = q(
        engine,
        """SELECT s.network, sum(ST_Length(ST_Intersection(s.geom, g.geom)))
                         FROM cim.pipeline_segment s, cim.work_grid g
                         WHERE g.code = :c AND ST_Intersects(s.geom, g.geom)
                         GROUP BY 1 ORDER BY 1""",
        c=code,
    )
    got = [(p["network"], p["length_m"]) for p in s["pipelines"]["by_network"]]
    assert [g[0] for g in got] == [p[0] for p in pipes] and pipes
    for (_, a), (_, b) in zip(got, pipes, strict=True):
        assert a == pytest.approx(b)
    parcels = q(
        engine,
        """SELECT land_use, count(*) FROM cim.parcel WHERE grid_code = :c
                           GROUP BY 1 ORDER BY 1""",
        c=code,
    )
    assert [(p["code"], p["count"]) for p in s["parcels"]["by_land_use"]] == parcels
    assert s["parcels"]["count"] == sum(p[1] for p in parcels)
    (open_n,) = q(
        engine,
        """SELECT count(*) FROM cim.incident WHERE grid_code = :c
                             AND status IN ('reported', 'dispatched', 'in_progress')""",
        c=code,
    )[0]
    assert s["open_incidents"]["count"] == open_n


def test_grid_open_incidents_by_type(client: TestClient, engine: Engine) -> None:
    code, n = q(
        engine,
        """SELECT grid_code, count(*) FROM cim.incident
                           WHERE status IN ('reported', 'dispatched', 'in_progress')
                           GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""",
    )[0]
    s = client.get(f"/grids/{code}").json()
    assert s["open_incidents"]["count"] == n
    by_type = q(
        engine,
        """SELECT incident_type, count(*) FROM cim.incident WHERE grid_code = :c
                           AND status NOT IN ('resolved', 'closed') GROUP BY 1 ORDER BY 1""",
        c=code,
    )
    assert [(t["type"], t["count"]) for t in s["open_incidents"]["by_type"]] == by_type


def test_grid_not_found_and_bad_code(client: TestClient) -> None:
    assert client.get("/grids/44030999999999").status_code == 404
    r = client.get("/grids/12ab")
    assert r.status_code == 422 and "code" in r.json()["description"]


def test_grid_features_per_layer(client: TestClient, engine: Engine) -> None:
    (code,) = q(
        engine, "SELECT grid_code FROM cim.building GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    )[0]
    r = client.get(f"/grids/{code}/features", params={"layer": "buildings", "limit": 1000})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    body = r.json()
    ids = [
        row[0]
        for row in q(engine, "SELECT id FROM cim.building WHERE grid_code = :c ORDER BY id", c=code)
    ]
    assert [f["id"] for f in body["features"]] == ids
    assert body["numberMatched"] == len(ids)
    assert body["features"][0]["geometry"]["type"] == "MultiPolygon"
    pipes = [
        row[0]
        for row in q(
            engine,
            """
        SELECT s.id FROM cim.pipeline_segment s, cim.work_grid g
        WHERE g.code = :c AND ST_Intersects(s.geom, g.geom) ORDER BY s.id""",
            c=code,
        )
    ]
    r = client.get(f"/grids/{code}/features", params={"layer": "pipelines", "limit": 3})
    body = r.json()
    assert [f["id"] for f in body["features"]] == pipes[:3]
    assert body["numberMatched"] == len(pipes) and body["numberReturned"] == 3
    lon, lat = body["features"][0]["geometry"]["coordinates"][0][:2]
    assert 113.9 < lon < 114.1 and 22.5 < lat < 22.7
    for params in (
        {"layer": "streets"},
        {"layer": "buildings", "limit": 10_001},
        {"layer": "buildings", "limit": 0},
        {},
    ):
        assert client.get(f"/grids/{code}/features", params=params).status_code == 422


# --- 进格入块 -------------------------------------------------------------------------------


def expected_codes(url: str, lon: np.ndarray, lat: np.ndarray) -> list[tuple]:
    """Per point, in SQL: the grid (lowest code) whose polygon meets the point, with its
    community and street."""
    out = []
    with psycopg.connect(libpq_dsn(url)) as conn:
        for a, b in zip(lon, lat, strict=True):
            row = conn.execute(
                """
                SELECT s.code, c.code, g.code FROM cim.work_grid g
                JOIN cim.community c ON c.code = g.community_code
                JOIN cim.street s ON s.code = c.street_code
                WHERE ST_Intersects(g.geom, ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s),
                                                                    4490), 4547))
                ORDER BY g.code LIMIT 1""",
                (float(a), float(b)),
            ).fetchone()
            out.append(tuple(row) if row else (None, None, None))
    return out


def test_bulk_assign_100k_json_equals_sql(
    client: TestClient, engine: Engine, database_url: str
) -> None:
    x0, y0, x1, y1 = q(
        engine,
        """
        SELECT ST_XMin(e) - 0.001, ST_YMin(e) - 0.001, ST_XMax(e) + 0.001, ST_YMax(e) + 0.001
        FROM (SELECT ST_Extent(ST_Transform(geom, 4490)) e FROM cim.work_grid) s""",
    )[0]
    rng = np.random.default_rng(7)
    n = 100_000
    lon, lat = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
    rows = [
        {"id": i, "lon": float(a), "lat": float(b), "note": "n" if i % 2 else None}
        for i, (a, b) in enumerate(zip(lon, lat, strict=True))
    ]
    body = json.dumps({"rows": rows})
    t0 = time.perf_counter()
    r = client.post("/grids/assign", content=body, headers={"content-type": "application/json"})
    took = time.perf_counter() - t0
    assert r.status_code == 200, r.text[:500]
    assert took < 15, f"100 000 rows took {took:.1f} s"
    out = r.json()
    assert out["count"] == n and out["crs"] == "OGC:CRS84"
    got = out["rows"]
    assert [g["id"] for g in got[:5]] == [0, 1, 2, 3, 4]
    assert got[1]["note"] == "n" and got[0]["note"] is None  # rows come back unchanged
    assert out["outside"] == sum(g["grid_code"] is None for g in got) > 0
    pick = rng.choice(n, 300, replace=False)
    sql = expected_codes(database_url, lon[pick], lat[pick])
    mine = [(got[i]["street_code"], got[i]["community_code"], got[i]["grid_code"]) for i in pick]
    assert mine == sql
    assert any(s[2] is None for s in sql) and any(s[2] is not None for s in sql)


def test_bulk_assign_csv_in_storage_crs(
    client: TestClient, engine: Engine, database_url: str
) -> None:
    x0, y0, x1, y1 = sample_extent(engine)
    rng = np.random.default_rng(11)
    xs, ys = rng.uniform(x0, x1, 2000), rng.uniform(y0, y1, 2000)
    csv = "编号,X,Y\n" + "\n".join(
        f"p{i},{a:.3f},{b:.3f}" for i, (a, b) in enumerate(zip(xs, ys, strict=True))
    )
    r = client.post(
        "/grids/assign",
        content=csv.encode("utf-8"),
        params={"x_field": "X", "y_field": "Y", "crs": "EPSG:4547"},
        headers={"content-type": "text/csv"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().split("\n")
    assert lines[0] == "编号,X,Y,street_code,community_code,grid_code"
    assert len(lines) == 2001 and lines[1].startswith("p0,")
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        for line in lines[1:200]:
            _, xs_, ys_, street, community, grid = line.split(",")
            row = conn.execute(
                """
                SELECT code, community_code FROM cim.work_grid
                WHERE ST_Intersects(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4547))
                ORDER BY code LIMIT 1""",
                (float(xs_), float(ys_)),
            ).fetchone()
            assert (grid or None) == (row[0] if row else None)
            assert (community or None) == (row[1] if row else None)
            assert (street or None) == (row[1][:9] if row else None)
    # GBK survey tables: the charset in the Content-Type decodes them
    r = client.post(
        "/grids/assign",
        content=csv.encode("gbk"),
        params={"x_field": "X", "y_field": "Y", "crs": "EPSG:4547"},
        headers={"content-type": "text/csv; charset=gbk"},
    )
    assert r.status_code == 200 and r.text.startswith("编号,X,Y,")
    r = client.post(
        "/grids/assign",
        content=csv.encode("gbk"),
        params={"x_field": "X", "y_field": "Y", "crs": "EPSG:4547"},
        headers={"content-type": "text/csv"},
    )
    assert r.status_code == 422 and "charset=gbk" in r.json()["description"]


def test_bulk_assign_rejects_bad_input(client: TestClient) -> None:
    cases = [
        (
            {"rows": [{"lon": 114.02, "lat": 22.61}, {"lon": 214.0, "lat": 22.61}]},
            "row 2: longitude outside",
        ),
        (
            {"rows": [{"lon": 114.02, "lat": 22.61}, {"lon": "x", "lat": 22.61}]},
            "row 2: coordinates missing",
        ),
        ({"rows": [{"a": 1, "b": 2}]}, "no coordinate fields"),
        ({"rows": []}, "rows"),
        ({"rows": [{"x": 2501000.0, "y": 502000.0}]}, "swapped"),
        ({"rows": [{"lon": 114.02, "lat": 22.61}], "crs": "EPSG:99999999"}, "crs"),
        ({"rows": [{"lon": 114.02, "lat": 22.61}], "colour": 1}, "colour"),
    ]
    for body, words in cases:
        r = client.post("/grids/assign", json=body)
        assert r.status_code == 422, (body, r.text)
        assert words in r.json()["description"], (body, r.text)
    r = client.post("/grids/assign", content=b"id;lon\n", headers={"content-type": "text/csv"})
    assert r.status_code == 422
    r = client.post(
        "/grids/assign", content=b"<rows/>", headers={"content-type": "application/xml"}
    )
    assert r.status_code == 415
    r = client.post(
        "/grids/assign", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


def test_bulk_assign_limits(settings: Settings, loaded_sample) -> None:
    class Small(Settings):
        assign_max_rows: int = 10
        assign_max_body_mb: int = 1

    small = Small(database_url=settings.database_url)
    with TestClient(create_app(small)) as c:
        rows = [{"lon": 114.02, "lat": 22.61}] * 11
        r = c.post("/grids/assign", json={"rows": rows})
        assert r.status_code == 413 and "at most 10" in r.json()["description"]
        big = b"lon,lat\n" + b"114.02,22.61\n" * 100_000
        r = c.post("/grids/assign", content=big, headers={"content-type": "text/csv"})
        assert r.status_code == 413 and "larger than 1 MiB" in r.json()["description"]
        r = c.post("/grids/assign", json={"rows": rows[:10]})
        assert r.status_code == 200 and r.json()["count"] == 10


def test_grid_index_follows_changes_to_the_grids(scratch_database: str) -> None:
    """The per-process grid index is rebuilt when the grid table changes (an edit here)."""
    from cimtwin.importers.registry import importer_for
    from cimtwin.importers.runner import ImportOptions, run_import

    run_import(
        importer_for("grids"),
        [SAMPLE / "gpkg" / "admin.gpkg"],
        ImportOptions(dataset="grids-only"),
        scratch_database,
    )
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        code, x, y = conn.execute("""SELECT code, ST_X(ST_PointOnSurface(geom)),
                                     ST_Y(ST_PointOnSurface(geom)) FROM cim.work_grid
                                     ORDER BY code LIMIT 1""").fetchone()
    with TestClient(create_app(Settings(database_url=scratch_database))) as c:
        body = {"rows": [{"x": x, "y": y}]}
        assert c.post("/grids/assign", json=body).json()["rows"][0]["grid_code"] == code
        with psycopg.connect(libpq_dsn(scratch_database)) as conn:
            conn.execute(
                "UPDATE cim.work_grid SET geom = ST_Multi(ST_Translate(geom, 5000, 0))"
                " WHERE code = %s",
                (code,),
            )
        assert c.post("/grids/assign", json=body).json()["rows"][0]["grid_code"] is None
        body = {"rows": [{"x": x + 5000, "y": y}]}
        assert c.post("/grids/assign", json=body).json()["rows"][0]["grid_code"] == code


def test_cached_summaries_follow_imports(scratch_database: str) -> None:
    """Summaries are cached per process until the next import (here: the buildings)."""
    from cimtwin.importers.registry import importer_for
    from cimtwin.importers.runner import ImportOptions, run_import

    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        codes = [r[0] for r in conn.execute("SELECT code FROM cim.work_grid ORDER BY code")]
    with TestClient(create_app(Settings(database_url=scratch_database))) as c:
        for code in codes:
            assert c.get(f"/grids/{code}").json()["buildings"]["count"] == 0
        assert c.get("/districts/north-station").json()["above_ground"]["buildings"]["count"] == 0
        run_import(
            importer_for("buildings"),
            [SAMPLE / "gpkg" / "buildings.gpkg"],
            ImportOptions(dataset="buildings-only"),
            scratch_database,
        )
        with psycopg.connect(libpq_dsn(scratch_database)) as conn:
            code, n = conn.execute("""SELECT grid_code, count(*) FROM cim.building
                GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1""").fetchone()
        assert c.get(f"/grids/{code}").json()["buildings"]["count"] == n > 0
        assert c.get("/districts/north-station").json()["above_ground"]["buildings"]["count"] > 0


def test_grid_summary_counts_the_sample_bim_model(client: TestClient, engine: Engine) -> None:
    # the sample's one model (天悦广场, 5 storeys of 11 rooms) in the grid holding its
    # footprint's inner point; its rooms' areas from the IFC's NetFloorArea
    code, area = q(
        engine,
        """SELECT g.code, (SELECT sum(area_m2) FROM cim.bim_space s WHERE s.model_id = m.id)
           FROM cim.bim_model m JOIN cim.work_grid g
             ON ST_Intersects(g.geom, ST_PointOnSurface(m.footprint))""",
    )[0]
    r = client.get(f"/grids/{code}")
    assert r.status_code == 200, r.text
    assert r.json()["bim"] == {"models": 1, "rooms": 55, "room_area_m2": pytest.approx(area)}
    assert area == pytest.approx(5 * 1941.2, abs=1.0)
    (other,) = q(engine, "SELECT code FROM cim.work_grid WHERE code <> :c LIMIT 1", c=code)[0]
    assert client.get(f"/grids/{other}").json()["bim"] == {
        "models": 0,
        "rooms": 0,
        "room_area_m2": 0,
    }

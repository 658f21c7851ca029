"""The indoor API over a real BIM model: the Duplex (../shared/data/ifc) imported at the North
Station with --origin into a scratch database holding the North Station sample, then storeys,
rooms, a 3D point's room, one element by GUID (compared with the IFC file itself), and the grid
and district summaries counting the model and its rooms."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cimtwin.db.engine import libpq_dsn
from cimtwin.importers.base import ImportOptions
from cimtwin.importers.runner import run_import
from cimtwin.settings import Settings
from tests.shared_data import IFC, needs_ifc

ROOT = Path(__file__).resolve().parents[1]
pytestmark = needs_ifc
DUPLEX = IFC / "Duplex_A_20110907_georeferenced.ifc"
SAMPLE_IFC = ROOT / "data_samples" / "north_station" / "bim" / "JZ4403090000180.ifc"
SAMPLE_BUILDING = "JZ4403090000180"  # 天悦广场, the building the sample's model is of


@pytest.fixture(scope="module")
def duplex(sample_database: str) -> Iterator[tuple]:
    """(client, building code, database url) with the Duplex at the North Station."""
    from fastapi.testclient import TestClient

    from cimtwin.api.app import create_app
    from cimtwin.importers.ifc.importer import IfcImporter

    # the North Station sample first (sample_database): grids and districts to count it in
    result = run_import(
        IfcImporter(),
        [DUPLEX],
        ImportOptions(origin="114.0239,22.6080,5", rotation=20.0, dataset="duplex-indoor"),
        sample_database,
    )
    assert result.status == "succeeded"
    with psycopg.connect(libpq_dsn(sample_database)) as conn:
        (code,) = conn.execute(
            "SELECT b.building_code FROM cim.bim_model m JOIN cim.building b ON "
            "b.id = m.building_id WHERE m.dataset = 'duplex-indoor'"
        ).fetchone()
    with TestClient(create_app(Settings(database_url=sample_database))) as client:
        yield client, code, sample_database


def test_storeys_of_the_building(duplex: tuple) -> None:
    client, code, _ = duplex
    r = client.get(f"/buildings/{code}/storeys")
    assert r.status_code == 200, r.text
    storeys = r.json()["storeys"]
    assert [s["name"] for s in storeys] == ["T/FDN", "Level 1", "Level 2", "Roof"]
    assert [s["rooms"] for s in storeys] == [0, 10, 10, 1]
    # Level 1 is the project's +-0.00, placed at --origin's 5 m; Level 2 at +3.1 m
    assert storeys[1]["elevation_m"] == pytest.approx(5.0, abs=1e-6)
    assert storeys[2]["elevation_m"] == pytest.approx(8.1, abs=1e-6)
    assert storeys[1]["height_m"] == pytest.approx(3.1, abs=1e-6)
    assert client.get("/buildings/NO-SUCH/storeys").status_code == 404


def test_rooms_of_one_storey(duplex: tuple) -> None:
    client, code, _ = duplex
    r = client.get(f"/buildings/{code}/rooms", params={"storey": "Level 2"})
    assert r.status_code == 200, r.text
    body = r.json()
    names = [f["properties"]["name"] for f in body["features"]]
    assert names == sorted(
        ["A201", "A202", "A203", "A204", "A205"] + ["B201", "B202", "B203", "B204", "B205"]
    )
    bedroom = next(f for f in body["features"] if f["properties"]["name"] == "A202")
    assert bedroom["properties"]["long_name"] == "Bedroom 1"
    assert bedroom["properties"]["area_m2"] == pytest.approx(22.043, abs=0.01)
    lon, lat = bedroom["geometry"]["coordinates"][0][0][0]
    assert 114.02 < lon < 114.03 and 22.60 < lat < 22.61
    everything = client.get(f"/buildings/{code}/rooms").json()
    assert len(everything["features"]) == 21
    missing = client.get(f"/buildings/{code}/rooms", params={"storey": "Level 9"})
    assert missing.status_code == 404 and "Level 2" in missing.json()["description"]
    assert client.get(f"/buildings/{code}/rooms", params={"floor": "1"}).status_code == 422


def test_locate_a_point_in_a_room_and_outside(duplex: tuple) -> None:
    client, code, url = duplex
    with psycopg.connect(libpq_dsn(url)) as conn:
        lon, lat, floor = conn.execute(
            "SELECT ST_X(p), ST_Y(p), s.floor_elevation_m FROM cim.bim_space s, "
            "ST_Transform(ST_PointOnSurface(s.footprint), 4490) p WHERE s.name = 'A102'"
        ).fetchone()
    r = client.get("/indoor/locate", params={"lon": lon, "lat": lat, "h": floor + 1.2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "room" and body["building"] == code
    assert body["storey"] == "Level 1"
    assert body["room"]["name"] == "A102" and body["room"]["long_name"] == "Living Room"
    # the same plan position 3 m higher is in the room above, on Level 2
    above = client.get("/indoor/locate", params={"lon": lon, "lat": lat, "h": floor + 4.2}).json()
    assert above["storey"] == "Level 2" and above["room"]["name"] != "A102"
    far = client.get("/indoor/locate", params={"lon": 114.10, "lat": 22.70, "h": 10}).json()
    assert far == {**far, "inside": False, "answer": "outside"}
    high = client.get("/indoor/locate", params={"lon": lon, "lat": lat, "h": 500}).json()
    assert high["answer"] == "outside"
    assert client.get("/indoor/locate", params={"lon": 114.0, "lat": 95, "h": 0}).status_code == 422


def test_element_by_guid(duplex: tuple) -> None:
    import ifcopenshell
    import ifcopenshell.util.element as ue

    client, code, _ = duplex
    model = ifcopenshell.open(str(DUPLEX))
    wall = model.by_type("IfcWallStandardCase")[0]
    r = client.get(f"/bim/elements/{wall.GlobalId}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ifc_class"] == "IfcWallStandardCase" and body["name"] == wall.Name
    assert body["building"] == code and body["model"] == "duplex-indoor"
    assert body["storey"] == ue.get_container(wall).Name
    assert set(body["property_sets"]) == set(ue.get_psets(wall, psets_only=True))
    assert body["material_color"].startswith("#")
    assert client.get("/bim/elements/" + "0" * 22).status_code == 404
    assert client.get("/bim/elements/not-a-guid").status_code == 422


def test_rooms_as_an_ogc_api_features_collection(duplex: tuple) -> None:
    client, _, _ = duplex
    r = client.get("/collections/rooms/items", params={"storey": "Level 2", "limit": 100})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["numberMatched"] == 10
    assert {f["properties"]["storey"] for f in body["features"]} == {"Level 2"}
    cql = client.get(
        "/collections/rooms/items", params={"filter": "storey = 'Level 1' AND area_m2 > 20"}
    )
    assert cql.status_code == 200, cql.text
    assert sorted(f["properties"]["name"] for f in cql.json()["features"]) == ["A102", "B102"]


def test_grid_and_district_summaries_count_the_model(duplex: tuple) -> None:
    client, _, url = duplex
    with psycopg.connect(libpq_dsn(url)) as conn:
        grid, area = conn.execute(
            "SELECT g.code, (SELECT sum(area_m2) FROM cim.bim_space WHERE model_id = m.id) "
            "FROM cim.bim_model m JOIN cim.work_grid g ON "
            "ST_Intersects(g.geom, ST_PointOnSurface(m.footprint)) "
            "WHERE m.dataset = 'duplex-indoor'"
        ).fetchone()
        districts = [
            r[0]
            for r in conn.execute(
                "SELECT d.slug FROM cim.district d, cim.bim_model m WHERE m.dataset = "
                "'duplex-indoor' AND ST_Intersects(d.geom, ST_PointOnSurface(m.footprint))"
            )
        ]
        other = conn.execute(
            "SELECT code FROM cim.work_grid g WHERE NOT EXISTS (SELECT 1 FROM cim.bim_model m "
            "WHERE ST_Intersects(g.geom, ST_PointOnSurface(m.footprint))) ORDER BY code LIMIT 1"
        ).fetchone()[0]
        (sample_grid,) = conn.execute(
            "SELECT g.code FROM cim.bim_model m JOIN cim.work_grid g ON "
            "ST_Intersects(g.geom, ST_PointOnSurface(m.footprint)) "
            "WHERE m.dataset = 'sample:north_station:ifc'"
        ).fetchone()
    r = client.get(f"/grids/{grid}")
    assert r.status_code == 200, r.text
    assert r.json()["bim"] == {"models": 1, "rooms": 21, "room_area_m2": pytest.approx(area)}
    assert client.get(f"/grids/{other}").json()["bim"]["models"] == 0
    if sample_grid != grid:
        sample = client.get(f"/grids/{sample_grid}").json()["bim"]
        assert (sample["models"], sample["rooms"]) == (1, 55)
    assert districts, "the sample has a district around the North Station"
    d = client.get(f"/districts/{districts[0]}").json()["above_ground"]["bim"]
    # the district holds the sample's own model (天悦广场, 55 rooms) beside the Duplex
    assert (d["models"], d["rooms"]) == (2, 21 + 55)


# --- the North Station sample's own model (bim/JZ4403090000180.ifc) ------------------------


def sample_room(name: str) -> tuple[float, float, float, float, str]:
    """(lon, lat, floor height, area, storey) of one of the sample model's rooms, computed by
    hand from the IFC file: the centre of its extruded rectangle, through the file's own
    IfcMapConversion (no cimtwin code)."""
    import ifcopenshell
    from pyproj import Transformer

    model = ifcopenshell.open(str(SAMPLE_IFC))
    (conv,) = model.by_type("IfcMapConversion")
    space = next(s for s in model.by_type("IfcSpace") if s.Name == name)
    storey = space.Decomposes[0].RelatingObject
    (solid,) = space.Representation.Representations[0].Items
    corner = solid.Position.Location.Coordinates
    centre = solid.SweptArea.Position.Location.Coordinates
    x, y = corner[0] + centre[0], corner[1] + centre[1]
    a, o = conv.XAxisAbscissa, conv.XAxisOrdinate
    east, north = conv.Eastings + a * x - o * y, conv.Northings + o * x + a * y
    floor = conv.OrthogonalHeight + storey.Elevation + corner[2]
    lon, lat = Transformer.from_crs("EPSG:4547", "EPSG:4490", always_xy=True).transform(east, north)
    area = solid.SweptArea.XDim * solid.SweptArea.YDim
    return lon, lat, floor, area, storey.Name


def test_the_sample_models_storeys_and_rooms(duplex: tuple) -> None:
    import ifcopenshell
    import ifcopenshell.util.element as ue

    client, _, _ = duplex
    r = client.get(f"/buildings/{SAMPLE_BUILDING}/storeys")
    assert r.status_code == 200, r.text
    storeys = r.json()["storeys"]
    assert [s["name"] for s in storeys] == ["1F", "2F", "3F", "4F", "5F"]
    assert [s["rooms"] for s in storeys] == [11] * 5
    # the building's base elevation (75.76 m, 1985) is the map conversion's height
    assert [s["elevation_m"] for s in storeys] == pytest.approx([75.76 + 4.5 * k for k in range(5)])
    model = ifcopenshell.open(str(SAMPLE_IFC))
    expected = {
        s.Name: ue.get_psets(s, qtos_only=True)["Qto_SpaceBaseQuantities"]["NetFloorArea"]
        for s in model.by_type("IfcSpace")
        if s.Name.startswith("2")
    }
    rooms = client.get(f"/buildings/{SAMPLE_BUILDING}/rooms", params={"storey": "2F"}).json()
    got = {f["properties"]["name"]: f["properties"]["area_m2"] for f in rooms["features"]}
    assert got == pytest.approx(expected) and len(got) == 11
    assert {"201 商铺", "210 楼梯间", "211 走廊"} <= set(got)
    lobby = client.get(f"/buildings/{SAMPLE_BUILDING}/rooms", params={"storey": "1F"}).json()
    assert "101 大厅" in {f["properties"]["name"] for f in lobby["features"]}


def test_locate_a_point_in_a_sample_room(duplex: tuple) -> None:
    client, _, _ = duplex
    lon, lat, floor, area, storey = sample_room("302 商铺")
    assert storey == "3F" and area > 100
    r = client.get("/indoor/locate", params={"lon": lon, "lat": lat, "h": floor + 1.5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == "room" and body["building"] == SAMPLE_BUILDING
    assert body["storey"] == "3F" and body["room"]["name"] == "302 商铺"
    assert body["room"]["area_m2"] == pytest.approx(area, abs=1e-3)  # the Qto: 3 decimals
    # one storey (4.5 m) up is the room above; below the ground floor is outside
    above = client.get("/indoor/locate", params={"lon": lon, "lat": lat, "h": floor + 6.0})
    assert above.json()["room"]["name"] == "402 商铺"
    under = client.get("/indoor/locate", params={"lon": lon, "lat": lat, "h": floor - 20.0})
    assert under.json()["answer"] == "outside"

"""OGC API - Features against the real PostGIS with the North Station sample: every answer is
checked against a direct SQL query, and GDAL's OAPIF driver reads the service as a client."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql as psql
from sqlalchemy import Engine, text

from cimtwin.api.geojson import bbox_wkt, literal_geometry_sql
from cimtwin.api.inputs import parse_crs
from cimtwin.db.engine import libpq_dsn
from cimtwin.settings import Settings
from cimtwin.spatial.catalogue import BY_ID, Layer
from cimtwin.spatial.catalogue import COLLECTIONS as LAYERS

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG4547 = "http://www.opengis.net/def/crs/EPSG/0/4547"
EPSG4490 = "http://www.opengis.net/def/crs/EPSG/0/4490"


def table(layer: Layer) -> str:
    return f'"{layer.schema}"."{layer.table}"'


def rows_of(layer: Layer) -> str:
    """The FROM (and WHERE) of a collection's rows: a one-geometry-type collection is a part
    of its table."""
    where = f" WHERE {layer.features_where}" if layer.features_where else ""
    return f"{table(layer)}{where}"


def sql_ids(engine: Engine, query: str, **params) -> list:
    with engine.connect() as c:
        return [r[0] for r in c.execute(text(query), params)]


def all_ids(client: TestClient, url: str, **params) -> list:
    """Ids of every feature of a query, following the 'next' links."""
    ids: list = []
    r = client.get(url, params={**params, "limit": 10_000})
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        ids += [f["id"] for f in body["features"]]
        nxt = [link["href"] for link in body["links"] if link["rel"] == "next"]
        if not nxt:
            return ids
        r = client.get(nxt[0])


def grid_window(engine: Engine, fraction: float = 0.4) -> tuple[float, float, float, float]:
    """A lon/lat box over the middle of the sample area."""
    with engine.connect() as c:
        x0, y0, x1, y1 = c.execute(
            text(
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT "
                f"ST_Transform(ST_SetSRID(ST_Extent(geom)::geometry, 4547), 4326) e "
                f"FROM {table(BY_ID['grids'])}) s"
            )
        ).one()
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * fraction, (y1 - y0) * fraction
    return (round(cx - w / 2, 6), round(cy - h / 2, 6), round(cx + w / 2, 6), round(cy + h / 2, 6))


# --- landing page, conformance, collections -------------------------------------------------


def test_landing_page_links_are_absolute(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    links = {(link["rel"], link["href"]) for link in r.json()["links"]}
    rels = {rel for rel, _ in links}
    assert {"self", "service-desc", "service-doc", "conformance", "data"} <= rels
    assert ("data", "http://testserver/collections") in links
    assert ("conformance", "http://testserver/conformance") in links
    assert ("service-desc", "http://testserver/openapi.json") in links
    assert all(href.startswith("http://testserver/") for _, href in links)


def test_conformance_and_openapi_30(client: TestClient) -> None:
    classes = client.get("/conformance").json()["conformsTo"]
    for c in (
        "ogcapi-features-1/1.0/conf/core",
        "ogcapi-features-1/1.0/conf/geojson",
        "ogcapi-features-1/1.0/conf/oas30",
        "ogcapi-features-2/1.0/conf/crs",
        "ogcapi-features-3/1.0/conf/filter",
        "ogcapi-features-3/1.0/conf/features-filter",
        "cql2/1.0/conf/cql2-text",
        "cql2/1.0/conf/basic-cql2",
        "cql2/1.0/conf/basic-spatial-functions",
    ):
        assert f"http://www.opengis.net/spec/{c}" in classes
    r = client.get("/api")
    assert r.status_code == 200 and "version=3.0" in r.headers["content-type"]
    doc = r.json()
    assert doc["openapi"].startswith("3.0")
    assert '{"type": "null"}' not in json.dumps(doc)
    params = {
        p["name"]: p for p in doc["paths"]["/collections/{collectionId}/items"]["get"]["parameters"]
    }
    assert {"limit", "bbox", "datetime", "crs", "filter", "collectionId"} <= set(params)
    assert params["limit"]["schema"]["maximum"] == 10_000


def test_collections_list_the_catalogue_with_extents(client: TestClient, engine: Engine) -> None:
    r = client.get("/collections")
    assert r.status_code == 200
    cols = {c["id"]: c for c in r.json()["collections"]}
    assert list(cols) == [layer.id for layer in LAYERS]
    for layer in LAYERS:
        c = cols[layer.id]
        assert c["title"] == layer.title and c["itemType"] == "feature"
        assert c["crs"] == [CRS84, EPSG4490, EPSG4547] and c["storageCrs"] == EPSG4547
        rels = {link["rel"]: link["href"] for link in c["links"]}
        assert rels["items"] == f"http://testserver/collections/{layer.id}/items"
        assert rels["self"] == f"http://testserver/collections/{layer.id}"
        # the advertised bbox holds every feature, and is tight (within ~1 m)
        with engine.connect() as conn:
            true = conn.execute(
                text(
                    "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT "
                    f"ST_Extent(ST_Transform({layer.geometry_column}, 4326)) e "
                    f"FROM {rows_of(layer)}) s"
                )
            ).one()
        assert true[0] is not None, f"{layer.id}: no rows in the sample"
        (bbox,) = c["extent"]["spatial"]["bbox"]
        assert bbox[0] <= true[0] and bbox[1] <= true[1]
        assert bbox[2] >= true[2] and bbox[3] >= true[3]
        assert all(abs(a - b) < 1e-5 for a, b in zip(bbox, true, strict=True))
        assert ("temporal" in c["extent"]) == (layer.temporal is not None)
    with engine.connect() as conn:
        lo, hi = conn.execute(
            text(
                f"SELECT to_char(min(reported_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS'),"
                f" to_char(max(reported_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') "
                f"FROM {table(BY_ID['incidents'])}"
            )
        ).one()
    assert cols["incidents"]["extent"]["temporal"]["interval"] == [[lo + "Z", hi + "Z"]]
    one = client.get("/collections/grids").json()
    assert one["id"] == "grids" and one["extent"] == cols["grids"]["extent"]


def test_queryables_are_the_catalogue_properties(client: TestClient) -> None:
    r = client.get("/collections/pipelines/queryables")
    assert r.status_code == 200 and r.headers["content-type"] == "application/schema+json"
    schema = r.json()
    props = schema["properties"]
    assert set(props) == {"geometry", *BY_ID["pipelines"].properties}
    assert props["diameter_mm"]["type"] == "number"
    assert props["build_year"]["type"] == "integer"
    assert props["network"]["type"] == "string"
    assert props["geometry"]["format"] == "geometry-linestring"
    inc = client.get("/collections/incidents/queryables").json()["properties"]
    assert inc["reported_at"] == {"title": "reported_at", "type": "string", "format": "date-time"}


# --- items ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", LAYERS, ids=[layer.id for layer in LAYERS])
def test_number_matched_is_the_row_count(client: TestClient, engine: Engine, layer: Layer) -> None:
    with engine.connect() as c:
        count = c.execute(text(f"SELECT count(*) FROM {rows_of(layer)}")).scalar()
    r = client.get(f"/collections/{layer.id}/items", params={"limit": 5})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/geo+json"
    assert r.headers["content-crs"] == f"<{CRS84}>"
    body = r.json()
    assert body["type"] == "FeatureCollection"
    assert body["numberMatched"] == count > 0  # every layer has rows in the sample
    assert body["numberReturned"] == len(body["features"]) == min(5, count)
    assert body["timeStamp"].endswith("Z")
    f = body["features"][0]
    assert set(f["properties"]) == set(layer.properties)  # catalogue properties only
    assert f["type"] == "Feature" and f["geometry"]["type"]


def test_paging_visits_every_component_once(client: TestClient, engine: Engine) -> None:
    expected = sql_ids(engine, f"SELECT id FROM {table(BY_ID['components'])}")
    assert len(expected) > 5000
    seen: list[int] = []
    pages = 0
    r = client.get("/collections/components/items?limit=1000")
    while True:
        assert r.status_code == 200
        body = r.json()
        pages += 1
        assert body["numberMatched"] == len(expected)
        seen += [f["id"] for f in body["features"]]
        links = {link["rel"]: link["href"] for link in body["links"]}
        if pages > 1:
            assert "prev" in links
        if "next" not in links:
            break
        nxt = urlsplit(links["next"])
        assert nxt.scheme == "http" and nxt.netloc == "testserver"
        assert parse_qs(nxt.query)["limit"] == ["1000"]
        r = client.get(links["next"])
    assert pages == -(-len(expected) // 1000)
    assert len(seen) == len(set(seen)) == len(expected)
    assert set(seen) == set(expected)


def test_next_links_keep_the_filters(client: TestClient, engine: Engine) -> None:
    ids = all_ids(client, "/collections/pipelines/items", network="JS")
    r = client.get(
        "/collections/pipelines/items", params={"network": "JS", "limit": 100, "offset": 100}
    )
    nxt = next(link["href"] for link in r.json()["links"] if link["rel"] == "next")
    q = parse_qs(urlsplit(nxt).query)
    assert q == {"network": ["JS"], "limit": ["100"], "offset": ["200"]}
    prev = next(link["href"] for link in r.json()["links"] if link["rel"] == "prev")
    assert parse_qs(urlsplit(prev).query)["offset"] == ["0"]
    assert sorted(ids) == sorted(
        sql_ids(engine, f"SELECT id FROM {table(BY_ID['pipelines'])} WHERE network = 'JS'")
    )


@pytest.mark.parametrize("collection", ["components", "buildings"])
def test_bbox_in_crs84_matches_postgis(client: TestClient, engine: Engine, collection: str) -> None:
    layer = BY_ID[collection]
    x0, y0, x1, y1 = grid_window(engine)
    expected = sql_ids(
        engine,
        f"SELECT {layer.id_column} FROM {table(layer)} WHERE ST_Intersects("
        f"ST_Transform({layer.geometry_column}, 4326), ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326))",
        x0=x0,
        y0=y0,
        x1=x1,
        y1=y1,
    )
    got = all_ids(client, f"/collections/{collection}/items", bbox=f"{x0},{y0},{x1},{y1}")
    assert 0 < len(got) < sql_ids(engine, f"SELECT count(*) FROM {table(layer)}")[0]
    assert sorted(got) == sorted(expected)
    # the same box in EPSG:4490 is written latitude first
    lat_first = all_ids(
        client,
        f"/collections/{collection}/items",
        bbox=f"{y0},{x0},{y1},{x1}",
        **{"bbox-crs": "EPSG:4490"},
    )
    assert sorted(lat_first) == sorted(expected)


def test_world_bbox_returns_everything(client: TestClient, engine: Engine) -> None:
    """A transverse Mercator grid cannot take the whole globe: the box is clipped first."""
    for collection in ("grids", "components"):
        layer = BY_ID[collection]
        count = sql_ids(engine, f"SELECT count(*) FROM {table(layer)}")[0]
        r = client.get(
            f"/collections/{collection}/items", params={"bbox": "-180,-90,180,90", "limit": 1}
        )
        assert r.status_code == 200 and r.json()["numberMatched"] == count
        r = client.get(
            f"/collections/{collection}/items",
            params={"filter": "S_INTERSECTS(geom, BBOX(-180,-90,180,90))", "limit": 1},
        )
        assert r.status_code == 200 and r.json()["numberMatched"] == count
    r = client.get("/collections/grids/items", params={"bbox": "0,0,10,10"})
    assert r.status_code == 200 and r.json()["numberMatched"] == 0


def test_bbox_in_storage_crs_is_northing_first(client: TestClient, engine: Engine) -> None:
    layer = BY_ID["components"]
    with engine.connect() as c:
        x0, y0, x1, y1 = c.execute(
            text(
                f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT "
                f"ST_Extent(geom) e FROM {table(layer)}) s"
            )
        ).one()
    x0, x1 = x0 + (x1 - x0) / 3, x1 - (x1 - x0) / 3
    expected = sql_ids(
        engine,
        f"SELECT id FROM {table(layer)} WHERE ST_Intersects(geom, "
        "ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4547))",
        x0=x0,
        y0=y0,
        x1=x1,
        y1=y1,
    )
    got = all_ids(
        client,
        "/collections/components/items",
        bbox=f"{y0},{x0},{y1},{x1}",
        **{"bbox-crs": EPSG4547},
    )
    assert sorted(got) == sorted(expected) and got


def test_bbox_predicate_can_use_the_spatial_index(database_url: str, loaded_sample) -> None:
    """The bbox is transformed to the storage CRS, the column is left alone: GiST applies."""
    x0, y0, x1, y1 = 114.02, 22.60, 114.025, 22.62
    crs = parse_crs("OGC:CRS84", "bbox-crs")
    expr, params = literal_geometry_sql(bbox_wkt(x0, y0, x1, y1), (x0, y0, x1, y1), crs)
    layer = BY_ID["components"]
    query = psql.SQL("EXPLAIN SELECT {} FROM {} WHERE ST_Intersects({}, {})").format(
        psql.Identifier(layer.id_column),
        psql.Identifier(layer.schema, layer.table),
        psql.Identifier(layer.geometry_column),
        expr,
    )
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(query, params))
    # components are partitioned per import batch: each partition's own GiST index is used
    assert re.search(r"Index Scan (Backward )?(using|on) \S*geom\S*", plan), plan
    assert "Seq Scan" not in plan, plan


def test_output_crs_epsg4547_gives_the_stored_coordinates(
    client: TestClient, engine: Engine
) -> None:
    layer = BY_ID["pipeline_points"]
    r = client.get("/collections/pipeline_points/items", params={"crs": "EPSG:4547", "limit": 200})
    assert r.status_code == 200
    assert r.headers["content-crs"] == f"<{EPSG4547}>"
    with engine.connect() as c:
        stored = {
            row[0]: row[1:]
            for row in c.execute(
                text(f"SELECT id, ST_X(geom), ST_Y(geom), ST_Z(geom) FROM {table(layer)}")
            )
        }
    feats = r.json()["features"]
    assert len(feats) == 200
    for f in feats:
        x, y, z = stored[f["id"]]
        # EPSG:4547 axis order is northing (X) then easting (Y); 3D keeps Z; 3 decimals
        assert f["geometry"]["coordinates"] == [round(y, 3), round(x, 3), z]


def test_output_crs_4490_is_latitude_first_and_7_decimals(client: TestClient) -> None:
    a = client.get("/collections/incidents/items", params={"limit": 10}).json()["features"]
    r = client.get("/collections/incidents/items", params={"limit": 10, "crs": EPSG4490})
    assert r.headers["content-crs"] == f"<{EPSG4490}>"
    b = r.json()["features"]
    for fa, fb in zip(a, b, strict=True):
        lon, lat = fa["geometry"]["coordinates"]
        assert fb["geometry"]["coordinates"] == pytest.approx([lat, lon], abs=2e-7)
        assert 113 < lon < 115 and 22 < lat < 23
        assert all(len(str(v).split(".")[-1]) <= 7 for v in (lon, lat))


def test_3d_geometries_keep_z(client: TestClient) -> None:
    f = client.get("/collections/pipelines/items", params={"limit": 1}).json()["features"][0]
    assert f["geometry"]["type"] == "LineString"
    assert all(len(pt) == 3 for pt in f["geometry"]["coordinates"])


def test_property_filters_are_typed(client: TestClient, engine: Engine) -> None:
    t = table(BY_ID["pipelines"])
    got = all_ids(client, "/collections/pipelines/items", network="JS", diameter_mm="300")
    assert (
        sorted(got)
        == sorted(sql_ids(engine, f"SELECT id FROM {t} WHERE network = 'JS' AND diameter_mm = 300"))
        and got
    )
    # 300.0 and 300 are the same number
    assert sorted(all_ids(client, "/collections/pipelines/items", diameter_mm="300.0")) == sorted(
        sql_ids(engine, f"SELECT id FROM {t} WHERE diameter_mm = 300")
    )
    # a repeated property means any of the values
    r = client.get("/collections/pipelines/items?network=JS&network=PS&limit=1")
    assert (
        r.json()["numberMatched"]
        == sql_ids(engine, f"SELECT count(*) FROM {t} WHERE network IN ('JS', 'PS')")[0]
    )
    year = sql_ids(engine, f"SELECT build_year FROM {t} WHERE build_year IS NOT NULL LIMIT 1")[0]
    r = client.get("/collections/pipelines/items", params={"build_year": str(year), "limit": 1})
    assert (
        r.json()["numberMatched"]
        == sql_ids(engine, f"SELECT count(*) FROM {t} WHERE build_year = :y", y=year)[0]
    )


@pytest.mark.parametrize(
    ("collection", "cql", "where"),
    [
        (
            "pipelines",
            "network = 'JS' AND diameter_mm >= 300",
            "network = 'JS' AND diameter_mm >= 300",
        ),
        (
            "pipelines",
            "network IN ('RQ', 'DL') OR NOT (diameter_mm BETWEEN 200 AND 600)",
            "network IN ('RQ', 'DL') OR NOT (diameter_mm BETWEEN 200 AND 600)",
        ),
        (
            "pipelines",
            "diameter_mm NOT BETWEEN 200 AND 600 AND material NOT IN ('QM')",
            "diameter_mm NOT BETWEEN 200 AND 600 AND material NOT IN ('QM')",
        ),
        (
            "buildings",
            "name LIKE '%大厦%' AND height_m > 20 OR floors IS NULL",
            "name LIKE '%大厦%' AND height_m > 20 OR floors IS NULL",
        ),
        (
            "incidents",
            "reported_at >= TIMESTAMP('2026-11-01T00:00:00Z') AND severity >= 3",
            "reported_at >= '2026-11-01T00:00:00Z' AND severity >= 3",
        ),
        (
            "grids",
            "community_code = '440309002001' AND area_m2 < 50000",
            "community_code = '440309002001' AND area_m2 < 50000",
        ),
    ],
)
def test_cql2_filters_match_sql(
    client: TestClient, engine: Engine, collection: str, cql: str, where: str
) -> None:
    layer = BY_ID[collection]
    expected = sql_ids(engine, f"SELECT {layer.id_column} FROM {table(layer)} WHERE {where}")
    got = all_ids(
        client, f"/collections/{collection}/items", filter=cql, **{"filter-lang": "cql2-text"}
    )
    assert sorted(got) == sorted(expected)


def test_cql2_s_intersects_polygon_matches_postgis(client: TestClient, engine: Engine) -> None:
    x0, y0, x1, y1 = grid_window(engine, 0.5)
    mx = (x0 + x1) / 2
    poly = f"POLYGON(({x0} {y0}, {x1} {y0}, {mx} {y1}, {x0} {y0}))"  # a triangle
    for collection in ("components", "pipelines"):
        layer = BY_ID[collection]
        expected = sql_ids(
            engine,
            f"SELECT id FROM {table(layer)} WHERE ST_Intersects("
            f"ST_Transform(geom, 4326), ST_GeomFromText(:wkt, 4326))",
            wkt=poly,
        )
        got = all_ids(
            client, f"/collections/{collection}/items", filter=f"S_INTERSECTS(geom, {poly}) "
        )
        assert sorted(got) == sorted(expected) and got
    # with a filter-crs the literal is in that CRS (EPSG:4490: latitude first)
    flipped = f"POLYGON(({y0} {x0}, {y0} {x1}, {y1} {mx}, {y0} {x0}))"
    got = all_ids(
        client,
        "/collections/components/items",
        filter=f"S_INTERSECTS(geometry, {flipped})",
        **{"filter-crs": EPSG4490},
    )
    comp = BY_ID["components"]
    assert sorted(got) == sorted(
        sql_ids(
            engine,
            f"SELECT id FROM {table(comp)} WHERE ST_Intersects("
            f"ST_Transform(geom, 4326), ST_GeomFromText(:wkt, 4326))",
            wkt=poly,
        )
    )


def test_datetime_parameter(client: TestClient, engine: Engine) -> None:
    t = table(BY_ID["incidents"])
    got = all_ids(client, "/collections/incidents/items", datetime="2026-11-01T00:00:00Z/..")
    assert (
        sorted(got)
        == sorted(
            sql_ids(engine, f"SELECT id FROM {t} WHERE reported_at >= '2026-11-01T00:00:00Z'")
        )
        and got
    )
    got = all_ids(client, "/collections/incidents/items", datetime="../2026-10-31")
    assert sorted(got) == sorted(
        sql_ids(engine, f"SELECT id FROM {t} WHERE reported_at < '2026-11-01T00:00:00Z'")
    )
    one = sql_ids(engine, f"SELECT reported_at FROM {t} ORDER BY id LIMIT 1")[0]
    got = all_ids(client, "/collections/incidents/items", datetime=one.isoformat())
    assert sorted(got) == sorted(
        sql_ids(engine, f"SELECT id FROM {t} WHERE reported_at = :t", t=one)
    )


def test_sortby(client: TestClient, engine: Engine) -> None:
    t = table(BY_ID["buildings"])
    r = client.get(
        "/collections/buildings/items", params={"sortby": "-height_m,name", "limit": 10_000}
    )
    assert [f["id"] for f in r.json()["features"]] == sql_ids(
        engine, f"SELECT id FROM {t} ORDER BY height_m DESC, name ASC, id ASC"
    )


def test_single_feature(client: TestClient, engine: Engine) -> None:
    bid = sql_ids(engine, f"SELECT id FROM {table(BY_ID['buildings'])} ORDER BY id LIMIT 1")[0]
    r = client.get(f"/collections/buildings/items/{bid}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    f = r.json()
    assert f["type"] == "Feature" and f["id"] == bid
    assert set(f["properties"]) == set(BY_ID["buildings"].properties)
    assert {link["rel"] for link in f["links"]} == {"self", "collection"}
    code = sql_ids(engine, f"SELECT code FROM {table(BY_ID['grids'])} ORDER BY code LIMIT 1")[0]
    r = client.get(f"/collections/grids/items/{code}", params={"crs": "EPSG:4547"})
    assert r.status_code == 200 and r.json()["id"] == code
    assert r.headers["content-crs"] == f"<{EPSG4547}>"
    assert r.json()["geometry"]["type"] == "MultiPolygon"
    for missing in ("999999999", "abc", "1.5", "99999999999999999999999"):
        r = client.get(f"/collections/buildings/items/{missing}")
        assert r.status_code == 404 and r.json()["code"] == "NotFound", missing
    assert client.get("/collections/grids/items/nope").status_code == 404
    assert client.get(f"/collections/buildings/items/{bid}?crs=EPSG:3857").status_code == 400
    assert client.get(f"/collections/buildings/items/{bid}?limit=3").status_code == 400


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        ("/collections/nope", 404, "collection 'nope' does not exist"),
        ("/collections/nope/items", 404, "does not exist"),
        ("/collections/nope/queryables", 404, "does not exist"),
        ("/collections/nope/items/1", 404, "does not exist"),
        ("/collections/grids/items?limit=100001", 400, "limit: 100001 exceeds the maximum"),
        ("/collections/grids/items?limit=10001", 400, "maximum of 10000"),
        ("/collections/grids/items?limit=0", 400, "limit"),
        ("/collections/grids/items?limit=ten", 400, "limit: 'ten'"),
        ("/collections/grids/items?offset=-1", 400, "offset"),
        ("/collections/grids/items?limit=5&limit=6", 400, "more than once: limit"),
        ("/collections/grids/items?bbox=1,2,3", 400, "bbox: expected 4"),
        ("/collections/grids/items?bbox=a,b,c,d", 400, "bbox"),
        ("/collections/grids/items?bbox=114.1,22.6,114.0,22.7", 400, "bbox: each lower corner"),
        ("/collections/grids/items?bbox=114,22,115,95", 400, "latitude outside"),
        ("/collections/grids/items?bbox=1,2,3,nan", 400, "finite"),
        ("/collections/grids/items?bbox=1,2,3,4&bbox-crs=EPSG:3857", 400, "bbox-crs: unsupported"),
        ("/collections/grids/items?bbox-crs=EPSG:4490", 400, "without bbox"),
        ("/collections/grids/items?filter=name%20%3D", 400, "filter: expected a property name"),
        (
            "/collections/grids/items?filter=name%20%3D%20'x'%3B%20DROP%20TABLE%20cim.work_grid",
            400,
            "unexpected character ';' at position 11",
        ),
        ("/collections/grids/items?filter=nosuch%20%3D%201", 400, "unknown property 'nosuch'"),
        (
            "/collections/grids/items?filter=%221%3D1%20OR%20name%22%20%3D%20'x'",
            400,
            "unknown property '1=1 OR name'",
        ),
        ("/collections/grids/items?filter=area_m2%20%3D%20'big'", 400, "is a number"),
        ("/collections/grids/items?filter=name%3D'x'&filter-lang=cql-json", 400, "filter-lang"),
        ("/collections/grids/items?filter-crs=EPSG:4490", 400, "without filter"),
        ("/collections/grids/items?nosuch=1", 400, "unknown query parameter(s) 'nosuch'"),
        ("/collections/grids/items?crs=EPSG:3857", 400, "crs: unsupported CRS 'EPSG:3857'"),
        ("/collections/grids/items?crs=nonsense", 400, "crs: unsupported CRS"),
        ("/collections/grids/items?f=xml", 400, "f: unsupported format"),
        ("/collections/grids/items?datetime=2026-01-01T00:00:00Z", 400, "no temporal property"),
        ("/collections/incidents/items?datetime=yesterday", 400, "datetime"),
        ("/collections/incidents/items?datetime=2026-12-01/2026-01-01", 400, "start is after"),
        ("/collections/incidents/items?datetime=../..", 400, "bounded end"),
        ("/collections/grids/items?sortby=nosuch", 400, "sortby: unknown property"),
        ("/collections/grids/items?sortby=name,", 400, "sortby: empty"),
        ("/collections/pipelines/items?build_year=abc", 400, "build_year: 'abc' is not an integer"),
        ("/collections/pipelines/items?diameter_mm=inf", 400, "finite"),
        ("/collections/incidents/items?reported_at=soon", 400, "reported_at"),
        ("/collections?nosuch=1", 400, "unknown query parameter"),
    ],
)
def test_bad_requests_are_4xx_with_ogc_exceptions(
    client: TestClient, url: str, status: int, words: str
) -> None:
    r = client.get(url)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"code", "description"}
    assert body["code"] == ("NotFound" if status == 404 else "InvalidParameterValue")
    assert words in body["description"]


def test_injection_attempts_leave_the_tables_alone(client: TestClient, engine: Engine) -> None:
    t = table(BY_ID["grids"])
    before = sql_ids(engine, f"SELECT count(*) FROM {t}")[0]
    for cql in (
        "name = 'x''; DROP TABLE cim.work_grid; --'",
        "name = 'x' OR 1 = 1",
        "name LIKE '%'' OR ''1''=''1'",
    ):
        r = client.get("/collections/grids/items", params={"filter": cql, "limit": 1})
        assert r.status_code == 200, r.text
    assert r.json()["numberMatched"] == 0  # the whole text is one LIKE pattern
    r = client.get("/collections/grids/items", params={"filter": "name = 'x' OR 1 = 1"})
    assert r.json()["numberMatched"] == before
    r = client.get("/collections/grids/items", params={"name": "x'; DROP TABLE t; --"})
    assert r.status_code == 200 and r.json()["numberMatched"] == 0
    assert sql_ids(engine, f"SELECT count(*) FROM {t}")[0] == before


# --- GDAL as a client -----------------------------------------------------------------------

OGRINFO = shutil.which("ogrinfo")
OGR2OGR = shutil.which("ogr2ogr")
gdal = pytest.mark.skipif(
    OGRINFO is None or OGR2OGR is None,
    reason="GDAL command-line tools (ogrinfo, ogr2ogr) are not installed",
)


@pytest.fixture(scope="module")
def server(settings: Settings, loaded_sample) -> Iterator[str]:
    """The app under uvicorn on a free local port, in a background thread."""
    from tests.browser import serve

    yield from serve(settings)


def run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@gdal
def test_ogrinfo_lists_every_collection(server: str, engine: Engine) -> None:
    out = run("ogrinfo", "-ro", "-so", f"OAPIF:{server}")
    names = [
        line.split(": ", 1)[1].split(" ", 1)[0]
        for line in out.splitlines()
        if line[:1].isdigit() and ": " in line
    ]
    assert names == [layer.id for layer in LAYERS]
    out = run("ogrinfo", "-ro", "-so", f"OAPIF:{server}", "grids")
    count = sql_ids(engine, f"SELECT count(*) FROM {table(BY_ID['grids'])}")[0]
    assert f"Feature Count: {count}" in out


@gdal
def test_ogr2ogr_copies_the_grids(server: str, engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "grids.geojson"
    # GDAL's default page size (10) makes this several pages too
    run("ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{server}", "grids")
    feats = json.loads(out.read_text())["features"]
    codes = sql_ids(engine, f"SELECT code FROM {table(BY_ID['grids'])}")
    assert len(feats) == len(codes)
    assert sorted(f["properties"]["code"] for f in feats) == sorted(codes)
    assert all(f["geometry"]["type"] == "MultiPolygon" for f in feats)


@gdal
def test_ogr2ogr_follows_next_links(server: str, engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "components.geojson"
    run(
        "ogr2ogr",
        "-oo",
        "PAGE_SIZE=1000",
        "-f",
        "GeoJSON",
        str(out),
        f"OAPIF:{server}",
        "components",
    )
    feats = json.loads(out.read_text())["features"]
    expected = sql_ids(engine, f"SELECT component_id FROM {table(BY_ID['components'])}")
    assert len(expected) > 1000  # more than one page
    assert len(feats) == len(expected)
    assert sorted(f["properties"]["component_id"] for f in feats) == sorted(expected)


def test_links_use_the_public_url_with_its_prefix(settings, loaded_sample) -> None:
    """Behind a prefixed proxy every absolute link (landing, collections, paging, districts)
    stays on CIMTWIN_PUBLIC_URL, so GDAL/QGIS following `next` keep working."""
    from fastapi.testclient import TestClient

    from cimtwin.api.app import create_app

    public = "https://twin.example.gov.cn/cim"
    app = create_app(settings.model_copy(update={"public_url": public}))
    with TestClient(app) as c:
        hrefs = [x["href"] for x in c.get("/").json()["links"]]
        hrefs += [x["href"] for x in c.get("/collections").json()["links"]]
        for col in c.get("/collections").json()["collections"]:
            hrefs += [x["href"] for x in col["links"]]
        page = c.get("/collections/pipelines/items", params={"limit": 2, "offset": 2}).json()
        rels = {x["rel"]: x["href"] for x in page["links"]}
        hrefs += list(rels.values())
        hrefs += [d["href"] for d in c.get("/districts").json()["districts"]]
    assert rels["next"] == f"{public}/collections/pipelines/items?limit=2&offset=4"
    assert rels["prev"] == f"{public}/collections/pipelines/items?limit=2&offset=0"
    assert rels["self"] == f"{public}/collections/pipelines/items?limit=2&offset=2"
    assert any("/districts/" in h for h in hrefs)
    bad = [h for h in hrefs if h.startswith("http") and not h.startswith(public + "/")]
    assert not bad
    assert not [h for h in hrefs if h.startswith("/")]

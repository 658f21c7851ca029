"""GDAL's OAPIF driver (Debian 12: GDAL 3.6) against the running service, read through GDAL's
own debug output (``CPL_DEBUG=ON``): which requests it sends, and what it makes of the
answers. Counts are checked against direct SQL on the same database."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import Engine

from cimtwin.settings import Settings
from cimtwin.spatial.catalogue import BY_ID, Layer
from tests.conftest import q

pytestmark = pytest.mark.skipif(
    shutil.which("ogrinfo") is None or shutil.which("ogr2ogr") is None,
    reason="GDAL command-line tools (ogrinfo, ogr2ogr) are not installed",
)


@pytest.fixture(scope="module")
def server(settings: Settings, loaded_sample) -> Iterator[str]:
    from tests.browser import serve

    yield from serve(settings)


def gdal(*args: str) -> tuple[str, str]:
    """(stdout, debug log) of a GDAL command run with CPL_DEBUG on."""
    proc = subprocess.run(
        [args[0], "--config", "CPL_DEBUG", "ON", *args[1:]],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


def item_requests(log: str, collection: str) -> list[dict[str, list[str]]]:
    """Query parameters of every /items request GDAL sent for ``collection``."""
    out = []
    for line in log.splitlines():
        if line.startswith("HTTP: Fetch(") and line.endswith(")"):
            url = urlsplit(line[len("HTTP: Fetch(") : -1])
            if url.path.endswith(f"/collections/{collection}/items"):
                out.append(parse_qs(url.query))
    return out


def table(layer: Layer) -> str:
    return f'"{layer.schema}"."{layer.table}"'


WHERE = [
    ("pipelines", "material = 'PE' AND diameter_mm >= 300"),
    ("pipelines", "NOT (material = 'PE') OR diameter_mm < 200"),
    ("pipelines", "network = 'JS' AND build_year > 2005 AND length_m <= 40.5"),
    ("components", "status <> '完好' OR class_code = '0104'"),
]


@pytest.mark.parametrize(("collection", "where"), WHERE)
def test_where_is_sent_to_the_server(
    server: str, engine: Engine, collection: str, where: str
) -> None:
    out, log = gdal("ogrinfo", "-ro", "-so", f"OAPIF:{server}/", collection, "-where", where)
    assert "CQL text detected" in log
    assert "evaluated on client side" not in log
    requests = item_requests(log, collection)
    filtered = [r for r in requests if "filter" in r]
    # after the first page (the schema probe), every page carries the filter, as CQL text
    assert filtered and requests[1:] == filtered
    assert {r["filter-lang"][0] for r in filtered} == {"cql-text"}
    expected = q(engine, f"SELECT count(*) FROM {table(BY_ID[collection])} WHERE {where}")[0][0]
    assert expected > 0
    assert f"Feature Count: {expected}\n" in out


def test_cql_text_is_read_as_cql2_text(client) -> None:
    url = "/collections/pipelines/items"
    flt = {"filter": "material = 'PE' AND diameter_mm >= 300", "limit": 10_000}
    new = client.get(url, params={**flt, "filter-lang": "cql2-text"}).json()
    old = client.get(url, params={**flt, "filter-lang": "cql-text"}).json()
    assert new["numberMatched"] == old["numberMatched"] > 0
    assert [f["id"] for f in new["features"]] == [f["id"] for f in old["features"]]
    bad = client.get(url, params={**flt, "filter-lang": "ecql"})
    described = bad.json()["description"]
    assert bad.status_code == 400 and "cql-text" in described and "cql2-json" in described


def test_api_document_lists_each_collections_filters(client) -> None:
    """What GDAL reads: per-collection items paths whose query parameters name the
    properties, and filter-lang offering cql-text."""
    doc = client.get("/api").json()
    for layer in (BY_ID["pipelines"], BY_ID["incidents"]):
        params = {
            p["name"]: p
            for p in doc["paths"][f"/collections/{layer.id}/items"]["get"]["parameters"]
        }
        assert set(layer.properties) <= set(params)
        assert "cql-text" in params["filter-lang"]["schema"]["enum"]
        assert params["limit"]["schema"]["maximum"] == 10_000
    assert (
        doc["paths"]["/collections/pipelines/items"]["get"]["parameters"][0]["name"]
        != "collectionId"
    )
    assert params["reported_at"]["schema"] == {"type": "string", "format": "date-time"}


OGR_TYPES = {"integer": "Integer", "number": "Real", "string": "String", "datetime": "DateTime"}


def _fields(out: str) -> dict[str, str]:
    """``name: Type (w.p)`` lines of ``ogrinfo -so`` as {name: Type}."""
    found = {}
    for line in out.splitlines():
        m = re.fullmatch(r"(\w+): (\w+) \(\d+\.\d+\)", line.strip())
        if m:
            found[m[1]] = m[2]
    return found


@pytest.mark.parametrize("collection", ["pipelines", "incidents", "buildings"])
def test_gdal_types_fields_from_the_schema(server: str, collection: str) -> None:
    """Not from the first page, where an all-null width_mm would be a String."""
    layer = BY_ID[collection]
    out, log = gdal("ogrinfo", "-ro", "-so", f"OAPIF:{server}/", collection)
    assert f"HTTP: Fetch({server}/collections/{collection}/schema)" in log
    assert "OAPIF: Using JSON schema" in log
    fields = _fields(out)
    expected = {p: OGR_TYPES[layer.column_type(p)] for p in layer.properties}
    assert {p: fields.get(p) for p in expected} == expected
    if collection == "pipelines":
        assert fields["width_mm"] == fields["height_mm"] == "Real"


def test_schema_document_describes_a_geojson_feature(client) -> None:
    col = client.get("/collections/pipelines").json()
    rels = {(x["rel"], x["href"]) for x in col["links"]}
    assert ("describedby", "http://testserver/collections/pipelines/schema") in rels
    r = client.get("/collections/pipelines/schema")
    assert r.status_code == 200 and r.headers["content-type"] == "application/schema+json"
    doc = r.json()
    props = doc["properties"]["properties"]["properties"]
    assert props["width_mm"]["type"] == "number" and props["build_year"]["type"] == "integer"
    assert doc["properties"]["id"] == {
        "title": "feature id ('id')",
        "type": "integer",
        "x-ogc-role": "id",
    }
    geometry = doc["properties"]["geometry"]
    assert geometry["x-ogc-role"] == "primary-geometry"
    assert geometry["properties"]["type"]["enum"] == ["LineString"]
    assert client.get("/collections/nope/schema").status_code == 404
    assert client.get("/collections/pipelines/schema", params={"x": 1}).status_code == 400


SPLIT = {"components_points": "Point", "components_lines": "Multi Line String"}
SPLIT["components_polygons"] = "Multi Polygon"


def test_ogr2ogr_copies_components_to_geopackage_without_nlt(
    server: str, engine: Engine, tmp_path
) -> None:
    """``components`` mixes points, lines and polygons (GDAL calls it Point from its first
    page and a GeoPackage then refuses the rest); its one-type collections copy as they are."""
    gpkg = tmp_path / "components.gpkg"
    _, log = gdal(
        "ogr2ogr", "-oo", "PAGE_SIZE=1000", "-f", "GPKG", str(gpkg), f"OAPIF:{server}/", *SPLIT
    )
    assert "not normally allowed" not in log and "ERROR" not in log
    out, _ = gdal("ogrinfo", "-ro", "-so", "-al", str(gpkg))
    found = dict(re.findall(r"Layer name: (\w+)\n(?:.*\n)*?Geometry: (.+)\n", out))
    assert found == SPLIT
    counts = [int(n) for n in re.findall(r"Feature Count: (\d+)", out)]
    components = table(BY_ID["components"])
    expected = [
        q(engine, f"SELECT count(*) FROM {components} WHERE ST_Dimension(geom) = {d}")[0][0]
        for d in (0, 1, 2)
    ]
    assert counts == expected and all(expected)
    total = q(engine, f"SELECT count(*) FROM {components}")[0][0]
    assert sum(counts) == total


def test_mixed_collection_says_its_geometry_types(client) -> None:
    geometry = client.get("/collections/components/schema").json()["properties"]["geometry"]
    assert geometry["format"] == "geometry-any"
    assert {"Point", "LineString", "MultiPolygon"} <= set(geometry["properties"]["type"]["enum"])
    lines = client.get("/collections/components_lines/schema").json()["properties"]["geometry"]
    assert lines["properties"]["type"]["enum"] == ["MultiLineString"]
    page = client.get("/collections/components_polygons/items", params={"limit": 1000}).json()
    assert {f["geometry"]["type"] for f in page["features"]} == {"MultiPolygon"}
    one = page["features"][0]["id"]
    assert client.get(f"/collections/components_polygons/items/{one}").status_code == 200
    assert client.get(f"/collections/components_points/items/{one}").status_code == 404


def test_pages_of_a_thousand(server: str, engine: Engine, client, tmp_path) -> None:
    """The API document advertises limit's default and maximum (what GDAL 3.8 and later read
    to choose their page size); GDAL 3.6 pages at 10 whatever a server says, so the README
    gives it ``-oo PAGE_SIZE=1000``, and the next links keep that size to the last page."""
    for path in ("/collections/{collectionId}/items", "/collections/components/items"):
        params = client.get("/api").json()["paths"][path]["get"]["parameters"]
        (limit,) = [p for p in params if p["name"] == "limit"]
        assert limit["schema"]["maximum"] >= 1000 and limit["schema"]["default"] == 100
    out = tmp_path / "components.geojson"
    _, log = gdal(
        "ogr2ogr",
        "-oo",
        "PAGE_SIZE=1000",
        "-f",
        "GeoJSON",
        str(out),
        f"OAPIF:{server}/",
        "components",
    )
    requests = item_requests(log, "components")
    total = q(engine, f"SELECT count(*) FROM {table(BY_ID['components'])}")[0][0]
    assert total > 5000
    assert {r["limit"][0] for r in requests} == {"1000"}
    # the schema probe, then one request per page of 1000
    assert len(requests) == 1 + -(-total // 1000)
    assert [int(r.get("offset", ["0"])[0]) for r in requests[1:]] == list(range(0, total, 1000))

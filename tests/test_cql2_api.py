"""CQL2 additions through the HTTP API against the real PostGIS with the North Station sample:
CASEI, ACCENTI, arithmetic, temporal functions, CQL2-JSON (filter-lang=cql2-json); every answer
is compared with a direct SQL query. Array functions run on PostgreSQL over a table with array
columns (no collection has one). Injection attempts stay parameters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import cql2 as cql2rs
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql as psql
from sqlalchemy import Engine, text

from cimtwin.api.cql2_sql import CONFORMANCE, FilterContext, to_sql
from cimtwin.db.engine import libpq_dsn
from cimtwin.settings import Settings
from cimtwin.spatial.catalogue import BY_ID

JSON_LANG = {"filter-lang": "cql2-json"}


def table(collection: str) -> str:
    layer = BY_ID[collection]
    return f'"{layer.schema}"."{layer.table}"'


def sql_ids(engine: Engine, collection: str, where: str) -> list:
    layer = BY_ID[collection]
    with engine.connect() as c:
        rows = c.execute(text(f"SELECT {layer.id_column} FROM {table(collection)} WHERE {where}"))
        return sorted(r[0] for r in rows)


def api_ids(client: TestClient, collection: str, cql: str, **params: str) -> list:
    r = client.get(
        f"/collections/{collection}/items", params={"filter": cql, "limit": 10_000, **params}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["numberMatched"] == len(body["features"])
    return sorted(f["id"] for f in body["features"])


def total(engine: Engine, collection: str) -> int:
    with engine.connect() as c:
        return c.execute(text(f"SELECT count(*) FROM {table(collection)}")).scalar_one()


# (collection, CQL2-text, the same condition in plain SQL)
CASES = [
    ("pipelines", "CASEI(material) = casei('pe')", "material = 'PE'"),
    ("pipelines", "ACCENTI(material) = accenti('PÉ')", "material = 'PE'"),
    ("pipelines", "CASEI(ACCENTI(material)) IN (casei('gx'), 'qm')", "material IN ('GX', 'QM')"),
    ("components", "CASEI(name) LIKE casei('%(js008%')", "name ILIKE '%(js008%'"),
    (
        "pipelines",
        "(from_depth_m + to_depth_m) / 2 > 1.5 AND diameter_mm * 2 >= 600",
        "(from_depth_m + to_depth_m) / 2.0 > 1.5 AND diameter_mm * 2 >= 600",
    ),
    # '/' is real division even between integers: 500 / 400 = 1.25 > 1
    ("pipelines", "diameter_mm / 400 > 1", "diameter_mm::float8 / 400 > 1"),
    ("pipelines", "diameter_mm % 200 = 100", "diameter_mm::numeric % 200 = 100"),
    ("pipelines", "diameter_mm div 300 = 1", "div(diameter_mm::numeric, 300) = 1"),
    (
        "pipelines",
        "-diameter_mm < -399 AND build_year - 2000 >= 5",
        "diameter_mm > 399 AND build_year >= 2005",
    ),
    (
        "incidents",
        "T_AFTER(reported_at, TIMESTAMP('2026-11-10T00:00:00Z'))",
        "reported_at > '2026-11-10T00:00:00Z'",
    ),
    ("incidents", "T_BEFORE(reported_at, DATE('2026-11-01'))", "reported_at < '2026-11-01'"),
    (
        "incidents",
        "T_DURING(reported_at, INTERVAL('2026-11-01T00:00:00Z', '2026-11-10T00:00:00Z'))",
        "reported_at > '2026-11-01T00:00:00Z' AND reported_at < '2026-11-10T00:00:00Z'",
    ),
    (
        "incidents",
        "T_INTERSECTS(reported_at, INTERVAL('2026-11-06', '..'))",
        "reported_at >= '2026-11-06'",
    ),
    (
        "incidents",
        "T_INTERSECTS(INTERVAL(reported_at, updated_at), "
        "INTERVAL('2026-11-03T00:00:00Z', '2026-11-04T00:00:00Z'))",
        "reported_at <= '2026-11-04T00:00:00Z' AND updated_at >= '2026-11-03T00:00:00Z'",
    ),
    (
        "incidents",
        "T_DISJOINT(reported_at, INTERVAL('2026-11-01', '2026-11-10'))",
        "reported_at < '2026-11-01' OR reported_at > '2026-11-10'",
    ),
    (
        "incidents",
        "T_EQUALS(reported_at, TIMESTAMP('2026-10-23T16:50:41Z'))",
        "reported_at = '2026-10-23T16:50:41Z'",
    ),
    (
        "incidents",
        "T_BEFORE(reported_at, updated_at) AND T_AFTER(reported_at, DATE('2026-11-06'))",
        "reported_at < updated_at AND reported_at > '2026-11-06'",
    ),
    (
        "incidents",
        "T_CONTAINS(INTERVAL(reported_at, updated_at), TIMESTAMP('2026-11-06T12:00:00Z'))",
        "reported_at < '2026-11-06T12:00:00Z' AND updated_at > '2026-11-06T12:00:00Z'",
    ),
]


@pytest.mark.parametrize(("collection", "cql", "where"), CASES, ids=[c[1] for c in CASES])
def test_text_and_json_match_sql(
    client: TestClient, engine: Engine, collection: str, cql: str, where: str
) -> None:
    expected = sql_ids(engine, collection, where)
    assert sorted(api_ids(client, collection, cql)) == expected
    # the same filter in CQL2-JSON, as cql2-rs (the reference parser) writes it
    doc = json.dumps(cql2rs.parse_text(cql).to_json())
    assert api_ids(client, collection, doc, **JSON_LANG) == expected


def test_cases_select_something_but_not_everything(engine: Engine, loaded_sample) -> None:
    """The comparisons above are meaningful only if each condition splits its collection."""
    for collection, _, where in CASES:
        n = len(sql_ids(engine, collection, where))
        assert 0 < n < total(engine, collection), where
    # integer division would drop 401..799 mm pipes from 'diameter_mm / 400 > 1'
    assert sql_ids(engine, "pipelines", "diameter_mm > 400 AND diameter_mm < 800")


def test_hand_written_cql2_json(client: TestClient, engine: Engine) -> None:
    doc = {
        "op": "and",
        "args": [
            {"op": "=", "args": [{"op": "casei", "args": [{"property": "network"}]}, "js"]},
            {"op": ">=", "args": [{"property": "diameter_mm"}, 300]},
            {"op": "not", "args": [{"op": "isNull", "args": [{"property": "build_year"}]}]},
        ],
    }
    expected = sql_ids(
        engine, "pipelines", "network = 'JS' AND diameter_mm >= 300 AND build_year IS NOT NULL"
    )
    assert expected and api_ids(client, "pipelines", json.dumps(doc), **JSON_LANG) == expected
    doc = {
        "op": "t_during",
        "args": [{"property": "reported_at"}, {"interval": ["2026-11-01", ".."]}],
    }
    assert api_ids(client, "incidents", json.dumps(doc), **JSON_LANG) == sql_ids(
        engine, "incidents", "reported_at > '2026-11-01'"
    )


def test_next_links_keep_a_json_filter(client: TestClient, engine: Engine) -> None:
    doc = json.dumps({"op": ">=", "args": [{"property": "diameter_mm"}, 300]})
    r = client.get("/collections/pipelines/items", params={"filter": doc, "limit": 50, **JSON_LANG})
    body = r.json()
    nxt = next(link["href"] for link in body["links"] if link["rel"] == "next")
    page2 = client.get(nxt)
    assert page2.status_code == 200, page2.text
    assert page2.json()["numberMatched"] == len(sql_ids(engine, "pipelines", "diameter_mm >= 300"))


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"filter": '{"op": "="', **JSON_LANG}, "filter: not JSON"),
        ({"filter": "network = 'JS'", **JSON_LANG}, "filter: not JSON"),
        (
            {"filter": json.dumps({"op": "=", "args": [{"property": "nosuch"}, 1]}), **JSON_LANG},
            "unknown property 'nosuch' (queryables:",
        ),
        (
            {
                "filter": json.dumps(
                    {"op": "t_after", "args": [{"property": "network"}, {"date": "2026-11-01"}]}
                ),
                **JSON_LANG,
            },
            "at /args/0",
        ),
        (
            {"filter": "A_CONTAINS(network, ('JS'))"},
            "'network' is not an array (this collection has none)",
        ),
        ({"filter": "diameter_mm / 0 > 1"}, "division by zero"),
        ({"filter": "CASEI(diameter_mm) = 'x'"}, "CASEI takes a string"),
        ({"filter": "network = 'JS'", "filter-lang": "cql-json"}, "use cql2-text or cql2-json"),
    ],
)
def test_bad_filters_are_400_naming_the_problem(
    client: TestClient, params: dict[str, str], words: str
) -> None:
    r = client.get("/collections/pipelines/items", params=params)
    assert r.status_code == 400, r.text
    assert words in r.json()["description"]


def test_overflow_at_run_time_is_400(client: TestClient) -> None:
    r = client.get("/collections/pipelines/items", params={"filter": "diameter_mm ^ 400 > 1e300"})
    assert r.status_code == 400 and "invalid value" in r.json()["description"], r.text


def test_injection_attempts_stay_parameters(client: TestClient, engine: Engine) -> None:
    before = total(engine, "pipelines")
    for cql in (
        "CASEI(material) = casei('x''); DROP TABLE cim.pipeline_segment; --')",
        "ACCENTI(owner) LIKE '%'' OR ''1''=''1'",
        "T_AFTER(INTERVAL('..', '..'), DATE('2026-01-01'))",
    ):
        r = client.get("/collections/pipelines/items", params={"filter": cql})
        assert r.status_code in (200, 400), r.text
        if r.status_code == 200:
            assert r.json()["numberMatched"] == 0
    for doc in (
        {"op": "=", "args": [{"property": "network"}, "x'); DROP TABLE cim.pipeline_segment; --"]},
        {"op": "=", "args": [{"property": 'network" = network OR "1'}, "x"]},
        {"op": "lower(network)) OR (1", "args": [1, 1]},
    ):
        r = client.get(
            "/collections/pipelines/items", params={"filter": json.dumps(doc), **JSON_LANG}
        )
        assert r.status_code in (200, 400), r.text
        if r.status_code == 200:
            assert r.json()["numberMatched"] == 0
    assert total(engine, "pipelines") == before


def test_conformance_and_openapi_advertise_cql2_json(client: TestClient) -> None:
    classes = client.get("/conformance").json()["conformsTo"]
    assert set(CONFORMANCE) <= set(classes)
    assert "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json" in classes
    assert "http://www.opengis.net/spec/cql2/1.0/conf/array-functions" not in classes
    doc = client.get("/api").json()
    params = {
        p["name"]: p for p in doc["paths"]["/collections/{collectionId}/items"]["get"]["parameters"]
    }
    assert "cql2-json" in params["filter-lang"]["schema"]["enum"]


# --- array functions on PostgreSQL --------------------------------------------------------

ROWS = [
    (1, ["a", "b"], [1, 2]),
    (2, ["b", "c"], [2, 3]),
    (3, ["a"], [5]),
    (4, [], []),
    (5, ["c", "b", "a"], [1, 2, 3]),
]
ARRAY_CTX = FilterContext({"tags": "array:string", "codes": "array:integer"}, "geom")


@pytest.fixture(scope="module")
def array_conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        conn.execute("CREATE TEMP TABLE arr (id int, tags text[], codes bigint[])")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO arr VALUES (%s, %s, %s)", ROWS)
        yield conn


@pytest.mark.parametrize(
    ("cql", "expect"),
    [
        ("A_CONTAINS(tags, ('a', 'b'))", lambda t, c: {"a", "b"} <= set(t)),
        ("A_CONTAINEDBY(tags, ('a', 'b'))", lambda t, c: set(t) <= {"a", "b"}),
        ("A_OVERLAPS(codes, (3, 5))", lambda t, c: bool({3, 5} & set(c))),
        ("A_EQUALS(tags, ('a', 'b'))", lambda t, c: t == ["a", "b"]),
        ("A_EQUALS(codes, ())", lambda t, c: c == []),
        (
            "NOT A_OVERLAPS(tags, ('x', 'c')) AND A_CONTAINS(codes, (2))",
            lambda t, c: "c" not in t and 2 in c,
        ),
    ],
)
def test_array_functions_on_postgres(array_conn: psycopg.Connection, cql: str, expect: Any) -> None:
    if "()" in cql:  # cql2-rs 0.6 does not parse an empty array literal: written by hand
        doc = {"op": "a_equals", "args": [{"property": "codes"}, []]}
    else:
        doc = cql2rs.parse_text(cql).to_json()
    for lang, filt in (("cql2-text", cql), ("cql2-json", json.dumps(doc))):
        cond, params = to_sql(filt, ARRAY_CTX, lang)
        query = psql.SQL("SELECT id FROM arr WHERE {} ORDER BY id").format(cond)
        got = [r[0] for r in array_conn.execute(query, params)]
        want = [i for i, t, c in ROWS if expect(t, c)]
        assert got == want, (lang, cond.as_string())
        assert 0 < len(want) < len(ROWS)


# --- ACCENTI without the unaccent extension -----------------------------------------------


def test_accenti_without_unaccent_is_a_clear_400(scratch_database: str) -> None:
    from cimtwin.api.app import create_app

    with psycopg.connect(libpq_dsn(scratch_database), autocommit=True) as conn:
        conn.execute("DROP EXTENSION IF EXISTS unaccent")
    with TestClient(create_app(Settings(database_url=scratch_database))) as c:
        r = c.get("/collections/pipelines/items", params={"filter": "ACCENTI(owner) = 'x'"})
        assert r.status_code == 400, r.text
        assert "unaccent" in r.json()["description"]
        # CASEI needs no extension
        r = c.get("/collections/pipelines/items", params={"filter": "CASEI(owner) = 'x'"})
        assert r.status_code == 200 and r.json()["numberMatched"] == 0

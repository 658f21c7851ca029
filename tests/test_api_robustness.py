"""Inputs that used to answer 500 (issue 9, defect 5), each now a 4xx in the JSON error
format, and reads that stay up when a row holds a timestamp Python cannot represent.

Runs on a scratch copy of the North Station sample: it writes incidents, and odd ones."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from cimtwin.api import incidents as incidents_api
from cimtwin.api.app import create_app
from cimtwin.api.geojson import rfc3339
from cimtwin.db.engine import libpq_dsn
from cimtwin.settings import Settings
from cimtwin.spatial.access_queries import create_key

POINT = {"type": "Point", "coordinates": [114.0291, 22.6090]}


@pytest.fixture(scope="module")
def db(sample_database: str) -> str:
    return sample_database


@pytest.fixture(scope="module")
def settings(db: str) -> Settings:
    """This module's app (and the ``live_server`` of conftest) serve the scratch database."""
    return Settings(database_url=db)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def editor(db: str) -> dict[str, str]:
    with psycopg.connect(libpq_dsn(db)) as conn:
        key = create_key(conn, "robustness-editor", "editor")[0]
    return {"Authorization": f"Bearer {key}"}


def q(db: str, sql: str, params=None) -> list[tuple]:
    with psycopg.connect(libpq_dsn(db), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def incident_count(db: str) -> int:
    return q(db, "SELECT count(*) FROM cim.incident")[0][0]


def body(**extra) -> dict:
    return {
        "incident_type": "fire",
        "severity": 2,
        "title": "robustness",
        "geometry": POINT,
        **extra,
    }


def assert_error(r: httpx.Response, status: int | tuple[int, ...], *words: str) -> dict:
    """A 4xx in the service's format, whose description says each of ``words``."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    err = r.json()
    assert err["code"] and err["description"], err
    for w in words:
        assert w in err["description"], (w, err)
    return err


# --- time ranges at the edge ----------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00+14:00",
        "1899-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-14:00",
        "future",
    ],
)
def test_reported_at_outside_the_sane_range_is_refused_and_not_stored(
    client: TestClient, editor: dict, db: str, when: str
) -> None:
    if when == "future":
        when = (datetime.now(UTC) + timedelta(days=1, minutes=5)).isoformat()
    before = incident_count(db)
    r = client.post("/incidents", json=body(reported_at=when), headers=editor)
    assert_error(r, 422, "reported_at", "1900-01-01", "future")
    assert incident_count(db) == before


def test_reported_at_range_edges_are_accepted(client: TestClient, editor: dict) -> None:
    for when in ("1900-01-01T00:00:00Z", (datetime.now(UTC) + timedelta(hours=23)).isoformat()):
        r = client.post("/incidents", json=body(reported_at=when), headers=editor)
        assert r.status_code == 201, r.text
        got = datetime.fromisoformat(r.json()["properties"]["reported_at"])
        assert got == datetime.fromisoformat(when)


def test_a_failing_read_back_leaves_no_row(
    client: TestClient, editor: dict, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Insert and read-back are one transaction: a failure after the insert stores nothing."""

    async def broken(*args, **kwargs):
        raise RuntimeError("read-back failed")

    monkeypatch.setattr(incidents_api, "get_incident", broken)
    before = incident_count(db)
    r = client.post("/incidents", json=body(external_id="ROLLED-BACK"), headers=editor)
    # an unhandled error is a 500 in the service's format, telling nothing of the internals
    assert r.status_code == 500 and r.json()["code"] == "InternalServerError", r.text
    assert "read-back failed" not in r.text
    assert incident_count(db) == before
    assert q(db, "SELECT count(*) FROM cim.incident WHERE external_id = 'ROLLED-BACK'") == [(0,)]


@pytest.fixture(scope="module")
def odd_rows(db: str) -> dict[str, int]:
    """Rows written behind the API's back with timestamps Python's datetime cannot hold:
    1 BC (what '0001-01-01T00:00:00+14:00' is in UTC), infinity and the year 20000."""
    out = {}
    for name, stamp in (
        ("bc", "0001-01-01 00:00:00+14"),
        ("infinity", "infinity"),
        ("far", "20000-01-01 00:00:00+00"),
    ):
        out[name] = q(
            db,
            """
            INSERT INTO cim.incident (incident_type, severity, status, title, reported_at,
                updated_at, grid_code, county_code, attributes, geom)
            SELECT 'fire', 2, 'reported', %s, %s::timestamptz, %s::timestamptz, g.code,
                left(g.code, 6), '{}',
                ST_PointOnSurface(g.geom)
            FROM cim.work_grid g ORDER BY g.code LIMIT 1 RETURNING id""",
            (f"odd {name}", stamp, stamp),
        )[0][0]
    return out


def test_reads_survive_timestamps_python_cannot_hold(
    client: TestClient, db: str, odd_rows: dict[str, int]
) -> None:
    ((grid,),) = q(db, "SELECT grid_code FROM cim.incident WHERE id = %s", (odd_rows["bc"],))
    paths = [
        "/collections",
        "/collections/incidents",
        "/collections/incidents/items",
        "/collections/incidents/items?datetime=2000-01-01T00:00:00Z/..",
        "/incidents",
        "/incidents?status=reported&limit=500",
        f"/grids/{grid}/features?layer=incidents",
        f"/grids/{grid}",
    ]
    for fid in odd_rows.values():
        paths += [
            f"/incidents/{fid}",
            f"/incidents/{fid}/context",
            f"/collections/incidents/items/{fid}",
        ]
    ((lon, lat),) = q(
        db,
        "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_Transform(geom, 4326) p "
        "FROM cim.incident WHERE id = %s) s",
        (odd_rows["bc"],),
    )
    z = 16
    x = int((lon + 180) / 360 * 2**z)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**z)
    r = client.get(f"/tiles/incidents/{z}/{x}/{y}.mvt")
    assert r.status_code == 200 and r.content, r.text
    for path in paths:
        r = client.get(path)
        assert r.status_code == 200, (path, r.text)
        r.json()
    # the odd values are shown as PostgreSQL writes them, not dropped or invented
    shown = client.get(f"/incidents/{odd_rows['bc']}").json()["properties"]
    assert shown["reported_at"].endswith("BC"), shown
    shown = client.get(f"/collections/incidents/items/{odd_rows['infinity']}").json()
    assert shown["properties"]["reported_at"] == "infinity"
    temporal = client.get("/collections/incidents").json()["extent"]["temporal"]
    lo, hi = temporal["interval"][0]
    assert lo.endswith("BC") and hi == "infinity", temporal


def test_patch_repairs_an_odd_row(
    client: TestClient, editor: dict, db: str, odd_rows: dict[str, int]
) -> None:
    fid = odd_rows["far"]
    r = client.patch(
        f"/incidents/{fid}", json={"reported_at": "0001-01-01T00:00:00Z"}, headers=editor
    )
    assert_error(r, 422, "reported_at", "1900-01-01")
    r = client.patch(
        f"/incidents/{fid}", json={"reported_at": "2024-05-01T08:00:00+08:00"}, headers=editor
    )
    assert r.status_code == 200, r.text
    assert r.json()["properties"]["reported_at"] == "2024-05-01T00:00:00Z"
    ((stored,),) = q(db, "SELECT reported_at FROM cim.incident WHERE id = %s", (fid,))
    assert stored == datetime(2024, 5, 1, tzinfo=UTC)


def test_timestamps_near_the_ends_of_python_s_range_serialise() -> None:
    late = datetime(9999, 12, 31, 20, tzinfo=timezone(timedelta(hours=-5)))
    assert rfc3339(late) == "9999-12-31T20:00:00-05:00"
    assert (
        rfc3339(datetime(2024, 5, 1, 8, tzinfo=timezone(timedelta(hours=8))))
        == "2024-05-01T00:00:00Z"
    )
    assert rfc3339("0001-12-31 10:00:00+00 BC") == "0001-12-31 10:00:00+00 BC"


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31",
        "../9999-12-31",
        "9999-12-31/..",
        "0000-01-01",
        "0001-01-01",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "2024-01-01/9999-12-31",
    ],
)
def test_items_datetime_outside_the_range_is_400(client: TestClient, value: str) -> None:
    r = client.get("/collections/incidents/items", params={"datetime": value})
    assert_error(r, 400, "datetime")


@pytest.mark.parametrize(
    "params",
    [
        {"since": "0001-01-01T00:00:00+14:00"},
        {"until": "9999-12-31T23:59:59-14:00"},
        {"since": "2024-01-01T00:00:00Z", "until": "9999-12-31T12:00:00Z"},
    ],
)
def test_incident_list_period_outside_the_range_is_422(client: TestClient, params: dict) -> None:
    r = client.get("/incidents", params=params)
    assert_error(r, 422, next(iter(params)) if len(params) == 1 else "until", "range")


def test_items_datetime_inside_the_range_still_filters(client: TestClient) -> None:
    for value in ("2000-01-01/..", "../9999-12-30", "0001-01-02T00:00:00Z/.."):
        r = client.get("/collections/incidents/items", params={"datetime": value})
        assert r.status_code == 200, (value, r.text)


# --- numbers, NUL characters, charsets -----------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/tiles/buildings/3/{n}/0.mvt",
        "/tiles/buildings/{n}/0/0.mvt",
        "/tiles/buildings/3/0/{n}.mvt",
        "/tiles/buildings,grids/{n}/{n}/{n}.mvt",
        "/incidents/{n}",
        "/collections/incidents/items/{n}",
        "/collections/buildings/items?limit={n}",
        "/collections/buildings/items?offset={n}",
        "/fonts/Noto%20Sans%20Regular/{n}-{n}.pbf",
    ],
)
def test_5000_digit_numbers_are_4xx(client: TestClient, path: str) -> None:
    r = client.get(path.format(n="7" * 5000))
    err = assert_error(r, (400, 404, 422))
    assert len(err["description"]) < 1000, "the error should not echo 5000 digits back"


@pytest.mark.parametrize("field", ["title", "description", "external_id", "incident_type", "crs"])
def test_nul_in_incident_text_is_422_naming_the_field(
    client: TestClient, editor: dict, db: str, field: str
) -> None:
    before = incident_count(db)
    r = client.post("/incidents", json=body(**{field: "ab\u0000cd"}), headers=editor)
    assert_error(r, 422, field, "NUL")
    assert incident_count(db) == before


def test_nul_in_incident_attributes_and_patch_is_422(
    client: TestClient, editor: dict, db: str
) -> None:
    before = incident_count(db)
    for attributes in ({"note": "a\u0000"}, {"k\u0000": 1}, {"deep": [{"x": ["\u0000"]}]}):
        r = client.post("/incidents", json=body(attributes=attributes), headers=editor)
        assert_error(r, 422, "attributes", "NUL")
    assert incident_count(db) == before
    fid = client.post("/incidents", json=body(), headers=editor).json()["id"]
    r = client.patch(f"/incidents/{fid}", json={"title": "x\u0000"}, headers=editor)
    assert_error(r, 422, "title", "NUL")


@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity"])
def test_attributes_with_numbers_json_cannot_hold_are_422(
    client: TestClient, editor: dict, db: str, number: str
) -> None:
    before = incident_count(db)
    raw = json.dumps(body(attributes={"depth": 0})).replace('"depth": 0', f'"depth": {number}')
    r = client.post(
        "/incidents", content=raw, headers={**editor, "Content-Type": "application/json"}
    )
    assert_error(r, 422, "attributes", "finite")
    assert incident_count(db) == before


def test_database_errors_answer_in_the_json_format(settings: Settings) -> None:
    """The app-wide nets under every route, the plain tile route included: a value PostgreSQL
    refuses is a 422, a connection lost mid-query a 503 with Retry-After; never the
    plain-text 500."""
    app = create_app(settings)
    raised = {
        "/data": psycopg.errors.InvalidTextRepresentation("invalid input syntax"),
        "/lost": psycopg.errors.AdminShutdown("terminating connection"),
        "/closed": psycopg.InterfaceError("the connection is closed"),
        "/broken": psycopg.OperationalError("server closed the connection"),
    }

    async def fail(request):
        raise raised[request.url.path]

    for path in raised:
        app.router.add_route(path, fail)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert_error(c.get("/data"), 422, "invalid input syntax")
        for path in ("/lost", "/closed", "/broken"):
            r = c.get(path)
            assert_error(r, 503, "database unavailable", "lost")
            assert r.headers["retry-after"]


@pytest.mark.parametrize(
    "path, params, name",
    [
        ("/collections/buildings/items", {"filter": "name = 'a\u0000'"}, "filter"),
        ("/collections/buildings/items", {"name": "a\u0000"}, "name"),
        ("/incidents", {"type": "fire\u0000"}, "type"),
        ("/incidents", {"status": "\u0000"}, "status"),
        ("/grids/locate", {"lon": "114.02\u0000", "lat": "22.6"}, "lon"),
        ("/parcels", {"land_use": "R\u0000"}, "land_use"),
        ("/grids/4403090010010%001", {}, "code"),
        ("/districts/north%00station", {}, "slug"),
    ],
)
def test_nul_in_query_and_path_parameters_is_4xx_naming_them(
    client: TestClient, path: str, params: dict, name: str
) -> None:
    r = client.get(path, params=params)
    assert_error(r, (400, 404, 422), name, "NUL")


def test_nul_in_pipeline_dataset_is_422(client: TestClient, db: str) -> None:
    ((seg,),) = q(
        db, "SELECT id FROM cim.pipeline_segment WHERE network = 'JS' ORDER BY id LIMIT 1"
    )
    r = client.post("/pipelines/isolation", json={"segment_id": seg, "dataset": "a\u0000"})
    assert_error(r, 422, "dataset", "NUL")


@pytest.mark.parametrize(
    "ctype",
    [
        "text/csv; charset=punycode",
        "text/csv; charset=idna",
        "text/csv; charset=base64",
        "text/csv; charset=rot13",
        "text/csv; charset=nosuchcharset",
        'text/csv; charset="utf-8\x7f"',
        "text/csv; charset=",
        "application/json; charset=gbk",
    ],
)
def test_unsupported_charsets_are_refused_naming_them(client: TestClient, ctype: str) -> None:
    csv = "id,lon,lat\n1,114.0291,22.6090\n"
    data = csv if ctype.startswith("text/csv") else '{"rows": [{"lon": 114.02, "lat": 22.6}]}'
    r = client.post("/grids/assign", content=data.encode(), headers={"Content-Type": ctype})
    err = assert_error(r, (400, 415), "charset")
    named = ctype.split("charset=")[1].strip('"').rstrip("\x7f")
    assert named[:8] in err["description"], err


def test_supported_charsets_still_work(client: TestClient) -> None:
    csv = "id,名称,lon,lat\n1,北站,114.0291,22.6090\n"
    for charset in ("utf-8", "gbk", "GB18030", "utf-16", '"utf-8"'):
        enc = charset.strip('"')
        r = client.post(
            "/grids/assign",
            content=csv.encode(enc),
            headers={"Content-Type": f"text/csv; charset={charset}"},
        )
        assert r.status_code == 200, (charset, r.text)
        assert "北站" in r.text


# --- concurrency ----------------------------------------------------------------------------


def concurrently(n: int, send) -> list[httpx.Response]:
    """``send(http)`` from ``n`` threads released at once; their answers."""
    start = threading.Barrier(n)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def run() -> None:
        with httpx.Client(timeout=30) as http:
            start.wait()
            r = send(http)
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return answers


def test_concurrent_reports_with_one_external_id(live_server: str, editor: dict, db: str) -> None:
    """Ten clients report the same sensor alarm at once: one 201, nine 409 naming it."""
    for _ in range(3):  # a warm pool, so that the ten really run side by side
        concurrently(10, lambda http: http.get(f"{live_server}/collections/buildings/items"))
    answers = concurrently(
        10,
        lambda http: http.post(
            f"{live_server}/incidents", json=body(external_id="SENSOR-42:alarm"), headers=editor
        ),
    )
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] + [409] * 9, [(r.status_code, r.text[:200]) for r in answers]
    for r in answers:
        if r.status_code == 409:
            assert_error(r, 409, "SENSOR-42:alarm")
    assert q(db, "SELECT count(*) FROM cim.incident WHERE external_id = 'SENSOR-42:alarm'") == [
        (1,)
    ]
    # ten PATCHes giving ten incidents one new external_id at once: one 200, nine 409
    ids = [
        httpx.post(f"{live_server}/incidents", json=body(), headers=editor).json()["id"]
        for _ in range(10)
    ]
    pending = list(ids)
    answers = concurrently(
        10,
        lambda http: http.patch(
            f"{live_server}/incidents/{pending.pop()}",
            json={"external_id": "SENSOR-43:alarm"},
            headers=editor,
        ),
    )
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] + [409] * 9, [(r.status_code, r.text[:200]) for r in answers]
    for r in answers:
        if r.status_code == 409:
            assert_error(r, 409, "SENSOR-43:alarm")
    assert q(db, "SELECT count(*) FROM cim.incident WHERE external_id = 'SENSOR-43:alarm'") == [
        (1,)
    ]

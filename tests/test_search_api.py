"""GET /search on the North Station sample, checked against direct SQL: what matches (an
independent case-insensitive match in Python over the rows PostGIS returns), the order (exact,
prefix, substring; buildings, grids, parcels, points), positions and bboxes, wildcards taken
literally, and bad input refused with 422."""

from __future__ import annotations

import pytest

from tests.conftest import q

#: kind -> (collection, SQL of id and the searched fields, geometry column)
KINDS = {
    "building": ("buildings", "SELECT id, building_code, address, name FROM cim.building"),
    "grid": ("grids", "SELECT code, code, name FROM cim.work_grid"),
    "parcel": ("parcels", "SELECT id, parcel_code FROM cim.parcel"),
    "pipeline_point": ("pipeline_points", "SELECT id, point_no FROM cim.pipeline_node"),
}
ORDER = list(KINDS)


def expected(engine, text: str) -> dict[tuple[str, object], int]:
    """(kind, id) -> rank (0 exact, 1 prefix, 2 substring) of every match, by Python."""
    needle = text.lower()
    out = {}
    for kind, (_, sql) in KINDS.items():
        for item_id, *fields in q(engine, sql):
            ranks = []
            for f in fields:
                if f is None or needle not in f.lower():
                    continue
                ranks.append(0 if f.lower() == needle else 1 if f.lower().startswith(needle) else 2)
            if ranks:
                out[(kind, item_id)] = min(ranks)
    return out


def search(client, text: str, limit: int | None = None) -> list[dict]:
    params: dict[str, object] = {"q": text}
    if limit is not None:
        params["limit"] = limit
    r = client.get("/search", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["numberReturned"] == len(body["results"])
    return body["results"]


@pytest.mark.parametrize(
    "text",
    ["JZ4403090000001", "jz440309000001", "0000001", "社区第0", "JS014", "金龙大道", "DK44"],
)
def test_matches_and_order_equal_sql(client, engine, text: str) -> None:
    want = expected(engine, text)
    assert want, f"the sample has no match for {text!r}: pick another text"
    got = search(client, text, limit=50)
    keys = [(r["kind"], r["id"]) for r in got]
    assert len(set(keys)) == len(keys)
    for r in got:
        assert r["collection"] == KINDS[r["kind"]][0]
        assert (r["kind"], r["id"]) in want, r
    # exact, then prefix, then substring; within a rank, kinds in their order
    order = [(want[k], ORDER.index(k[0])) for k in keys]
    assert order == sorted(order)
    # the best matches are the ones returned: the first len(got) of the expected order
    best = sorted((rank, ORDER.index(k[0])) for k, rank in want.items())[: len(got)]
    assert order == best
    assert len(got) == min(50, len(want))


def test_exact_code_first_and_case_insensitive(client, engine) -> None:
    ((bid, code),) = q(engine, "SELECT id, building_code FROM cim.building ORDER BY id LIMIT 1")
    for text in (code, code.lower(), f"  {code} "):
        first = search(client, text)[0]
        assert (first["kind"], first["id"]) == ("building", bid), first
        assert code in first["label"]


def test_positions_and_bboxes_equal_postgis(client, engine) -> None:
    ((gcode, gname, lon, lat, x0, y0, x1, y1),) = q(
        engine,
        """SELECT code, name, ST_X(p), ST_Y(p), ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b)
           FROM (SELECT code, name, ST_Transform(ST_PointOnSurface(geom), 4326) p,
                        ST_Transform(geom, 4326)::box2d b
                 FROM cim.work_grid ORDER BY code LIMIT 1) s""",
    )
    (grid,) = [r for r in search(client, gname) if r["kind"] == "grid" and r["id"] == gcode]
    assert grid["position"] == pytest.approx([lon, lat], abs=1e-6)
    assert grid["bbox"] == pytest.approx([x0, y0, x1, y1], abs=1e-6)
    assert x0 <= lon <= x1 and y0 <= lat <= y1
    ((nid, point_no, lon, lat),) = q(
        engine,
        """SELECT id, point_no, ST_X(p), ST_Y(p) FROM (SELECT id, point_no,
             ST_Transform(geom, 4326) p FROM cim.pipeline_node ORDER BY id LIMIT 1) s""",
    )
    first = search(client, point_no)[0]
    assert (first["kind"], first["id"]) == ("pipeline_point", nid)
    assert first["position"] == pytest.approx([lon, lat], abs=1e-6)
    assert "bbox" not in first
    # the position is inside the sample (CRS84 lon, lat; not swapped, not projected)
    assert 113.9 < lon < 114.2 and 22.5 < lat < 22.7


def test_limit(client, engine) -> None:
    assert len(expected(engine, "JZ")) > 12
    assert len(search(client, "JZ")) == 10  # the default
    assert len(search(client, "JZ", limit=3)) == 3
    assert len(search(client, "JZ", limit=50)) == 50


def test_wildcards_are_literal(client, engine) -> None:
    ((point_no,),) = q(engine, "SELECT point_no FROM cim.pipeline_node ORDER BY id LIMIT 1")
    assert len(point_no) >= 3
    assert search(client, point_no)
    # the same text with one character as _ (or %) would match as a LIKE pattern: not here
    for wild in ("_", "%"):
        pattern = point_no[:2] + wild + point_no[3:]
        assert q(engine, "SELECT count(*) FROM cim.pipeline_node WHERE point_no LIKE :p",
                 p=pattern)[0][0] >= 1  # fmt: skip
        holding = q(
            engine,
            "SELECT count(*) FROM cim.pipeline_node WHERE strpos(point_no, :c) > 0",
            c=wild,
        )[0][0]
        assert holding == 0
        assert search(client, pattern) == []
    for text in ("%", "_", "\\", "%%", "J\\S"):
        assert search(client, text) == [], text


@pytest.mark.parametrize(
    "params",
    [{}, {"q": ""}, {"q": "   "}, {"q": "x" * 101}, {"q": "JZ", "limit": 0},
     {"q": "JZ", "limit": 51}, {"q": "JZ", "limit": "ten"}],
)  # fmt: skip
def test_bad_input_is_422(client, params: dict) -> None:
    r = client.get("/search", params=params)
    assert r.status_code == 422, (params, r.text)
    assert r.json()["description"]


def test_longest_query_is_taken(client) -> None:
    assert search(client, "x" * 100) == []

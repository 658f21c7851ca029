"""CQL2-JSON reader: it builds the tree CQL2-text gives (checked against cql2-rs, the reference
implementation's own text-to-JSON translation), and its errors name the JSON Pointer of the
faulty member. No database."""

from __future__ import annotations

import json
from typing import Any

import cql2 as cql2rs
import pytest

from cimtwin.api.cql2 import CQL2Error
from cimtwin.api.cql2_json import MAX_LENGTH, parse_json
from cimtwin.api.cql2_sql import FilterContext, context_for, to_sql
from cimtwin.spatial.catalogue import BY_ID

PIPES = context_for(BY_ID["pipelines"])
INC = context_for(BY_ID["incidents"])
COMP = context_for(BY_ID["components"])
ARRAYS = FilterContext({"tags": "array:string", "codes": "array:integer"}, "geom")


def sql_of(text: str, ctx: FilterContext, lang: str) -> tuple[str, list[Any]]:
    cond, params = to_sql(text, ctx, lang)
    # cql2-rs writes every number as a float: compare numbers by value, keep other types
    return cond.as_string(), [float(p) if isinstance(p, int) else p for p in params]


#: text filters people write, over every construct both encodings share
CORPUS = [
    (PIPES, "network = 'JS' AND diameter_mm >= 300"),
    (PIPES, "network IN ('JS', 'PS') AND diameter_mm NOT BETWEEN 100 AND 200"),
    (PIPES, "NOT (network = 'JS' OR build_year IS NOT NULL)"),
    (PIPES, "material LIKE 'Q%' OR owner IS NULL"),
    (PIPES, "material NOT LIKE 'Q%' AND network NOT IN ('JS')"),
    (PIPES, "from_depth_m < to_depth_m"),
    (PIPES, "CASEI(material) = casei('pe') AND ACCENTI(owner) LIKE accenti('%水务%')"),
    (PIPES, "(from_depth_m + to_depth_m) / 2 > 1.5 AND diameter_mm * 2 - 10 >= 590"),
    (PIPES, "diameter_mm % 200 = 100 OR diameter_mm div 300 = 1 OR diameter_mm ^ 2 > 4"),
    (PIPES, "S_INTERSECTS(geom, POLYGON((114 22.6, 114.1 22.6, 114.1 22.7, 114 22.6)))"),
    (PIPES, "S_WITHIN(geom, BBOX(114.0, 22.6, 114.1, 22.7))"),
    (COMP, "S_INTERSECTS(geom, MULTIPOINT((114.02 22.61), (114.03 22.62)))"),
    (COMP, "S_DISJOINT(geom, LINESTRING(114.02 22.61, 114.03 22.62))"),
    (INC, "T_AFTER(reported_at, TIMESTAMP('2026-11-01T00:00:00Z'))"),
    (INC, "T_DURING(reported_at, INTERVAL('2026-11-01T00:00:00Z', '..'))"),
    (INC, "T_INTERSECTS(INTERVAL(reported_at, updated_at), DATE('2026-11-03'))"),
    (INC, "T_BEFORE(reported_at, updated_at) OR T_EQUALS(reported_at, updated_at)"),
    (INC, "reported_at >= DATE('2026-10-23') AND severity >= 3"),
    (ARRAYS, "A_CONTAINS(tags, ('a', 'b')) AND A_OVERLAPS(codes, (1, 2))"),
    (ARRAYS, "A_EQUALS(tags, ('x')) OR A_CONTAINEDBY(codes, (1, 2, 3))"),
]


@pytest.mark.parametrize(("ctx", "text"), CORPUS, ids=[t for _, t in CORPUS])
def test_cql2_rs_json_compiles_like_our_text(ctx: FilterContext, text: str) -> None:
    reference = json.dumps(cql2rs.parse_text(text).to_json())
    assert sql_of(reference, ctx, "cql2-json") == sql_of(text, ctx, "cql2-text")


def test_json_keeps_integers_and_reads_literals() -> None:
    doc = {
        "op": "and",
        "args": [
            {"op": "=", "args": [{"property": "network"}, "JS"]},
            {"op": ">=", "args": [{"property": "diameter_mm"}, 300]},
        ],
    }
    cond, params = to_sql(json.dumps(doc), PIPES, "cql2-json")
    assert cond.as_string() == '(("network" = %s) AND ("diameter_mm" >= %s))'
    assert params == ["JS", 300] and isinstance(params[1], int)
    assert to_sql("true", PIPES, "cql2-json")[0].as_string() == "TRUE"


def json_error(doc: Any, ctx: FilterContext = PIPES) -> CQL2Error:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(CQL2Error) as info:
        to_sql(text, ctx, "cql2-json")
    return info.value


EQ_NETWORK = {"op": "=", "args": [{"property": "network"}, "JS"]}


@pytest.mark.parametrize(
    ("doc", "pointer", "words"),
    [
        ({"op": "=", "args": [{"property": "nosuch"}, 1]}, "/args/0", "unknown property 'nosuch'"),
        (
            {
                "op": "and",
                "args": [EQ_NETWORK, {"op": "=", "args": [{"property": "diameter_mm"}, "3"]}],
            },
            "/args/1/args/1",
            "is a number",
        ),
        ({"op": "nosuch", "args": []}, "/op", "unknown operator or function 'nosuch'"),
        ({"op": "=", "args": [{"property": "network"}]}, "/args", "takes 2 argument(s), got 1"),
        ({"op": "and", "args": [EQ_NETWORK]}, "/args", "at least 2"),
        ({"op": "=", "args": {"a": 1}}, "/args", "must be an array"),
        ({**EQ_NETWORK, "extra": 1}, "", "unknown member(s) 'extra'"),
        (
            {"op": "=", "args": [{"property": "network"}, None]},
            "/args/1",
            "null is not a CQL2 value",
        ),
        ({"op": "+", "args": [{"property": "diameter_mm"}, 1]}, "", "is a value, not a condition"),
        (
            {"op": "=", "args": [{"op": "like", "args": [{"property": "network"}, "J%"]}, True]},
            "/args/0",
            "is a condition, not a value",
        ),
        ({"op": "in", "args": [{"property": "network"}, "JS"]}, "/args/1", "array of values"),
        (
            {"op": "s_intersects", "args": [{"property": "geom"}, {"type": "Circle"}]},
            "/args/1/type",
            "unknown GeoJSON geometry type 'Circle'",
        ),
        (
            {
                "op": "s_intersects",
                "args": [
                    {"property": "geom"},
                    {
                        "type": "Polygon",
                        "coordinates": [[[114, 22.6], [114.1, 22.6], [114, 22.7], [114, 22.8]]],
                    },
                ],
            },
            "/args/1/coordinates/0",
            "not closed",
        ),
        (
            {
                "op": "s_intersects",
                "args": [{"property": "geom"}, {"type": "Point", "coordinates": [114, "x"]}],
            },
            "/args/1/coordinates/1",
            "expected a number",
        ),
        (
            {"op": "s_intersects", "args": [{"property": "geom"}, {"bbox": [1, 2, 3]}]},
            "/args/1",
            "bbox",
        ),
        (
            {"op": "t_after", "args": [{"property": "reported_at"}, {"timestamp": "soon"}]},
            "/args/1",
            "not an RFC 3339",
        ),
        (
            {
                "op": "t_during",
                "args": [{"property": "reported_at"}, {"interval": ["2026-11-01", "x"]}],
            },
            "/args/1/interval/1",
            "INTERVAL end 'x'",
        ),
        (
            {"op": "=", "args": [{"property": "reported_at"}, {"date": "2026-13-01"}]},
            "/args/1",
            "YYYY-MM-DD",
        ),
        ({"op": "=", "args": [{"property": ""}, 1]}, "/args/0", "non-empty name"),
    ],
)
def test_json_errors_name_the_pointer(doc: Any, pointer: str, words: str) -> None:
    ctx = INC if "reported_at" in json.dumps(doc) else PIPES
    exc = json_error(doc, ctx)
    assert exc.position == pointer, str(exc)
    assert words in str(exc)
    assert str(exc).endswith(f"at {pointer}" if pointer else "at the top of the JSON filter")


def test_json_documents_that_are_not_cql2() -> None:
    assert "not JSON (Expecting" in str(json_error('{"op": "="'))
    assert "appears twice" in str(json_error('{"op": "=", "op": "<", "args": []}'))
    assert "NaN is not a JSON number" in str(
        json_error('{"op": "=", "args": [{"property": "diameter_mm"}, NaN]}')
    )
    assert "must be finite" in str(
        json_error('{"op": "=", "args": [{"property": "diameter_mm"}, 1e400]}')
    )
    assert "usable JSON number" in str(
        json_error('{"op": "=", "args": [{"property": "diameter_mm"}, ' + "9" * 5000 + "]}")
    )
    assert "expected an operation" in str(json_error('"network"'))
    assert "empty filter" in str(json_error("  "))
    assert f"longer than {MAX_LENGTH}" in str(json_error(" " * (MAX_LENGTH + 1)))


def test_json_depth_is_bounded() -> None:
    ok: Any = EQ_NETWORK
    for _ in range(19):
        ok = {"op": "not", "args": [ok]}
    assert to_sql(json.dumps(ok), PIPES, "cql2-json")[1] == ["JS"]
    deep = {"op": "not", "args": [ok]}
    assert "nested deeper than 20" in str(json_error(deep))
    assert "nested too deeply" in str(json_error("[" * 5000 + "]" * 5000))


def test_json_injection_stays_in_parameters() -> None:
    exc = json_error({"op": "=", "args": [{"property": 'network" OR 1=1 --'}, "x"]})
    assert "unknown property 'network\" OR 1=1 --'" in str(exc)
    cond, params = to_sql(
        json.dumps({"op": "=", "args": [{"property": "network"}, "x'; DROP TABLE t; --"]}),
        PIPES,
        "cql2-json",
    )
    assert cond.as_string() == '("network" = %s)' and params == ["x'; DROP TABLE t; --"]
    # an operator name is matched against a closed list, never copied into SQL
    assert "unknown operator" in str(json_error({"op": "=; DROP", "args": [1, 1]}))


def test_parse_json_builds_the_text_tree_without_positions() -> None:
    from cimtwin.api.cql2 import parse

    def strip(node: Any) -> Any:  # the tree minus positions, for comparing encodings
        if isinstance(node, tuple | list):
            return [strip(n) for n in node]
        if hasattr(node, "__dataclass_fields__"):
            return (
                type(node).__name__,
                {k: strip(getattr(node, k)) for k in node.__dataclass_fields__ if k != "pos"},
            )
        return node

    text = "NOT (CASEI(network) = 'js' OR T_AFTER(reported_at, DATE('2026-11-01')))"
    assert strip(parse_json(json.dumps(cql2rs.parse_text(text).to_json()))) == strip(parse(text))


def test_errors_quote_client_text_cut_short() -> None:
    long_name = "x" * 3000
    exc = json_error({"op": "=", "args": [{"property": long_name}, 1]})
    assert "(3000 characters)" in str(exc) and len(str(exc)) < 1000
    exc = json_error({"op": long_name, "args": []})
    assert "(3000 characters)" in str(exc) and len(str(exc)) < 300
    exc = json_error({"op": "s_intersects", "args": [{"property": "geom"}, {"type": {"a": 1}}]})
    assert "unknown GeoJSON geometry type an object" in str(exc)
    with pytest.raises(CQL2Error) as info:
        to_sql(f"network = '{'y' * 1900}' OR", PIPES)
    assert len(str(info.value)) < 300

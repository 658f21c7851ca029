"""CQL2-text parser and compiler: precedence, literals, errors with positions, and the rules
that keep user text out of SQL (unknown properties, injection-looking input). No database."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from psycopg import sql

from cimtwin.api import cql2
from cimtwin.api.cql2 import (
    And,
    Between,
    Comparison,
    CQL2Error,
    In,
    IsNull,
    Like,
    Literal,
    Not,
    Or,
    Property,
    Spatial,
    parse,
)
from cimtwin.api.cql2_sql import FilterContext, to_sql
from cimtwin.api.inputs import parse_crs
from cimtwin.spatial.catalogue import BY_ID

PIPES = BY_ID["pipelines"]
CTX = FilterContext({p: PIPES.column_type(p) for p in PIPES.properties}, "geom")
INCIDENTS = BY_ID["incidents"]
INC_CTX = FilterContext({p: INCIDENTS.column_type(p) for p in INCIDENTS.properties}, "geom")


def render(text: str, ctx: FilterContext = CTX) -> tuple[str, list]:
    cond, params = to_sql(text, ctx)
    assert isinstance(cond, sql.Composable)
    return cond.as_string(), params


def error(text: str, ctx: FilterContext = CTX) -> CQL2Error:
    with pytest.raises(CQL2Error) as info:
        to_sql(text, ctx)
    return info.value


# --- syntax ---------------------------------------------------------------------------------


def test_and_binds_tighter_than_or() -> None:
    tree = parse("a = 1 OR b = 2 AND c = 3")
    assert isinstance(tree, Or)
    first, second = tree.items
    assert first == Comparison("=", Property("a", 1), Literal("number", 1, 5), 3)
    assert isinstance(second, And) and [i.left.name for i in second.items] == ["b", "c"]


def test_parentheses_override_precedence_and_not_binds_tightest() -> None:
    tree = parse("(a = 1 OR b = 2) AND NOT c = 3")
    assert isinstance(tree, And)
    assert isinstance(tree.items[0], Or)
    assert isinstance(tree.items[1], Not) and tree.items[1].item.left.name == "c"
    # NOT applies to the next predicate only, not to the whole AND chain
    tree = parse("NOT a = 1 AND b = 2")
    assert isinstance(tree, And) and isinstance(tree.items[0], Not)


def test_keywords_are_case_insensitive_and_chains_stay_flat() -> None:
    assert parse("a = 1 and b = 2 AnD c = 3") == parse("a = 1 AND b = 2 AND c = 3")
    assert len(parse("a = 1 or b = 2 or c = 3").items) == 3


def test_between_consumes_its_own_and() -> None:
    tree = parse("x BETWEEN 1 AND 5 AND y = 2")
    assert isinstance(tree, And) and len(tree.items) == 2
    assert tree.items[0] == Between(
        Property("x", 1), Literal("number", 1, 11), Literal("number", 5, 17), False, 3
    )


def test_predicates_and_negations() -> None:
    assert parse("n NOT LIKE 'J%'") == Like(Property("n", 1), Literal("string", "J%", 12), True, 7)
    tree = parse("n NOT IN ('JS', 'PS')")
    assert isinstance(tree, In) and tree.negated and [i.value for i in tree.items] == ["JS", "PS"]
    assert parse("n IS NOT NULL") == IsNull(Property("n", 1), True, 3)
    assert parse("n is null") == IsNull(Property("n", 1), False, 3)


def test_literals() -> None:
    assert parse("s = 'it''s 管线'").right.value == "it's 管线"
    assert parse('"quoted name" = 1').left == Property("quoted name", 1)
    assert parse("x = -1.5").right.value == -1.5
    assert parse("x = 1e3").right.value == 1000.0
    assert parse("x = .5").right.value == 0.5
    assert parse("x = 42").right == Literal("number", 42, 5)
    assert parse("x = TRUE").right == Literal("boolean", True, 5)
    assert parse("TRUE") == Literal("boolean", True, 1)
    ts = parse("t > TIMESTAMP('2026-10-23T16:50:41Z')").right
    assert ts.kind == "timestamp" and ts.value == datetime(2026, 10, 23, 16, 50, 41, tzinfo=UTC)
    assert parse("t >= DATE('2026-10-23')").right.value == date(2026, 10, 23)


def test_spatial_literals() -> None:
    tree = parse("S_INTERSECTS(geom, POLYGON((0 0, 1 0, 1 1, 0 0)))")
    assert isinstance(tree, Spatial) and tree.func == "S_INTERSECTS"
    assert tree.b.kind == "POLYGON" and len(tree.b.coords[0]) == 4
    assert parse("s_intersects(geometry, POINT Z (1 2 3))").b.coords == (1.0, 2.0)
    assert parse("S_INTERSECTS(geom, BBOX(1, 2, 3, 4))").b.coords == (1.0, 2.0, 3.0, 4.0)
    multi = parse("S_INTERSECTS(geom, MULTIPOINT((1 2), 3 4))").b
    assert multi.coords == [(1.0, 2.0), (3.0, 4.0)]
    gc = parse("S_INTERSECTS(geom, GEOMETRYCOLLECTION(POINT(1 2), LINESTRING(0 0, 1 1)))").b
    assert [m.kind for m in gc.coords] == ["POINT", "LINESTRING"]


# --- errors with positions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("network = ", 11, "end of filter"),
        ("network == 'JS'", 10, "'='"),
        ("network = 'JS", 11, "unterminated string"),
        ("network = 'JS' AND", 19, "end of filter"),
        ("network = 'JS' diameter_mm = 1", 16, "AND, OR"),
        ("(network = 'JS'", 16, "')'"),
        ("network != 'JS'", 9, "<>"),
        ("network", 8, "comparison operator"),
        ("foo(1) = 2", 1, "unknown function 'foo'"),
        ("AND = 1", 1, "property name or a literal"),
        ("network IN ('JS' 'PS')", 18, "IN list"),
        ("t > DATE('2026-13-01')", 10, "not a YYYY-MM-DD date"),
        ("t > TIMESTAMP('yesterday')", 15, "RFC 3339"),
        ("S_INTERSECTS(geom, POINT(1))", 27, "a number"),
        ("S_INTERSECTS(geom, POLYGON((0 0, 1 0, 1 1, 0 1)))", 1, None),
        ("S_INTERSECTS(geom, BBOX(1, 2, 3))", 20, "4 (or 6) numbers"),
        ("network = 'x'; DROP TABLE cim.pipeline_segment", 14, "unexpected character ';'"),
    ],
)
def test_syntax_errors_name_the_token_and_position(
    text: str, position: int, words: str | None
) -> None:
    with pytest.raises(CQL2Error) as info:
        parse(text)
    exc = info.value
    if words is None:  # the position is reported, wherever the parser noticed
        assert exc.position is not None
        return
    assert exc.position == position, str(exc)
    assert words in str(exc)
    assert f"at position {position}" in str(exc)


def test_depth_and_length_are_bounded() -> None:
    ok = "(" * 20 + "network = 'JS'" + ")" * 20
    assert render(ok)[1] == ["JS"]
    with pytest.raises(CQL2Error, match="nested deeper than 20"):
        parse("(" * 21 + "network = 'JS'" + ")" * 21)
    with pytest.raises(CQL2Error, match="nested deeper than 20"):
        parse("NOT " * 25 + "network = 'JS'")
    with pytest.raises(CQL2Error, match="longer than 2000"):
        parse("network = '" + "x" * 2000 + "'")
    with pytest.raises(CQL2Error, match="empty filter"):
        parse("   ")


# --- compilation against a collection -------------------------------------------------------


def test_comparison_compiles_to_identifiers_and_parameters() -> None:
    text, params = render("network = 'JS' AND diameter_mm >= 300")
    assert text == '(("network" = %s) AND ("diameter_mm" >= %s))'
    assert params == ["JS", 300]


def test_advanced_operators_compile() -> None:
    text, params = render(
        "network IN ('JS', 'PS') AND NOT diameter_mm BETWEEN 100 AND 200 "
        "OR material LIKE 'Q%' OR owner IS NULL"
    )
    assert text == (
        '((("network" IN (%s, %s)) AND (NOT ("diameter_mm" BETWEEN %s AND %s))) '
        'OR ("material" LIKE %s) OR ("owner" IS NULL))'
    )
    assert params == ["JS", "PS", 100, 200, "Q%"]
    assert render("material NOT LIKE 'Q%'")[0] == '("material" NOT LIKE %s)'
    assert (
        render("build_year NOT BETWEEN 1990 AND 2000")[0] == '("build_year" NOT BETWEEN %s AND %s)'
    )
    assert render("network NOT IN ('JS')") == ('("network" NOT IN (%s))', ["JS"])
    assert render("300 <= diameter_mm")[0] == '(%s <= "diameter_mm")'


def test_datetime_comparisons_take_timestamps_dates_and_iso_strings() -> None:
    text, params = render(
        "reported_at >= DATE('2026-10-23') AND "
        "reported_at < TIMESTAMP('2026-10-24T12:00:00+08:00')",
        INC_CTX,
    )
    assert text == '(("reported_at" >= %s) AND ("reported_at" < %s))'
    assert params[0] == datetime(2026, 10, 23, tzinfo=UTC)
    assert params[1] == datetime(2026, 10, 24, 4, tzinfo=UTC)
    assert render("reported_at > '2026-10-23T00:00:00Z'", INC_CTX)[1][0].tzinfo is not None


def test_constant_conditions_are_decided_without_sql() -> None:
    assert render("1 = 1") == ("TRUE", [])
    assert render("'a' <> 'a' OR FALSE") == ("(FALSE OR FALSE)", [])
    with pytest.raises(CQL2Error, match="cannot compare"):
        to_sql("1 = 'a'", CTX)


def test_unknown_properties_are_rejected_with_their_position() -> None:
    exc = error("network = 'JS' AND nosuch = 1")
    assert exc.position == 20 and "unknown property 'nosuch'" in str(exc)
    assert "diameter_mm" in str(exc)  # lists the queryables
    # a column of the table that is not a catalogue property is not queryable either
    assert "unknown property 'dataset'" in str(error("dataset = 'x'"))
    assert "unknown property 'from_node_id'" in str(error("from_node_id = 1"))


def test_injection_looking_input_never_reaches_sql() -> None:
    # a property "named" like SQL is just an unknown property
    exc = error("\"1=1 OR name\" = 'x'")
    assert "unknown property '1=1 OR name'" in str(exc) and exc.position == 1
    exc = error('"network"" OR 1=1 --" = \'x\'')
    assert "unknown property 'network\" OR 1=1 --'" in str(exc)
    # statement separators are not CQL2
    assert "unexpected character ';'" in str(error("network = 'x'; DROP TABLE t"))
    # quotes inside a string literal stay in the parameter
    text, params = render("network = 'x''; DROP TABLE cim.pipeline_segment; --'")
    assert text == '("network" = %s)' and params == ["x'; DROP TABLE cim.pipeline_segment; --"]
    assert "DROP" not in text
    # a comment marker or a quote outside a literal is a syntax error
    assert isinstance(error("network = 'JS' -- comment"), CQL2Error)


def test_types_are_checked() -> None:
    assert "is a string" in str(error("network = 5"))
    assert "is a number" in str(error("diameter_mm = '300'"))
    assert "is a number" in str(error("build_year > TRUE"))
    assert "LIKE needs a string property" in str(error("diameter_mm LIKE '3%'"))
    assert "quoted pattern" in str(error("material LIKE 5"))
    assert "cannot compare" in str(error("network = diameter_mm"))
    assert "is a datetime" in str(error("reported_at = 'last week'", INC_CTX))
    assert "only be used in spatial functions" in str(error("geom = 1"))
    assert "comparison operator" in str(error("5"))


def test_property_to_property_comparison() -> None:
    assert render("from_depth_m < to_depth_m")[0] == '("from_depth_m" < "to_depth_m")'


def test_spatial_literal_is_transformed_not_the_column() -> None:
    text, params = render("S_INTERSECTS(geom, POINT(114.02 22.61))")
    assert text.startswith('ST_Intersects("geom", ST_Transform(')
    assert "ST_GeomFromText(%s, 4326)" in text and text.endswith(", 4547))")
    assert params[0] == "POINT(114.02 22.61)"
    # the geometry may be named 'geometry' and come second; other functions keep their order
    text, _ = render("S_WITHIN(geometry, BBOX(114.0, 22.6, 114.1, 22.7))")
    assert text.startswith('ST_Within("geom", ')
    text, _ = render("S_CONTAINS(POLYGON((114 22.6, 114.1 22.6, 114.1 22.7, 114 22.6)), geom)")
    assert text.startswith("ST_Contains(ST_Transform(") and text.endswith(', "geom")')


def test_filter_crs_axis_order_and_storage_crs() -> None:
    lat_lon = FilterContext(CTX.properties, "geom", parse_crs("EPSG:4490", "filter-crs"))
    _, params = to_sql("S_INTERSECTS(geom, BBOX(22.6, 114.0, 22.7, 114.1))", lat_lon)
    assert params[0] == "POLYGON((114 22.6,114.1 22.6,114.1 22.7,114 22.7,114 22.6))"
    storage = FilterContext(
        CTX.properties, "geom", parse_crs("http://www.opengis.net/def/crs/EPSG/0/4547", "x")
    )
    text, params = to_sql("S_INTERSECTS(geom, POINT(2500967.859 502131.609))", storage)
    assert text.as_string() == 'ST_Intersects("geom", ST_GeomFromText(%s, 4547))'
    assert params == ["POINT(502131.609 2500967.859)"]  # (northing, easting) -> x, y


def test_spatial_errors() -> None:
    assert "is not the geometry" in str(error("S_INTERSECTS(network, POINT(1 2))"))
    assert "needs the geometry property" in str(error("S_INTERSECTS(POINT(1 2), POINT(1 2))"))
    assert "latitude outside" in str(error("S_INTERSECTS(geom, POINT(114 95))"))
    assert "Self-intersection" in str(
        error("S_INTERSECTS(geom, POLYGON((0 0, 1 1, 1 0, 0 1, 0 0)))")
    )
    assert "not closed" in str(error("S_INTERSECTS(geom, POLYGON((0 0, 1 0, 1 1, 0 1)))"))
    assert "lower corner" in str(error("S_INTERSECTS(geom, BBOX(2, 2, 1, 1))"))
    assert "empty geometries" in str(error("S_INTERSECTS(geom, POINT EMPTY)"))


def test_world_sized_literals_are_clipped_to_the_storage_zone() -> None:
    text, params = render("S_INTERSECTS(geom, BBOX(-180, -90, 180, 90))")
    assert "ST_Intersection(" in text and "ST_MakeEnvelope(" in text
    window = params[1:5]
    assert window[0] <= 112.5 and window[2] >= 115.5  # EPSG:4547 zone: 112.5E .. 115.5E
    assert cql2.MAX_DEPTH == 20 and cql2.MAX_LENGTH == 2000


# --- Basic-CQL2 additions: arithmetic, CASEI/ACCENTI, temporal and array functions ---------


def test_arithmetic_precedence_signs_and_value_parentheses() -> None:
    from cimtwin.api.cql2 import Arithmetic

    tree = parse("a + b * c ^ 2 > 1")
    assert isinstance(tree, Comparison) and isinstance(tree.left, Arithmetic)
    assert tree.left.op == "+" and tree.left.right.op == "*" and tree.left.right.right.op == "^"
    # a sign after an operand is an operator; after an operator it belongs to the number
    assert parse("a-1 > 0").left == Arithmetic("-", Property("a", 1), Literal("number", 1, 3), 2)
    assert parse("a = -1").right == Literal("number", -1, 5)
    assert parse("a - -1 > 0").left.right == Literal("number", -1, 5)
    neg = parse("-a < 0").left
    assert neg == Arithmetic("*", Literal("number", -1, 1), Property("a", 2), 1)
    # a parenthesis closing before an operator groups a value; otherwise a condition
    tree = parse("(a + 1) * 2 > 3")
    assert isinstance(tree, Comparison) and tree.left.op == "*" and tree.left.left.op == "+"
    tree = parse("((a + 1) > 3 OR b = 2) AND c = 1")
    assert isinstance(tree, And) and isinstance(tree.items[0], Or)
    assert parse("a div 2 = 1").left.op == "div" and parse("a % 2 = 1").left.op == "%"


def test_arithmetic_compiles_with_real_division_and_checks_types() -> None:
    text, params = render("diameter_mm / 2 > 100 AND (from_depth_m + to_depth_m) / 2 >= 1.5")
    assert text == (
        '(((CAST("diameter_mm" AS double precision) / %s) > %s) AND '
        '((CAST(("from_depth_m" + "to_depth_m") AS double precision) / %s) >= %s))'
    )
    assert params == [2, 100, 2, 1.5]
    assert render("diameter_mm % 200 = 100")[0] == (
        '(mod(CAST("diameter_mm" AS numeric), CAST(%s AS numeric)) = %s)'
    )
    assert render("diameter_mm div 300 = 1")[0].startswith('(div(CAST("diameter_mm" AS numeric)')
    assert render("diameter_mm ^ 2 > 10")[0] == (
        '(power(CAST("diameter_mm" AS double precision), %s) > %s)'
    )
    assert "cannot compare the '+' operation (number) with property 'network'" in str(
        error("network + 1 > 2")
    )
    assert "is a number" in str(error("diameter_mm * 2 = 'x'"))
    exc = error("diameter_mm / 0 > 1")
    assert "division by zero" in str(exc) and exc.position == 15


def test_casei_and_accenti() -> None:
    from cimtwin.api.cql2 import StringFunction

    tree = parse("CASEI(material) = casei('pe')")
    assert tree.left == StringFunction("CASEI", Property("material", 7), 1)
    assert render("CASEI(material) = casei('pe')") == (
        '(lower("material") = lower(CAST(%s AS text)))',
        ["pe"],
    )
    text, params = render("ACCENTI(CASEI(owner)) LIKE CASEI(ACCENTI('%Shui%'))")
    assert text == '(unaccent(lower("owner")) LIKE lower(unaccent(CAST(%s AS text))))'
    assert params == ["%Shui%"]
    assert render("CASEI(network) IN ('js', 'ps')")[0] == '(lower("network") IN (%s, %s))'
    assert "CASEI takes a string, not property 'diameter_mm'" in str(
        error("CASEI(diameter_mm) = 'a'")
    )
    assert "CASEI takes a string" in str(error("CASEI(3) = 'a'"))
    assert "')' closing CASEI(" in str(error("CASEI(material = 'a'"))


def test_temporal_functions_compile_to_interval_comparisons() -> None:
    from cimtwin.api.cql2 import Interval, Temporal

    tree = parse("T_DURING(reported_at, INTERVAL('2026-11-01', '..'))")
    assert isinstance(tree, Temporal) and isinstance(tree.b, Interval)
    assert tree.b.start == Literal("date", date(2026, 11, 1), 32) and tree.b.end is None
    text, params = render(
        "T_DURING(reported_at, INTERVAL('2026-11-01T00:00:00Z', '2026-11-10T00:00:00Z'))",
        INC_CTX,
    )
    assert text == (
        '("reported_at" > CAST(%s AS timestamptz) AND "reported_at" < CAST(%s AS timestamptz))'
    )
    assert params == [datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC)]
    text, _ = render("T_AFTER(reported_at, DATE('2026-11-01'))", INC_CTX)
    assert text == '("reported_at" > CAST(%s AS timestamptz))'
    text, _ = render("T_BEFORE(reported_at, INTERVAL('..', updated_at))", INC_CTX)
    assert text == "(\"reported_at\" < CAST('-infinity' AS timestamptz))"
    text, _ = render(
        "T_INTERSECTS(INTERVAL(reported_at, updated_at), TIMESTAMP('2026-11-01T00:00:00Z'))",
        INC_CTX,
    )
    assert text == (
        '("reported_at" <= CAST(%s AS timestamptz) AND "updated_at" >= CAST(%s AS timestamptz))'
    )
    text, _ = render("T_DISJOINT(reported_at, updated_at)", INC_CTX)
    assert text == '("reported_at" > "updated_at" OR "reported_at" < "updated_at")'
    for func in cql2.TEMPORAL_FUNCTIONS:  # every one compiles
        assert render(f"{func}(reported_at, updated_at)", INC_CTX)[0].startswith("(")


def test_temporal_errors() -> None:
    assert "property 'severity' is a number" in str(
        error("T_BEFORE(severity, DATE('2026-11-01'))", INC_CTX)
    )
    assert "starts after it ends" in str(
        error("T_DURING(reported_at, INTERVAL('2026-12-01', '2026-11-01'))", INC_CTX)
    )
    exc = error("T_AFTER(reported_at, INTERVAL('soon', '..'))", INC_CTX)
    assert "INTERVAL end 'soon'" in str(exc) and exc.position == 31
    assert "T_AFTER takes a datetime property" in str(error("T_AFTER(reported_at, 5)", INC_CTX))
    assert "INTERVAL end is" in str(error("T_AFTER(reported_at, INTERVAL(5, '..'))", INC_CTX))


ARRAY_CTX = FilterContext(
    {"tags": "array:string", "codes": "array:integer", "name": "string"}, "geom"
)


def test_array_functions_need_array_queryables() -> None:
    from cimtwin.api.cql2 import ArrayLiteral, ArrayPredicate

    tree = parse("A_CONTAINS(tags, ('a', 'b'))")
    assert isinstance(tree, ArrayPredicate) and isinstance(tree.b, ArrayLiteral)
    assert [i.value for i in tree.b.items] == ["a", "b"]
    assert render("A_CONTAINS(tags, ('a', 'b'))", ARRAY_CTX) == (
        '(CAST("tags" AS text[]) @> CAST(%s AS text[]))',
        [["a", "b"]],
    )
    assert render("A_OVERLAPS(codes, (1, 2))", ARRAY_CTX)[0] == (
        '(CAST("codes" AS bigint[]) && CAST(%s AS bigint[]))'
    )
    assert " <@ " in render("A_CONTAINEDBY(tags, ('a'))", ARRAY_CTX)[0]
    assert " = " in render("A_EQUALS(tags, ())", ARRAY_CTX)[0]
    assert "is not an integer" in str(error("A_OVERLAPS(codes, (1.5))", ARRAY_CTX))
    assert "is a string" in str(error("A_OVERLAPS(tags, (1))", ARRAY_CTX))
    assert "nested arrays" in str(error("A_OVERLAPS(tags, (('a')))", ARRAY_CTX))
    assert "is an array: use A_EQUALS" in str(error("tags = 'a'", ARRAY_CTX))
    exc = error("A_CONTAINS(name, ('a'))", ARRAY_CTX)
    assert "'name' is not an array (array queryables: codes, tags)" in str(exc)
    # no collection of the catalogue has an array column: a clear 400 there
    exc = error("A_CONTAINS(network, ('JS'))")
    assert "'network' is not an array (this collection has none)" in str(exc)
    assert exc.position == 12


def test_sql_comments_are_named() -> None:
    assert "SQL comment" in str(error("network = 'JS' -- comment"))
    assert "SQL comment" in str(error("network = 'JS' /* x */"))


def test_conformance_lists_what_the_compiler_supports() -> None:
    from cimtwin.api.cql2_sql import CONFORMANCE, queryable_types
    from cimtwin.spatial.catalogue import COLLECTIONS

    names = {c.rsplit("/", 1)[1] for c in CONFORMANCE}
    assert {
        "cql2-text",
        "cql2-json",
        "basic-cql2",
        "case-insensitive-comparison",
        "accent-insensitive-comparison",
        "temporal-functions",
        "arithmetic",
        "spatial-functions",
        "property-property",
    } <= names
    has_arrays = any(
        t.startswith("array:") for layer in COLLECTIONS for t in queryable_types(layer).values()
    )
    assert ("array-functions" in names) == has_arrays
    assert "functions" not in names  # no custom functions (/functions) are offered


def test_negative_wkt_coordinates_are_numbers_not_subtractions() -> None:
    # 'POINT(1 -2)': after the operand 1 the lexer reads '-' as an operator; WKT takes it back
    assert parse("S_INTERSECTS(geom, POINT Z (1 -2 -3))").b.coords == (1.0, -2.0)
    ring = parse("S_INTERSECTS(geom, POLYGON((-1 -1, 1 -1, 1 1, -1 -1)))").b.coords[0]
    assert ring == [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, -1.0)]
    assert parse("S_INTERSECTS(geom, MULTIPOINT(1 -2, -3 4))").b.coords == [
        (1.0, -2.0),
        (-3.0, 4.0),
    ]
    assert "a number" in str(error("S_INTERSECTS(geom, POINT(1 - x))"))

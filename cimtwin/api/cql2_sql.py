"""CQL2 filters (CQL2-text via :mod:`cimtwin.api.cql2`, CQL2-JSON via
:mod:`cimtwin.api.cql2_json`) compiled to parameterised PostGIS SQL: only identifiers named in
the filter context (the layer catalogue) are emitted, every user value travels as a query
parameter, and every operand is type-checked against the queryables before SQL exists.

``CASEI`` is ``lower()``; ``ACCENTI`` is the ``unaccent`` extension (created by ``cimtwin db
setup`` when the server has it; a database without it answers 400). Temporal functions treat an
instant as the interval [t, t] and ``DATE('..')`` as midnight UTC, as comparisons do; the
relations are Allen's (``T_DURING``: strictly inside). Array functions need array queryables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from psycopg import sql

from cimtwin.api.cql2 import parse, parse_timestamp
from cimtwin.api.cql2_array import array_kind, array_predicate
from cimtwin.api.cql2_ast import (
    SPATIAL_FUNCTIONS,
    And,
    Arithmetic,
    ArrayPredicate,
    Between,
    Comparison,
    CQL2Error,
    GeometryLiteral,
    In,
    IsNull,
    Like,
    Literal,
    Not,
    Or,
    Property,
    Spatial,
    StringFunction,
    Temporal,
    describe,
    quote,
)
from cimtwin.api.cql2_geometry import geometry_sql
from cimtwin.api.cql2_json import parse_json
from cimtwin.api.cql2_temporal import temporal_predicate
from cimtwin.api.geojson import CrsDef, default_crs
from cimtwin.spatial.catalogue import COLLECTIONS, Layer

FILTER_LANGS = ("cql2-text", "cql2-json")
_CONF = "http://www.opengis.net/spec/cql2/1.0/conf/"


@dataclass(frozen=True)
class FilterContext:
    """What a filter may name: queryable properties (name -> type from ``Layer.column_type``,
    or ``array:<element type>``) and the geometry column, with the CRS of geometry literals."""

    properties: Mapping[str, str]
    geometry_column: str
    literal_crs: CrsDef = field(default_factory=default_crs)

    @property
    def geometry_names(self) -> set[str]:
        return {"geometry", self.geometry_column}


def queryable_types(layer: Layer) -> dict[str, str]:
    """The type of each queryable, arrays told apart (``column_type`` calls them strings)."""
    return {p: array_kind(layer, p) or layer.column_type(p) for p in layer.properties}


def context_for(layer: Layer, crs: CrsDef | None = None) -> FilterContext:
    return FilterContext(queryable_types(layer), layer.geometry_column, crs or default_crs())


#: CQL2 conformance classes this compiler implements; array functions only while some
#: collection has an array queryable (none does today: a filter using them answers 400)
CONFORMANCE: tuple[str, ...] = tuple(
    _CONF + c
    for c in (
        "cql2-text",
        "cql2-json",
        "basic-cql2",
        "advanced-comparison-operators",
        "case-insensitive-comparison",
        "accent-insensitive-comparison",
        "basic-spatial-functions",
        "basic-spatial-functions-plus",
        "spatial-functions",
        "temporal-functions",
        "property-property",
        "arithmetic",
        *(
            ("array-functions",)
            if any(
                t.startswith("array:")
                for layer in COLLECTIONS
                for t in queryable_types(layer).values()
            )
            else ()
        ),
    )
)

_FAMILY = {"integer": "number", "number": "number", "string": "string", "datetime": "datetime"}
_SQL_OPS = {"=": "=", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_WANT = {
    "number": "a number",
    "string": "a 'quoted string'",
    "datetime": "TIMESTAMP('...') or DATE('...')",
    "boolean": "TRUE or FALSE",
}


def midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


@dataclass
class Compiler:
    ctx: FilterContext
    params: list[Any] = field(default_factory=list)

    def bind(self, value: Any) -> sql.Composable:
        self.params.append(value)
        return sql.Placeholder()

    # --- operands -----------------------------------------------------------------------

    def prop_kind(self, node: Property) -> str:
        if node.name in self.ctx.geometry_names:
            raise CQL2Error(
                f"the geometry {node.name!r} can only be used in spatial functions "
                "such as S_INTERSECTS",
                node.pos,
            )
        kind = self.ctx.properties.get(node.name)
        if kind is None:
            allowed = ", ".join(sorted(self.ctx.properties))
            raise CQL2Error(
                f"unknown property {quote(node.name)} (queryables: {allowed})", node.pos
            )
        return kind

    def prop_family(self, node: Property) -> str:
        kind = self.prop_kind(node)
        if kind.startswith("array:"):
            return "array"
        family = _FAMILY.get(kind)
        if family is None:
            raise CQL2Error(f"property {node.name!r} ({kind}) cannot be compared", node.pos)
        return family

    def value(self, node: Any) -> tuple[sql.Composable, str]:
        """SQL and type family of a value expression that is not a bare literal."""
        if isinstance(node, Property):
            family = self.prop_family(node)
            if family == "array":
                raise CQL2Error(
                    f"{node.name!r} is an array: use A_EQUALS, A_CONTAINS, A_CONTAINEDBY "
                    "or A_OVERLAPS",
                    node.pos,
                )
            return sql.Identifier(node.name), family
        if isinstance(node, Literal):
            family = {"timestamp": "datetime", "date": "datetime"}.get(node.kind, node.kind)
            return self.literal(node, family, describe(node)), family
        if isinstance(node, Arithmetic):
            return self.arithmetic(node), "number"
        if isinstance(node, StringFunction):
            return self.string_function(node), "string"
        raise CQL2Error(f"{describe(node)} is not a value here", getattr(node, "pos", None))

    def literal(self, lit: Literal, family: str, other: str) -> sql.Composable:
        """Bind a literal used against ``other`` of ``family`` (type-checked)."""
        return self.bind(self.coerce(lit, family, other))

    @staticmethod
    def coerce(lit: Literal, family: str, other: str) -> Any:
        if family == "number" and lit.kind == "number":
            return lit.value
        if family in ("string", "boolean") and lit.kind == family:
            return lit.value
        if family == "datetime":
            if lit.kind == "timestamp":
                return lit.value
            if lit.kind == "date":
                return midnight(lit.value)
            if lit.kind == "string":
                value = parse_timestamp(lit.value)
                if value is not None:
                    return value
        raise CQL2Error(
            f"{other} is a {family}: compare it with {_WANT.get(family, family)}, "
            f"not the {lit.kind} literal {quote(lit.value)}",
            lit.pos,
        )

    def operand(self, node: Any, family: str, other: str) -> sql.Composable:
        """An operand meeting ``other`` (of ``family``): literals adapt, expressions must match."""
        if isinstance(node, Literal):
            return self.literal(node, family, other)
        expr, fam = self.value(node)
        if fam != family:
            raise CQL2Error(
                f"cannot compare {other} ({family}) with {describe(node)} ({fam})",
                getattr(node, "pos", None),
            )
        return expr

    def arithmetic(self, node: Arithmetic) -> sql.Composable:
        left = self.operand(node.left, "number", f"the {node.op!r} operation")
        right = self.operand(node.right, "number", f"the {node.op!r} operation")
        zero = isinstance(node.right, Literal) and node.right.value == 0
        if node.op in ("/", "%", "div") and zero:
            raise CQL2Error(f"division by zero ({node.op!r} 0)", node.right.pos)
        if node.op in ("+", "-", "*"):
            return sql.SQL("({} {} {})").format(left, sql.SQL(node.op), right)
        if node.op == "/":  # CQL2 '/' is real division, also between integer columns
            return sql.SQL("(CAST({} AS double precision) / {})").format(left, right)
        if node.op == "^":
            return sql.SQL("power(CAST({} AS double precision), {})").format(left, right)
        func = sql.SQL("mod" if node.op == "%" else "div")
        return sql.SQL("{}(CAST({} AS numeric), CAST({} AS numeric))").format(func, left, right)

    def string_function(self, node: StringFunction) -> sql.Composable:
        arg = node.arg
        if isinstance(arg, Literal):
            if arg.kind != "string":
                raise CQL2Error(f"{node.func} takes a string, not {describe(arg)}", arg.pos)
            inner: sql.Composable = sql.SQL("CAST({} AS text)").format(self.bind(arg.value))
        else:
            inner, fam = self.value(arg)
            if fam != "string":
                raise CQL2Error(
                    f"{node.func} takes a string, not {describe(arg)} ({fam})",
                    getattr(arg, "pos", None),
                )
        func = sql.SQL("lower" if node.func == "CASEI" else "unaccent")
        return sql.SQL("{}({})").format(func, inner)

    # --- conditions ---------------------------------------------------------------------

    def compile(self, node: Any) -> sql.Composable:
        if isinstance(node, And | Or):
            joiner = sql.SQL(" AND " if isinstance(node, And) else " OR ")
            return sql.SQL("({})").format(joiner.join(self.compile(i) for i in node.items))
        if isinstance(node, Not):
            return sql.SQL("(NOT {})").format(self.compile(node.item))
        if isinstance(node, Literal):
            if node.kind != "boolean":
                raise CQL2Error(
                    f"the {node.kind} literal {quote(node.value)} is not a condition", node.pos
                )
            return sql.SQL("TRUE" if node.value else "FALSE")
        if isinstance(node, Comparison):
            return self.comparison(node)
        if isinstance(node, Like):
            return self.like(node)
        if isinstance(node, Between):
            return self.between(node)
        if isinstance(node, In):
            return self.in_list(node)
        if isinstance(node, IsNull):
            return self.is_null(node)
        if isinstance(node, Spatial):
            return self.spatial(node)
        if isinstance(node, Temporal):
            return temporal_predicate(self, node)
        if isinstance(node, ArrayPredicate):
            return array_predicate(self, node)
        raise CQL2Error(f"{describe(node)} is not a condition", getattr(node, "pos", None))

    def comparison(self, node: Comparison) -> sql.Composable:
        op = sql.SQL(_SQL_OPS[node.op])
        a, b = node.left, node.right
        if isinstance(a, Literal) and isinstance(b, Literal):
            return self.constant_comparison(node)
        if isinstance(a, Literal):
            rb, fam = self.value(b)
            return sql.SQL("({} {} {})").format(self.literal(a, fam, describe(b)), op, rb)
        ra, fam = self.value(a)
        if fam == "boolean" and node.op not in ("=", "<>"):
            raise CQL2Error("booleans only compare with = and <>", node.pos)
        return sql.SQL("({} {} {})").format(ra, op, self.operand(b, fam, describe(a)))

    @staticmethod
    def constant_comparison(node: Comparison) -> sql.Composable:
        """Literal against literal (``1 = 1``): decided here, nothing reaches SQL."""
        a, b = node.left, node.right

        def norm(lit: Literal) -> tuple[str, Any]:
            if lit.kind == "date":
                return "datetime", midnight(lit.value)
            return ("datetime" if lit.kind == "timestamp" else lit.kind), lit.value

        (ka, va), (kb, vb) = norm(a), norm(b)
        if ka != kb:
            raise CQL2Error(
                f"cannot compare the {a.kind} literal {quote(a.value)} with the "
                f"{b.kind} literal {quote(b.value)}",
                node.pos,
            )
        if ka == "boolean" and node.op not in ("=", "<>"):
            raise CQL2Error("booleans only compare with = and <>", node.pos)
        result = {
            "=": va == vb,
            "<>": va != vb,
            "<": va < vb,
            "<=": va <= vb,
            ">": va > vb,
            ">=": va >= vb,
        }[node.op]
        return sql.SQL("TRUE" if result else "FALSE")

    def subject(self, node: Any, what: str) -> tuple[sql.Composable, str]:
        """The left side of LIKE, BETWEEN or IN: a property or an expression over one."""
        if isinstance(node, Literal):
            raise CQL2Error(
                f"{what} needs a property name on its left, not {describe(node)}", node.pos
            )
        return self.value(node)

    def like(self, node: Like) -> sql.Composable:
        expr, fam = self.subject(node.expr, "LIKE")
        if fam != "string":
            raise CQL2Error(
                f"LIKE needs a string property; {describe(node.expr)} is not",
                getattr(node.expr, "pos", node.pos),
            )
        pat = node.pattern
        if isinstance(pat, Literal) and pat.kind == "string":
            pattern = self.bind(pat.value)
        elif isinstance(pat, StringFunction):
            pattern = self.string_function(pat)
        else:
            raise CQL2Error(
                "LIKE needs a 'quoted pattern' with % and _ wildcards",
                getattr(pat, "pos", node.pos),
            )
        like = sql.SQL("NOT LIKE" if node.negated else "LIKE")
        return sql.SQL("({} {} {})").format(expr, like, pattern)

    def between(self, node: Between) -> sql.Composable:
        expr, fam = self.subject(node.expr, "BETWEEN")
        who = describe(node.expr)
        low = self.operand(node.low, fam, who)
        high = self.operand(node.high, fam, who)
        return sql.SQL("({} {} {} AND {})").format(
            expr, sql.SQL("NOT BETWEEN" if node.negated else "BETWEEN"), low, high
        )

    def in_list(self, node: In) -> sql.Composable:
        expr, fam = self.subject(node.expr, "IN")
        who = describe(node.expr)
        items = sql.SQL(", ").join(self.operand(i, fam, who) for i in node.items)
        return sql.SQL("({} {} ({}))").format(
            expr, sql.SQL("NOT IN" if node.negated else "IN"), items
        )

    def is_null(self, node: IsNull) -> sql.Composable:
        prop = node.expr
        col: sql.Composable
        if isinstance(prop, Property) and prop.name in self.ctx.geometry_names:
            col = sql.Identifier(self.ctx.geometry_column)
        elif isinstance(prop, Property):
            self.prop_kind(prop)  # any queryable, arrays and objects too
            col = sql.Identifier(prop.name)
        else:
            col, _ = self.subject(prop, "IS NULL")
        return sql.SQL("({} {})").format(col, sql.SQL("IS NOT NULL" if node.negated else "IS NULL"))

    def spatial(self, node: Spatial) -> sql.Composable:
        func = sql.SQL(SPATIAL_FUNCTIONS[node.func])
        if not any(isinstance(x, Property) for x in (node.a, node.b)):
            raise CQL2Error(f"{node.func} needs the geometry property as one argument", node.pos)
        args = [self.geometry_arg(x, node) for x in (node.a, node.b)]
        return sql.SQL("{}({}, {})").format(func, *args)

    def geometry_arg(self, arg: Any, node: Spatial) -> sql.Composable:
        if isinstance(arg, Property):
            if arg.name not in self.ctx.geometry_names:
                raise CQL2Error(
                    f"{node.func}: {quote(arg.name)} is not the geometry of this "
                    f"collection (use 'geometry' or "
                    f"{self.ctx.geometry_column!r})",
                    arg.pos,
                )
            return sql.Identifier(self.ctx.geometry_column)
        if not isinstance(arg, GeometryLiteral):
            raise CQL2Error(f"{node.func} takes geometries, not {describe(arg)}", arg.pos)
        expr, params = geometry_sql(arg, self.ctx.literal_crs)
        self.params.extend(params)
        return expr


def compile_filter(node: Any, ctx: FilterContext) -> tuple[sql.Composable, list[Any]]:
    """SQL condition and its parameters for a parsed filter."""
    compiler = Compiler(ctx)
    return compiler.compile(node), compiler.params


def to_sql(
    text: str, ctx: FilterContext, lang: str = "cql2-text"
) -> tuple[sql.Composable, list[Any]]:
    """Parse (CQL2-text or CQL2-JSON) and compile a filter against a collection's queryables."""
    tree = parse_json(text) if lang == "cql2-json" else parse(text)
    return compile_filter(tree, ctx)

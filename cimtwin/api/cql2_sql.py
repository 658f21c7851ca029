"""CQL2-text filters (parsed by :mod:`cimtwin.api.cql2`) compiled to parameterised PostGIS
SQL: only identifiers named in the filter context (the layer catalogue) are emitted, and every
user value travels as a query parameter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import shapely
from psycopg import sql

from cimtwin.api.cql2 import (
    SPATIAL_FUNCTIONS,
    And,
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
    describe,
    parse,
    parse_timestamp,
)
from cimtwin.api.geojson import (
    CrsDef,
    check_coordinates,
    default_crs,
    format_coord,
    literal_geometry_sql,
)


@dataclass(frozen=True)
class FilterContext:
    """What a filter may name: queryable properties (name -> type from ``Layer.column_type``)
    and the geometry column, with the CRS of geometry literals."""

    properties: Mapping[str, str]
    geometry_column: str
    literal_crs: CrsDef = field(default_factory=default_crs)

    @property
    def geometry_names(self) -> set[str]:
        return {"geometry", self.geometry_column}


_FAMILY = {"integer": "number", "number": "number", "string": "string", "datetime": "datetime"}
_SQL_OPS = {"=": "=", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass
class _Compiler:
    ctx: FilterContext
    params: list[Any] = field(default_factory=list)

    def bind(self, value: Any) -> sql.Composable:
        self.params.append(value)
        return sql.Placeholder()

    # operands
    def prop_family(self, node: Property) -> str:
        if node.name in self.ctx.geometry_names:
            raise CQL2Error(
                f"the geometry {node.name!r} can only be used in spatial functions "
                "such as S_INTERSECTS",
                node.pos,
            )
        kind = self.ctx.properties.get(node.name)
        if kind is None:
            allowed = ", ".join(sorted(self.ctx.properties))
            raise CQL2Error(f"unknown property {node.name!r} (queryables: {allowed})", node.pos)
        family = _FAMILY.get(kind)
        if family is None:
            raise CQL2Error(f"property {node.name!r} ({kind}) cannot be compared", node.pos)
        return family

    def column(self, node: Property) -> sql.Composable:
        return sql.Identifier(node.name)

    def literal_for(self, lit: Any, family: str, prop: Property) -> sql.Composable:
        """Bind a literal compared with a property of ``family`` (type-checked)."""
        if not isinstance(lit, Literal):
            raise CQL2Error(
                f"expected a literal to compare with {prop.name!r}", getattr(lit, "pos", None)
            )
        value = self.coerce(lit, family, prop.name)
        return self.bind(value)

    @staticmethod
    def coerce(lit: Literal, family: str, name: str) -> Any:
        if family == "number" and lit.kind == "number":
            return lit.value
        if family == "string" and lit.kind == "string":
            return lit.value
        if family == "datetime":
            if lit.kind == "timestamp":
                return lit.value
            if lit.kind == "date":
                d = lit.value
                return datetime(d.year, d.month, d.day, tzinfo=UTC)
            if lit.kind == "string":
                value = parse_timestamp(lit.value)
                if value is not None:
                    return value
        want = {
            "number": "a number",
            "string": "a 'quoted string'",
            "datetime": "TIMESTAMP('...') or DATE('...')",
        }[family]
        raise CQL2Error(
            f"property {name!r} is a {family}: compare it with {want}, "
            f"not the {lit.kind} literal {lit.value!r}",
            lit.pos,
        )

    # nodes
    def compile(self, node: Any) -> sql.Composable:
        if isinstance(node, And | Or):
            joiner = sql.SQL(" AND " if isinstance(node, And) else " OR ")
            return sql.SQL("({})").format(joiner.join(self.compile(i) for i in node.items))
        if isinstance(node, Not):
            return sql.SQL("(NOT {})").format(self.compile(node.item))
        if isinstance(node, Literal):
            if node.kind != "boolean":
                raise CQL2Error(
                    f"the {node.kind} literal {node.value!r} is not a condition", node.pos
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
        raise CQL2Error("unsupported expression")  # pragma: no cover

    def comparison(self, node: Comparison) -> sql.Composable:
        op = sql.SQL(_SQL_OPS[node.op])
        a, b = node.left, node.right
        if isinstance(a, Property) and isinstance(b, Property):
            fa, fb = self.prop_family(a), self.prop_family(b)
            if fa != fb:
                raise CQL2Error(
                    f"cannot compare {a.name!r} ({fa}) with {b.name!r} ({fb})", node.pos
                )
            return sql.SQL("({} {} {})").format(self.column(a), op, self.column(b))
        if isinstance(a, Property):
            fam = self.prop_family(a)
            return sql.SQL("({} {} {})").format(self.column(a), op, self.literal_for(b, fam, a))
        if isinstance(b, Property):
            fam = self.prop_family(b)
            lit = self.literal_for(a, fam, b)
            return sql.SQL("({} {} {})").format(lit, op, self.column(b))
        return self.constant_comparison(node)

    @staticmethod
    def constant_comparison(node: Comparison) -> sql.Composable:
        """Literal against literal (``1 = 1``): decided here, nothing reaches SQL."""
        a, b = node.left, node.right

        def norm(lit: Literal) -> tuple[str, Any]:
            if lit.kind == "date":
                d = lit.value
                return "datetime", datetime(d.year, d.month, d.day, tzinfo=UTC)
            return ("datetime" if lit.kind == "timestamp" else lit.kind), lit.value

        (ka, va), (kb, vb) = norm(a), norm(b)
        if ka != kb:
            raise CQL2Error(
                f"cannot compare the {a.kind} literal {a.value!r} with the "
                f"{b.kind} literal {b.value!r}",
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

    def require_property(self, node: Any, what: str) -> Property:
        if not isinstance(node, Property):
            raise CQL2Error(
                f"{what} needs a property name on its left, not {describe(node)}",
                getattr(node, "pos", None),
            )
        return node

    def like(self, node: Like) -> sql.Composable:
        prop = self.require_property(node.expr, "LIKE")
        if self.prop_family(prop) != "string":
            raise CQL2Error(f"LIKE needs a string property; {prop.name!r} is not", prop.pos)
        pat = node.pattern
        if not (isinstance(pat, Literal) and pat.kind == "string"):
            raise CQL2Error(
                "LIKE needs a 'quoted pattern' with % and _ wildcards",
                getattr(pat, "pos", node.pos),
            )
        return sql.SQL("({} {} {})").format(
            self.column(prop), sql.SQL("NOT LIKE" if node.negated else "LIKE"), self.bind(pat.value)
        )

    def between(self, node: Between) -> sql.Composable:
        prop = self.require_property(node.expr, "BETWEEN")
        fam = self.prop_family(prop)
        low = self.literal_for(node.low, fam, prop)
        high = self.literal_for(node.high, fam, prop)
        return sql.SQL("({} {} {} AND {})").format(
            self.column(prop), sql.SQL("NOT BETWEEN" if node.negated else "BETWEEN"), low, high
        )

    def in_list(self, node: In) -> sql.Composable:
        prop = self.require_property(node.expr, "IN")
        fam = self.prop_family(prop)
        items = sql.SQL(", ").join(self.literal_for(i, fam, prop) for i in node.items)
        return sql.SQL("({} {} ({}))").format(
            self.column(prop), sql.SQL("NOT IN" if node.negated else "IN"), items
        )

    def is_null(self, node: IsNull) -> sql.Composable:
        prop = self.require_property(node.expr, "IS NULL")
        col: sql.Composable
        if prop.name in self.ctx.geometry_names:
            col = sql.Identifier(self.ctx.geometry_column)
        else:
            self.prop_family_or_object(prop)
            col = self.column(prop)
        return sql.SQL("({} {})").format(col, sql.SQL("IS NOT NULL" if node.negated else "IS NULL"))

    def prop_family_or_object(self, prop: Property) -> None:
        if prop.name not in self.ctx.properties:
            self.prop_family(prop)  # raises the unknown-property error

    def spatial(self, node: Spatial) -> sql.Composable:
        func = sql.SQL(SPATIAL_FUNCTIONS[node.func])
        args = [self.geometry_arg(x, node) for x in (node.a, node.b)]
        if not any(isinstance(x, Property) for x in (node.a, node.b)):
            raise CQL2Error(f"{node.func} needs the geometry property as one argument", node.pos)
        return sql.SQL("{}({}, {})").format(func, *args)

    def geometry_arg(self, arg: Any, node: Spatial) -> sql.Composable:
        if isinstance(arg, Property):
            if arg.name not in self.ctx.geometry_names:
                raise CQL2Error(
                    f"{node.func}: {arg.name!r} is not the geometry of this "
                    f"collection (use 'geometry' or "
                    f"{self.ctx.geometry_column!r})",
                    arg.pos,
                )
            return sql.Identifier(self.ctx.geometry_column)
        expr, params = geometry_sql(arg, self.ctx.literal_crs)
        self.params.extend(params)
        return expr


def geometry_sql(geom: GeometryLiteral, crs: CrsDef) -> tuple[sql.Composable, list[Any]]:
    """Validate a geometry literal and give SQL for it in the storage CRS."""
    wkt, xs, ys = _wkt(geom, crs)
    try:
        check_coordinates(xs, ys, crs, f"{geom.kind} literal")
    except ValueError as exc:
        raise CQL2Error(str(exc), geom.pos) from None
    shape = shapely.from_wkt(wkt, on_invalid="ignore")
    if shape is None:
        raise CQL2Error(f"invalid {geom.kind} literal", geom.pos)
    if not shapely.is_valid(shape):
        reason = shapely.is_valid_reason(shape)
        raise CQL2Error(f"invalid {geom.kind} literal: {reason}", geom.pos)
    return literal_geometry_sql(wkt, (min(xs), min(ys), max(xs), max(ys)), crs)


def _wkt(geom: GeometryLiteral, crs: CrsDef) -> tuple[str, list[float], list[float]]:
    """WKT in (easting, northing) order of ``crs``, and every x and y for checks."""
    xs: list[float] = []
    ys: list[float] = []

    def put(x: float, y: float) -> str:
        xs.append(x)
        ys.append(y)
        return f"{format_coord(x)} {format_coord(y)}"

    def pt(c: tuple[float, float]) -> str:
        return put(*crs.to_xy(c[0], c[1]))

    def seq(cs: list) -> str:
        return "(" + ",".join(pt(c) for c in cs) + ")"

    def body(g: GeometryLiteral) -> str:
        k, c = g.kind, g.coords
        if k == "BBOX":
            a0, b0, a1, b1 = c
            x0, y0 = crs.to_xy(a0, b0)
            x1, y1 = crs.to_xy(a1, b1)
            if x0 > x1 or y0 > y1:
                raise CQL2Error("BBOX lower corner exceeds its upper corner", g.pos)
            return (
                f"POLYGON(({put(x0, y0)},{put(x1, y0)},{put(x1, y1)},{put(x0, y1)},{put(x0, y0)}))"
            )
        if k == "POINT":
            return f"POINT({pt(c)})"
        if k == "LINESTRING":
            return f"LINESTRING{seq(c)}"
        if k == "POLYGON":
            return "POLYGON(" + ",".join(seq(r) for r in c) + ")"
        if k == "MULTIPOINT":
            return "MULTIPOINT(" + ",".join(f"({pt(p)})" for p in c) + ")"
        if k == "MULTILINESTRING":
            return "MULTILINESTRING(" + ",".join(seq(ln) for ln in c) + ")"
        if k == "MULTIPOLYGON":
            return (
                "MULTIPOLYGON("
                + ",".join("(" + ",".join(seq(r) for r in poly) + ")" for poly in c)
                + ")"
            )
        return "GEOMETRYCOLLECTION(" + ",".join(body(m) for m in c) + ")"

    return body(geom), xs, ys


def compile_filter(node: Any, ctx: FilterContext) -> tuple[sql.Composable, list[Any]]:
    """SQL condition and its parameters for a parsed filter."""
    compiler = _Compiler(ctx)
    return compiler.compile(node), compiler.params


def to_sql(text: str, ctx: FilterContext) -> tuple[sql.Composable, list[Any]]:
    """Parse and compile a CQL2-text filter against a collection's queryables."""
    return compile_filter(parse(text), ctx)

"""A CQL2-text subset (OGC API - Features Part 3) compiled to parameterised PostGIS SQL.

Supported: comparisons (``= <> < <= > >=``), ``[NOT] LIKE``, ``[NOT] BETWEEN .. AND ..``,
``[NOT] IN (..)``, ``IS [NOT] NULL``, ``AND`` / ``OR`` / ``NOT`` with parentheses, literals
(numbers, 'strings' with '' escapes, TRUE/FALSE, ``TIMESTAMP('..')``, ``DATE('..')``) and the
spatial functions ``S_INTERSECTS`` (and ``S_DISJOINT``, ``S_WITHIN``, ``S_CONTAINS``,
``S_TOUCHES``, ``S_OVERLAPS``, ``S_CROSSES``, ``S_EQUALS``) between the geometry and a WKT
literal (POINT, LINESTRING, POLYGON, MULTI*, GEOMETRYCOLLECTION) or ``BBOX(..)``.

The tokenizer and the recursive-descent parser are hand-written and bounded (``MAX_LENGTH``
characters, ``MAX_DEPTH`` levels). The compiler only emits identifiers named in the filter
context (the layer catalogue), and every user value travels as a query parameter.
Positions in error messages are 1-based character offsets into the filter text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import shapely
from psycopg import sql

from cimtwin.api.geojson import (
    CrsDef,
    check_coordinates,
    default_crs,
    format_coord,
    literal_geometry_sql,
)

MAX_LENGTH = 2000
MAX_DEPTH = 20


class CQL2Error(ValueError):
    """A filter that cannot be parsed or does not fit the collection."""

    def __init__(self, message: str, position: int | None = None) -> None:
        self.message = message
        self.position = position
        super().__init__(message if position is None else f"{message} at position {position}")


# --- tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # NUM STR IDENT QIDENT OP LP RP COMMA EOF
    value: Any
    pos: int  # 1-based
    text: str


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_IDENT = re.compile(r"[^\W\d]\w*")
_OPERATORS = ("<=", ">=", "<>", "=", "<", ">")
_PUNCT = {"(": "LP", ")": "RP", ",": "COMMA"}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        pos = i + 1
        if c in ("'", '"'):
            j, buf = i + 1, []
            while True:
                if j >= n:
                    what = "string literal" if c == "'" else "quoted property name"
                    raise CQL2Error(f"unterminated {what} starting with {text[i : i + 12]!r}", pos)
                if text[j] == c:
                    if j + 1 < n and text[j + 1] == c:
                        buf.append(c)
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            value = "".join(buf)
            if c == '"' and not value:
                raise CQL2Error("empty quoted property name", pos)
            tokens.append(Token("STR" if c == "'" else "QIDENT", value, pos, text[i : j + 1]))
            i = j + 1
            continue
        if c in _PUNCT:
            tokens.append(Token(_PUNCT[c], c, pos, c))
            i += 1
            continue
        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op:
            tokens.append(Token("OP", op, pos, op))
            i += len(op)
            continue
        m = _NUMBER.match(text, i)
        if m:
            t = m.group()
            tokens.append(Token("NUM", int(t) if _INTEGER.fullmatch(t) else float(t), pos, t))
            i = m.end()
            continue
        m = _IDENT.match(text, i)
        if m:
            tokens.append(Token("IDENT", m.group(), pos, m.group()))
            i = m.end()
            continue
        hint = " (CQL2 writes 'not equal' as <>)" if c == "!" else ""
        raise CQL2Error(f"unexpected character {c!r}{hint}", pos)
    tokens.append(Token("EOF", None, n + 1, ""))
    return tokens


# --- syntax tree ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    kind: str  # number, string, boolean, timestamp, date
    value: Any
    pos: int


@dataclass(frozen=True)
class Property:
    name: str
    pos: int


@dataclass(frozen=True)
class GeometryLiteral:
    """WKT geometry (coordinates as written, Z dropped) or a BBOX (kind 'BBOX')."""

    kind: str
    coords: Any
    pos: int


@dataclass(frozen=True)
class Comparison:
    op: str
    left: Any
    right: Any
    pos: int


@dataclass(frozen=True)
class Like:
    expr: Any
    pattern: Any
    negated: bool
    pos: int


@dataclass(frozen=True)
class Between:
    expr: Any
    low: Any
    high: Any
    negated: bool
    pos: int


@dataclass(frozen=True)
class In:
    expr: Any
    items: tuple[Any, ...]
    negated: bool
    pos: int


@dataclass(frozen=True)
class IsNull:
    expr: Any
    negated: bool
    pos: int


@dataclass(frozen=True)
class And:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Not:
    item: Any


@dataclass(frozen=True)
class Spatial:
    func: str
    a: Any
    b: Any
    pos: int


SPATIAL_FUNCTIONS = {
    "S_INTERSECTS": "ST_Intersects",
    "S_DISJOINT": "ST_Disjoint",
    "S_WITHIN": "ST_Within",
    "S_CONTAINS": "ST_Contains",
    "S_TOUCHES": "ST_Touches",
    "S_OVERLAPS": "ST_Overlaps",
    "S_CROSSES": "ST_Crosses",
    "S_EQUALS": "ST_Equals",
}
GEOMETRY_TYPES = (
    "POINT",
    "LINESTRING",
    "POLYGON",
    "MULTIPOINT",
    "MULTILINESTRING",
    "MULTIPOLYGON",
    "GEOMETRYCOLLECTION",
    "BBOX",
)
KEYWORDS = {
    "AND",
    "OR",
    "NOT",
    "LIKE",
    "BETWEEN",
    "IN",
    "IS",
    "NULL",
    "TRUE",
    "FALSE",
    "TIMESTAMP",
    "DATE",
    *SPATIAL_FUNCTIONS,
    *GEOMETRY_TYPES,
}


# --- parser ---------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    # helpers
    def peek(self, k: int = 0) -> Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.peek()
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return tok

    @staticmethod
    def kw(tok: Token) -> str | None:
        return tok.value.upper() if tok.kind == "IDENT" else None

    def accept_kw(self, word: str) -> Token | None:
        if self.kw(self.peek()) == word:
            return self.advance()
        return None

    def error(self, expected: str, tok: Token | None = None) -> CQL2Error:
        tok = tok or self.peek()
        got = "end of filter" if tok.kind == "EOF" else repr(tok.text)
        return CQL2Error(f"expected {expected}, got {got}", tok.pos)

    def expect(self, kind: str, expected: str) -> Token:
        if self.peek().kind != kind:
            raise self.error(expected)
        return self.advance()

    def expect_kw(self, word: str) -> Token:
        if self.kw(self.peek()) != word:
            raise self.error(word)
        return self.advance()

    def enter(self, tok: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CQL2Error(f"filter nested deeper than {MAX_DEPTH} levels", tok.pos)

    def leave(self) -> None:
        self.depth -= 1

    # grammar
    def parse(self) -> Any:
        node = self.or_expr()
        if self.peek().kind != "EOF":
            raise self.error("AND, OR or the end of the filter")
        return node

    def or_expr(self) -> Any:
        items = [self.and_expr()]
        while self.accept_kw("OR"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Any:
        items = [self.not_expr()]
        while self.accept_kw("AND"):
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Any:
        tok = self.peek()
        if self.kw(tok) == "NOT":
            self.advance()
            self.enter(tok)
            node = Not(self.not_expr())
            self.leave()
            return node
        return self.primary()

    def primary(self) -> Any:
        tok = self.peek()
        if tok.kind == "LP":
            self.advance()
            self.enter(tok)
            node = self.or_expr()
            self.expect("RP", "')'")
            self.leave()
            return node
        if self.kw(tok) in SPATIAL_FUNCTIONS and self.peek(1).kind == "LP":
            return self.spatial()
        return self.predicate()

    def predicate(self) -> Any:
        left = self.scalar()
        tok = self.peek()
        if tok.kind == "OP":
            self.advance()
            return Comparison(tok.value, left, self.scalar(), tok.pos)
        word = self.kw(tok)
        negated = False
        if word == "NOT":
            self.advance()
            negated = True
            tok = self.peek()
            word = self.kw(tok)
            if word not in ("LIKE", "BETWEEN", "IN"):
                raise self.error("LIKE, BETWEEN or IN after NOT")
        if word == "LIKE":
            self.advance()
            return Like(left, self.scalar(), negated, tok.pos)
        if word == "BETWEEN":
            self.advance()
            low = self.scalar()
            self.expect_kw("AND")
            return Between(left, low, self.scalar(), negated, tok.pos)
        if word == "IN":
            self.advance()
            self.expect("LP", "'(' after IN")
            items = [self.scalar()]
            while self.peek().kind == "COMMA":
                self.advance()
                items.append(self.scalar())
            self.expect("RP", "',' or ')' in the IN list")
            return In(left, tuple(items), negated, tok.pos)
        if word == "IS":
            self.advance()
            neg = self.accept_kw("NOT") is not None
            self.expect_kw("NULL")
            return IsNull(left, neg, tok.pos)
        if isinstance(left, Literal) and left.kind == "boolean":
            return left
        raise self.error(f"a comparison operator, LIKE, BETWEEN, IN or IS after {_describe(left)}")

    def scalar(self) -> Any:
        tok = self.advance()
        if tok.kind == "NUM":
            return Literal("number", tok.value, tok.pos)
        if tok.kind == "STR":
            return Literal("string", tok.value, tok.pos)
        if tok.kind == "QIDENT":
            return Property(tok.value, tok.pos)
        if tok.kind == "IDENT":
            word = tok.value.upper()
            if word in ("TRUE", "FALSE"):
                return Literal("boolean", word == "TRUE", tok.pos)
            if word in ("TIMESTAMP", "DATE") and self.peek().kind == "LP":
                return self.temporal(word, tok)
            if word in KEYWORDS:
                raise self.error("a property name or a literal", tok)
            if self.peek().kind == "LP":
                raise CQL2Error(f"unknown function {tok.text!r}", tok.pos)
            return Property(tok.value, tok.pos)
        raise self.error("a property name or a literal", tok)

    def temporal(self, word: str, tok: Token) -> Literal:
        self.expect("LP", "'('")
        s = self.expect("STR", f"a quoted {word.lower()} string")
        self.expect("RP", "')'")
        if word == "DATE":
            try:
                if len(s.value) != 10:
                    raise ValueError
                return Literal("date", date.fromisoformat(s.value), tok.pos)
            except ValueError:
                raise CQL2Error(f"DATE({s.text}) is not a YYYY-MM-DD date", s.pos) from None
        value = parse_timestamp(s.value)
        if value is None:
            raise CQL2Error(f"TIMESTAMP({s.text}) is not an RFC 3339 date-time", s.pos)
        return Literal("timestamp", value, tok.pos)

    def spatial(self) -> Spatial:
        tok = self.advance()
        self.expect("LP", "'('")
        a = self.spatial_arg()
        self.expect("COMMA", "','")
        b = self.spatial_arg()
        self.expect("RP", "')'")
        return Spatial(tok.value.upper(), a, b, tok.pos)

    def spatial_arg(self) -> Any:
        tok = self.peek()
        if self.kw(tok) in GEOMETRY_TYPES:
            return self.geometry()
        if tok.kind == "QIDENT" or (tok.kind == "IDENT" and self.kw(tok) not in KEYWORDS):
            self.advance()
            return Property(tok.value, tok.pos)
        raise self.error(
            "a geometry property or a geometry literal (POINT, LINESTRING, "
            "POLYGON, MULTI..., GEOMETRYCOLLECTION, BBOX)"
        )

    # WKT
    def geometry(self) -> GeometryLiteral:
        tok = self.advance()
        kind = tok.value.upper()
        self.enter(tok)
        if kind == "BBOX":
            self.expect("LP", "'(' after BBOX")
            nums = [self.number()]
            while self.peek().kind == "COMMA":
                self.advance()
                nums.append(self.number())
            self.expect("RP", "')'")
            if len(nums) not in (4, 6):
                raise CQL2Error(f"BBOX needs 4 (or 6) numbers, got {len(nums)}", tok.pos)
            if len(nums) == 6:
                nums = [nums[0], nums[1], nums[3], nums[4]]
            geom = GeometryLiteral("BBOX", tuple(nums), tok.pos)
        else:
            if self.kw(self.peek()) in ("Z", "M", "ZM"):
                self.advance()
            if self.kw(self.peek()) == "EMPTY":
                raise CQL2Error("empty geometries are not supported", self.peek().pos)
            geom = GeometryLiteral(kind, self.geometry_body(kind), tok.pos)
        self.leave()
        return geom

    def geometry_body(self, kind: str) -> Any:
        if kind == "POINT":
            self.expect("LP", "'('")
            pt = self.coord()
            self.expect("RP", "')'")
            return pt
        if kind == "LINESTRING":
            return self.coord_list(2)
        if kind == "POLYGON":
            return self.polygon()
        if kind == "MULTIPOINT":
            return self.parenthesised(self.multipoint_member)
        if kind == "MULTILINESTRING":
            return self.parenthesised(lambda: self.coord_list(2))
        if kind == "MULTIPOLYGON":
            return self.parenthesised(self.polygon)
        if kind == "GEOMETRYCOLLECTION":
            return self.parenthesised(self.collection_member)
        raise self.error("a geometry type")  # pragma: no cover

    def collection_member(self) -> GeometryLiteral:
        if self.kw(self.peek()) not in GEOMETRY_TYPES or self.kw(self.peek()) == "BBOX":
            raise self.error("a WKT geometry")
        return self.geometry()

    def multipoint_member(self) -> tuple[float, float]:
        if self.peek().kind == "LP":
            self.advance()
            pt = self.coord()
            self.expect("RP", "')'")
            return pt
        return self.coord()

    def parenthesised(self, item) -> list:
        self.expect("LP", "'('")
        items = [item()]
        while self.peek().kind == "COMMA":
            self.advance()
            items.append(item())
        self.expect("RP", "',' or ')'")
        return items

    def polygon(self) -> list:
        rings = self.parenthesised(lambda: self.coord_list(4))
        for ring in rings:
            if ring[0] != ring[-1]:
                raise CQL2Error(
                    "polygon ring is not closed (first and last points differ)", self.peek().pos
                )
        return rings

    def coord_list(self, minimum: int) -> list:
        start = self.peek()
        pts = self.parenthesised(self.coord)
        if len(pts) < minimum:
            raise CQL2Error(f"expected at least {minimum} points, got {len(pts)}", start.pos)
        return pts

    def coord(self) -> tuple[float, float]:
        x = self.number()
        y = self.number()
        if self.peek().kind == "NUM":  # Z (and M) are accepted and dropped
            self.advance()
            if self.peek().kind == "NUM":
                self.advance()
        return (x, y)

    def number(self) -> float:
        tok = self.peek()
        if tok.kind != "NUM":
            raise self.error("a number")
        self.advance()
        return float(tok.value)


def _describe(node: Any) -> str:
    if isinstance(node, Property):
        return f"property {node.name!r}"
    if isinstance(node, Literal):
        return f"the {node.kind} literal {node.value!r}"
    return "the expression"


def parse_timestamp(text: str) -> datetime | None:
    t = text.strip()
    if "T" not in t.upper():
        return None
    try:
        value = datetime.fromisoformat(t[:-1] + "+00:00" if t[-1:] in "zZ" else t)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse(text: str) -> Any:
    """Syntax tree of a CQL2-text filter (no check against a collection)."""
    if len(text) > MAX_LENGTH:
        raise CQL2Error(f"filter longer than {MAX_LENGTH} characters", MAX_LENGTH + 1)
    if not text.strip():
        raise CQL2Error("empty filter", 1)
    return _Parser(text).parse()


# --- compiler -------------------------------------------------------------------------------


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
                f"{what} needs a property name on its left, not {_describe(node)}",
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

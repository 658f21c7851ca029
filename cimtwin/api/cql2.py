"""A CQL2-text subset (OGC API - Features Part 3): tokens, syntax tree and parser (compiled to
SQL by :mod:`cimtwin.api.cql2_sql`).

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
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from cimtwin.errors import CQL2Error

MAX_LENGTH = 2000
MAX_DEPTH = 20


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
        raise self.error(f"a comparison operator, LIKE, BETWEEN, IN or IS after {describe(left)}")

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


def describe(node: Any) -> str:
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

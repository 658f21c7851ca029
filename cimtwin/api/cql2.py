"""CQL2-text (OGC API - Features Part 3, CQL2 1.0): tokens and a parser building the tree of
:mod:`cimtwin.api.cql2_ast` (CQL2-JSON is read by :mod:`cimtwin.api.cql2_json`; both are
compiled to SQL by :mod:`cimtwin.api.cql2_sql`).

Supported: comparisons (``= <> < <= > >=``), ``[NOT] LIKE``, ``[NOT] BETWEEN .. AND ..``,
``[NOT] IN (..)``, ``IS [NOT] NULL``, ``AND`` / ``OR`` / ``NOT`` with parentheses, literals
(numbers, 'strings' with '' escapes, TRUE/FALSE, ``TIMESTAMP('..')``, ``DATE('..')``,
``INTERVAL(.., ..)``), arithmetic (``+ - * / % ^ div``), ``CASEI()`` and ``ACCENTI()``, the
spatial functions ``S_INTERSECTS`` (and ``S_DISJOINT``, ``S_WITHIN``, ``S_CONTAINS``,
``S_TOUCHES``, ``S_OVERLAPS``, ``S_CROSSES``, ``S_EQUALS``) between the geometry and a WKT
literal (POINT, LINESTRING, POLYGON, MULTI*, GEOMETRYCOLLECTION) or ``BBOX(..)``, the temporal
functions ``T_AFTER`` .. ``T_STARTS`` and the array functions ``A_EQUALS``, ``A_CONTAINS``,
``A_CONTAINEDBY``, ``A_OVERLAPS`` with ``( .. )`` array literals.

Why a hand-written parser rather than the ``cql2`` package (cql2-rs bindings, evaluated for
issue 14): cql2-rs 0.6 turns every number into a float (``diameter_mm = 300`` arrives as
``300.0``), accepts what CQL2 is not (``!=``, ``AND = 1`` as a property named AND, ``foo(1)``,
``DATE('2026-13-01')``, ``POINT(1)`` as a function call), rejects ``.5``, and reports only a
line:column with its grammar's rule names ("expected GEOMETRY, Identifier, Negative, ...");
its JSON validation says only "not valid under any of the schemas listed in the 'oneOf'
keyword". The tests here ask for errors that name the token and its position, so the parser
stays ours; the tests use cql2-rs as a reference, checking that its CQL2-JSON translation
of each text filter compiles to the same SQL as our text parser gives.

The tokenizer and the recursive-descent parser are bounded (``MAX_LENGTH`` characters,
``MAX_DEPTH`` levels). Positions in error messages are 1-based character offsets.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from cimtwin.api.cql2_ast import (
    ARRAY_FUNCTIONS,
    GEOMETRY_TYPES,
    SPATIAL_FUNCTIONS,
    STRING_FUNCTIONS,
    TEMPORAL_FUNCTIONS,
    And,
    Arithmetic,
    ArrayLiteral,
    ArrayPredicate,
    Between,
    Comparison,
    CQL2Error,
    GeometryLiteral,
    In,
    Interval,
    IsNull,
    Like,
    Literal,
    Not,
    Or,
    Pos,
    Property,
    Spatial,
    StringFunction,
    Temporal,
    describe,
)
from cimtwin.api.cql2_lexer import KEYWORDS, Token, tokenize
from cimtwin.api.inputs import shown

__all__ = [
    "ARRAY_FUNCTIONS",
    "GEOMETRY_TYPES",
    "SPATIAL_FUNCTIONS",
    "TEMPORAL_FUNCTIONS",
    "And",
    "Arithmetic",
    "ArrayLiteral",
    "ArrayPredicate",
    "Between",
    "CQL2Error",
    "Comparison",
    "GeometryLiteral",
    "In",
    "Interval",
    "IsNull",
    "Like",
    "Literal",
    "Not",
    "Or",
    "Property",
    "Spatial",
    "StringFunction",
    "Temporal",
    "describe",
    "parse",
    "parse_date",
    "parse_timestamp",
]

MAX_LENGTH = 2000
MAX_DEPTH = 20


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
        got = "end of filter" if tok.kind == "EOF" else shown(tok.text)
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
        if tok.kind == "LP" and not self.value_follows_group():
            self.advance()
            self.enter(tok)
            node = self.or_expr()
            self.expect("RP", "')'")
            self.leave()
            return node
        word = self.kw(tok)
        if self.peek(1).kind == "LP":
            if word in SPATIAL_FUNCTIONS:
                return self.spatial()
            if word in TEMPORAL_FUNCTIONS:
                return self.binary_function(Temporal, self.temporal_arg)
            if word in ARRAY_FUNCTIONS:
                return self.binary_function(ArrayPredicate, self.array_arg)
        return self.predicate()

    def value_follows_group(self) -> bool:
        """Whether the parenthesis opening here closes before an operator, as in
        ``(a + 1) * 2 > 3``: then it groups a value, not a condition."""
        depth = 0
        for k in range(self.i, len(self.tokens)):
            kind = self.tokens[k].kind
            if kind == "LP":
                depth += 1
            elif kind == "RP":
                depth -= 1
                if depth == 0:
                    nxt = self.tokens[k + 1] if k + 1 < len(self.tokens) else None
                    return nxt is not None and (
                        nxt.kind in ("OP", "ARITH")
                        or self.kw(nxt) in ("LIKE", "BETWEEN", "IN", "IS", "NOT", "DIV")
                    )
            elif kind == "EOF":
                return False
        return False

    def predicate(self) -> Any:
        left = self.value()
        tok = self.peek()
        if tok.kind == "OP":
            self.advance()
            return Comparison(tok.value, left, self.value(), tok.pos)
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
            return Like(left, self.value(), negated, tok.pos)
        if word == "BETWEEN":
            self.advance()
            low = self.value()
            self.expect_kw("AND")
            return Between(left, low, self.value(), negated, tok.pos)
        if word == "IN":
            self.advance()
            self.expect("LP", "'(' after IN")
            items = [self.value()]
            while self.peek().kind == "COMMA":
                self.advance()
                items.append(self.value())
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

    # arithmetic: value = term {(+|-) term}; term = power {(*|/|%|div) power};
    # power = factor [^ factor]; factor = [-] operand | ( value )
    def value(self) -> Any:
        node = self.term()
        while self.peek().kind == "ARITH" and self.peek().value in "+-":
            tok = self.advance()
            node = Arithmetic(tok.value, node, self.term(), tok.pos)
        return node

    def term(self) -> Any:
        node = self.power()
        while (self.peek().kind == "ARITH" and self.peek().value in "*/%") or self.kw(
            self.peek()
        ) == "DIV":
            tok = self.advance()
            op = "div" if tok.kind == "IDENT" else tok.value
            node = Arithmetic(op, node, self.power(), tok.pos)
        return node

    def power(self) -> Any:
        node = self.factor()
        if self.peek().kind == "ARITH" and self.peek().value == "^":
            tok = self.advance()
            node = Arithmetic("^", node, self.factor(), tok.pos)
        return node

    def factor(self) -> Any:
        tok = self.peek()
        if tok.kind == "LP":
            self.advance()
            self.enter(tok)
            node = self.value()
            self.expect("RP", "')' or an arithmetic operator")
            self.leave()
            return node
        if tok.kind == "ARITH" and tok.value in "+-":
            self.advance()
            self.enter(tok)
            node = self.factor()
            self.leave()
            if tok.value == "+":
                return node
            if isinstance(node, Literal) and node.kind == "number":
                return Literal("number", -node.value, tok.pos)
            return Arithmetic("*", Literal("number", -1, tok.pos), node, tok.pos)
        return self.scalar()

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
            if word in STRING_FUNCTIONS and self.peek().kind == "LP":
                self.advance()
                self.enter(tok)
                arg = self.value()
                self.expect("RP", f"')' closing {word}(")
                self.leave()
                return StringFunction(word, arg, tok.pos)
            if word in KEYWORDS:
                raise self.error("a property name or a literal", tok)
            if self.peek().kind == "LP":
                raise CQL2Error(f"unknown function {shown(tok.text)}", tok.pos)
            return Property(tok.value, tok.pos)
        raise self.error("a property name or a literal", tok)

    def temporal(self, word: str, tok: Token) -> Literal:
        self.expect("LP", "'('")
        s = self.expect("STR", f"a quoted {word.lower()} string")
        self.expect("RP", "')'")
        if word == "DATE":
            day = parse_date(s.value)
            if day is None:
                raise CQL2Error(f"DATE({s.text}) is not a YYYY-MM-DD date", s.pos)
            return Literal("date", day, tok.pos)
        value = parse_timestamp(s.value)
        if value is None:
            raise CQL2Error(f"TIMESTAMP({s.text}) is not an RFC 3339 date-time", s.pos)
        return Literal("timestamp", value, tok.pos)

    def binary_function(self, node: type, arg: Any) -> Any:
        tok = self.advance()
        self.expect("LP", "'('")
        self.enter(tok)
        a = arg()
        self.expect("COMMA", "','")
        b = arg()
        self.expect("RP", "')'")
        self.leave()
        return node(tok.value.upper(), a, b, tok.pos)

    def temporal_arg(self) -> Any:
        tok = self.peek()
        if self.kw(tok) == "INTERVAL" and self.peek(1).kind == "LP":
            self.advance()
            self.advance()
            start = self.instant()
            self.expect("COMMA", "',' between the ends of the INTERVAL")
            end = self.instant()
            self.expect("RP", "')' closing the INTERVAL")
            return Interval(start, end, tok.pos)
        return self.scalar()

    def instant(self) -> Literal | Property | None:
        """An end of an INTERVAL: '..' (open), a date or timestamp string, DATE(..),
        TIMESTAMP(..) or a property."""
        tok = self.peek()
        if tok.kind == "STR":
            self.advance()
            return instant_literal(tok.value, tok.pos, shown(tok.value))
        node = self.scalar()
        if isinstance(node, Property) or (
            isinstance(node, Literal) and node.kind in ("date", "timestamp")
        ):
            return node
        raise CQL2Error(
            f"an INTERVAL end is '..', a date or timestamp, or a property, not {describe(node)}",
            tok.pos,
        )

    def array_arg(self) -> Any:
        tok = self.peek()
        if tok.kind == "LP":
            self.advance()
            self.enter(tok)
            items: list[Any] = []
            if self.peek().kind != "RP":
                items.append(self.array_arg())
                while self.peek().kind == "COMMA":
                    self.advance()
                    items.append(self.array_arg())
            self.expect("RP", "',' or ')' in the array")
            self.leave()
            return ArrayLiteral(tuple(items), tok.pos)
        return self.value()

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
        if self.at_number():  # Z (and M) are accepted and dropped
            self.number()
            if self.at_number():
                self.number()
        return (x, y)

    def at_number(self) -> bool:
        tok = self.peek()
        signed = tok.kind == "ARITH" and tok.value in "+-" and self.peek(1).kind == "NUM"
        return tok.kind == "NUM" or signed

    def number(self) -> float:
        """A coordinate: the lexer reads '-2' in 'POINT(1 -2)' as a minus after an operand."""
        tok = self.peek()
        if not self.at_number():
            raise self.error("a number")
        self.advance()
        if tok.kind == "ARITH":
            return float(self.advance().value) * (-1 if tok.value == "-" else 1)
        return float(tok.value)


def parse_date(text: str) -> date | None:
    """A YYYY-MM-DD date, or None."""
    if len(text) != 10:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def instant_literal(text: str, pos: Pos, shown: str) -> Literal | None:
    """An INTERVAL end written as a string: '..' (open, None), a date or an RFC 3339 instant."""
    if text == "..":
        return None
    day = parse_date(text)
    if day is not None:
        return Literal("date", day, pos)
    moment = parse_timestamp(text)
    if moment is None:
        raise CQL2Error(
            f"INTERVAL end {shown} is not '..', a YYYY-MM-DD date or an RFC 3339 date-time", pos
        )
    return Literal("timestamp", moment, pos)


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 date-time (UTC when it names no offset), or None."""
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

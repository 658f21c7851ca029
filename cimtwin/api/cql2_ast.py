"""The CQL2 syntax tree shared by both encodings: the CQL2-text parser (:mod:`cimtwin.api.cql2`)
and the CQL2-JSON reader (:mod:`cimtwin.api.cql2_json`) build it, :mod:`cimtwin.api.cql2_sql`
compiles it. A node's ``pos`` locates it in the request: a 1-based character offset into
CQL2-text, or a JSON Pointer (``/args/0``) into CQL2-JSON, so every error names the spot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cimtwin.api.inputs import shown
from cimtwin.errors import CQL2Error

__all__ = ["CQL2Error"]  # raised by the parsers; defined with the other errors

#: where a node came from: a character offset (text) or a JSON Pointer (JSON)
Pos = int | str


@dataclass(frozen=True)
class Literal:
    kind: str  # number, string, boolean, timestamp, date
    value: Any
    pos: Pos


@dataclass(frozen=True)
class Property:
    name: str
    pos: Pos


@dataclass(frozen=True)
class GeometryLiteral:
    """A geometry (coordinates as written, Z dropped) or a BBOX (kind 'BBOX')."""

    kind: str
    coords: Any
    pos: Pos


@dataclass(frozen=True)
class Interval:
    """``INTERVAL(start, end)``: each end a timestamp/date literal, a property, or None ('..')."""

    start: Literal | Property | None
    end: Literal | Property | None
    pos: Pos


@dataclass(frozen=True)
class ArrayLiteral:
    items: tuple[Any, ...]
    pos: Pos


@dataclass(frozen=True)
class Arithmetic:
    op: str  # + - * / % ^ div
    left: Any
    right: Any
    pos: Pos


@dataclass(frozen=True)
class StringFunction:
    """``CASEI(x)`` or ``ACCENTI(x)``: case- or accent-insensitive comparison of strings."""

    func: str
    arg: Any
    pos: Pos


@dataclass(frozen=True)
class Comparison:
    op: str
    left: Any
    right: Any
    pos: Pos


@dataclass(frozen=True)
class Like:
    expr: Any
    pattern: Any
    negated: bool
    pos: Pos


@dataclass(frozen=True)
class Between:
    expr: Any
    low: Any
    high: Any
    negated: bool
    pos: Pos


@dataclass(frozen=True)
class In:
    expr: Any
    items: tuple[Any, ...]
    negated: bool
    pos: Pos


@dataclass(frozen=True)
class IsNull:
    expr: Any
    negated: bool
    pos: Pos


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
    pos: Pos


@dataclass(frozen=True)
class Temporal:
    func: str
    a: Any
    b: Any
    pos: Pos


@dataclass(frozen=True)
class ArrayPredicate:
    func: str
    a: Any
    b: Any
    pos: Pos


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
TEMPORAL_FUNCTIONS = (
    "T_AFTER",
    "T_BEFORE",
    "T_CONTAINS",
    "T_DISJOINT",
    "T_DURING",
    "T_EQUALS",
    "T_FINISHEDBY",
    "T_FINISHES",
    "T_INTERSECTS",
    "T_MEETS",
    "T_METBY",
    "T_OVERLAPPEDBY",
    "T_OVERLAPS",
    "T_STARTEDBY",
    "T_STARTS",
)
ARRAY_FUNCTIONS = ("A_EQUALS", "A_CONTAINS", "A_CONTAINEDBY", "A_OVERLAPS")
STRING_FUNCTIONS = ("CASEI", "ACCENTI")
ARITHMETIC_OPERATORS = ("+", "-", "*", "/", "%", "^", "DIV")
COMPARISON_OPERATORS = ("=", "<>", "<", "<=", ">", ">=")
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


def quote(value: Any) -> str:
    """A client's value as an error message quotes it, cut short (never a page of text)."""
    if isinstance(value, str):
        return shown(value)
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"


def describe(node: Any) -> str:
    """The node as an error message names it."""
    if isinstance(node, Property):
        return f"property {quote(node.name)}"
    if isinstance(node, Literal):
        return f"the {node.kind} literal {quote(node.value)}"
    if isinstance(node, StringFunction):
        return f"{node.func}({describe(node.arg)})"
    if isinstance(node, Arithmetic):
        return f"the arithmetic expression ({node.op})"
    if isinstance(node, Interval):
        return "an INTERVAL"
    if isinstance(node, ArrayLiteral):
        return "an array"
    if isinstance(node, GeometryLiteral):
        return f"a {node.kind} geometry"
    return "the expression"

"""CQL2-JSON (``filter-lang=cql2-json``) read into the tree of :mod:`cimtwin.api.cql2_ast`, the
same tree CQL2-text gives, so both encodings share one compiler and one allow-list.

A reader of our own rather than the ``cql2`` package (see :mod:`cimtwin.api.cql2`): cql2-rs
validates against the JSON Schema and answers only "not valid under any of the schemas listed
in the 'oneOf' keyword", while this reader names the JSON Pointer of the faulty member
(``/args/1/args/0``). Bounded: ``MAX_LENGTH`` characters, ``MAX_DEPTH`` levels of operators;
duplicate keys, NaN/Infinity and oversized numbers are refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

from cimtwin.api.cql2 import instant_literal, parse_date, parse_timestamp
from cimtwin.api.cql2_ast import (
    ARITHMETIC_OPERATORS,
    ARRAY_FUNCTIONS,
    COMPARISON_OPERATORS,
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
    Property,
    Spatial,
    StringFunction,
    Temporal,
)
from cimtwin.api.inputs import shown

MAX_LENGTH = 10_000
MAX_DEPTH = 20
_GEOJSON = {
    "Point": "POINT",
    "LineString": "LINESTRING",
    "Polygon": "POLYGON",
    "MultiPoint": "MULTIPOINT",
    "MultiLineString": "MULTILINESTRING",
    "MultiPolygon": "MULTIPOLYGON",
    "GeometryCollection": "GEOMETRYCOLLECTION",
}
#: op -> (minimum, maximum) number of args
_ARITY = {
    **{op: (2, 2) for op in COMPARISON_OPERATORS},
    **{op.lower(): (2, 2) for op in ARITHMETIC_OPERATORS},
    **{f.lower(): (2, 2) for f in (*SPATIAL_FUNCTIONS, *TEMPORAL_FUNCTIONS, *ARRAY_FUNCTIONS)},
    **{f.lower(): (1, 1) for f in STRING_FUNCTIONS},
    "and": (2, 10_000),
    "or": (2, 10_000),
    "not": (1, 1),
    "like": (2, 2),
    "between": (3, 3),
    "in": (2, 2),
    "isnull": (1, 1),
}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CQL2Error(f"the key {_show(key)} appears twice in one JSON object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise CQL2Error(f"{name} is not a JSON number")


def load(text: str) -> Any:
    """The JSON document of a filter (syntax only)."""
    if len(text) > MAX_LENGTH:
        raise CQL2Error(f"CQL2-JSON filter longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise CQL2Error("empty filter")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise CQL2Error(
            f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "filter-lang=cql2-json takes a CQL2-JSON document"
        ) from None
    except CQL2Error:
        raise
    except RecursionError:
        raise CQL2Error("JSON nested too deeply") from None
    except ValueError as exc:  # an integer with more digits than Python converts
        raise CQL2Error(f"not a usable JSON number: {exc}") from None


def parse_json(text: str) -> Any:
    """Syntax tree of a CQL2-JSON filter (no check against a collection)."""
    return _Reader().condition(load(text), "", 0)


def _show(value: Any) -> str:
    """A client's member as an error message quotes it (cut short)."""
    return shown(value) if isinstance(value, str) else _kind(value)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


class _Reader:
    def operation(self, doc: Any, at: str) -> tuple[str, list[Any]]:
        if not isinstance(doc, dict) or "op" not in doc:
            raise CQL2Error(
                f"expected an operation {{'op': .., 'args': [..]}}, got {_kind(doc)}", at
            )
        extra = sorted(set(doc) - {"op", "args"})
        if extra:
            raise CQL2Error(f"unknown member(s) {', '.join(map(repr, extra))} in an operation", at)
        op, args = doc["op"], doc.get("args")
        if not isinstance(op, str):
            raise CQL2Error(f"'op' must be a string, got {_kind(op)}", f"{at}/op")
        if not isinstance(args, list):
            raise CQL2Error(
                f"'args' of {_show(op)} must be an array, got {_kind(args)}", f"{at}/args"
            )
        name = op if op in COMPARISON_OPERATORS else op.lower()
        if name not in _ARITY:
            raise CQL2Error(f"unknown operator or function {_show(op)}", f"{at}/op")
        lo, hi = _ARITY[name]
        if not lo <= len(args) <= hi:
            want = str(lo) if lo == hi else f"at least {lo}"
            raise CQL2Error(f"{_show(op)} takes {want} argument(s), got {len(args)}", f"{at}/args")
        return name, args

    @staticmethod
    def deeper(at: str, depth: int) -> int:
        if depth >= MAX_DEPTH:
            raise CQL2Error(f"filter nested deeper than {MAX_DEPTH} levels", at)
        return depth + 1

    def condition(self, doc: Any, at: str, depth: int) -> Any:
        if isinstance(doc, bool):
            return Literal("boolean", doc, at)
        op, args = self.operation(doc, at)
        d = self.deeper(at, depth)
        a = [f"{at}/args/{i}" for i in range(len(args))]
        if op in ("and", "or"):
            items = tuple(self.condition(x, p, d) for x, p in zip(args, a, strict=True))
            return And(items) if op == "and" else Or(items)
        if op == "not":  # NOT LIKE/BETWEEN/IN, IS NOT NULL: the tree CQL2-text gives
            inner = self.condition(args[0], a[0], d)
            if isinstance(inner, Like | Between | In | IsNull):
                return replace(inner, negated=not inner.negated)
            return Not(inner)
        if op in COMPARISON_OPERATORS:
            return Comparison(op, self.value(args[0], a[0], d), self.value(args[1], a[1], d), at)
        if op == "like":
            return Like(self.value(args[0], a[0], d), self.value(args[1], a[1], d), False, at)
        if op == "between":
            x, lo, hi = (self.value(v, p, d) for v, p in zip(args, a, strict=True))
            return Between(x, lo, hi, False, at)
        if op == "in":
            if not isinstance(args[1], list):
                raise CQL2Error(f"'in' takes an array of values, got {_kind(args[1])}", a[1])
            items = tuple(self.value(v, f"{a[1]}/{i}", d) for i, v in enumerate(args[1]))
            if not items:
                raise CQL2Error("'in' needs at least one value", a[1])
            return In(self.value(args[0], a[0], d), items, False, at)
        if op == "isnull":
            return IsNull(self.value(args[0], a[0], d), False, at)
        func = op.upper()
        if func in SPATIAL_FUNCTIONS:
            return Spatial(
                func, self.geometry_arg(args[0], a[0]), self.geometry_arg(args[1], a[1]), at
            )
        if func in TEMPORAL_FUNCTIONS:
            return Temporal(
                func, self.temporal(args[0], a[0], d), self.temporal(args[1], a[1], d), at
            )
        if func in ARRAY_FUNCTIONS:
            return ArrayPredicate(
                func, self.array(args[0], a[0], d), self.array(args[1], a[1], d), at
            )
        raise CQL2Error(f"{_show(op)} is a value, not a condition", at)

    def value(self, doc: Any, at: str, depth: int) -> Any:
        if isinstance(doc, bool):
            return Literal("boolean", doc, at)
        if isinstance(doc, int | float):
            if isinstance(doc, float) and not math.isfinite(doc):
                raise CQL2Error("numbers must be finite", at)
            return Literal("number", doc, at)
        if isinstance(doc, str):
            return Literal("string", doc, at)
        if isinstance(doc, dict):
            if "property" in doc:
                return self.property(doc, at)
            if "timestamp" in doc or "date" in doc:
                return self.instant(doc, at)
            if "op" in doc:
                op, args = self.operation(doc, at)
                d = self.deeper(at, depth)
                if op.upper() in ARITHMETIC_OPERATORS:
                    left = self.value(args[0], f"{at}/args/0", d)
                    return Arithmetic(op, left, self.value(args[1], f"{at}/args/1", d), at)
                if op.upper() in STRING_FUNCTIONS:
                    return StringFunction(op.upper(), self.value(args[0], f"{at}/args/0", d), at)
                raise CQL2Error(f"{_show(doc['op'])} is a condition, not a value", at)
        if doc is None:
            raise CQL2Error("null is not a CQL2 value (use isNull)", at)
        raise CQL2Error(f"expected a value (literal, property or function), got {_kind(doc)}", at)

    @staticmethod
    def property(doc: dict[str, Any], at: str) -> Property:
        name = doc["property"]
        if len(doc) != 1 or not isinstance(name, str) or not name:
            raise CQL2Error("a property is {'property': 'name'} with a non-empty name", at)
        return Property(name, at)

    @staticmethod
    def instant(doc: dict[str, Any], at: str) -> Literal:
        key = "timestamp" if "timestamp" in doc else "date"
        text = doc[key]
        if len(doc) != 1 or not isinstance(text, str):
            raise CQL2Error(f"a {key} is {{'{key}': '...'}}", at)
        if key == "date":
            day = parse_date(text)
            if day is None:
                raise CQL2Error(f"{{'date': {_show(text)}}} is not a YYYY-MM-DD date", at)
            return Literal("date", day, at)
        moment = parse_timestamp(text)
        if moment is None:
            raise CQL2Error(f"{{'timestamp': {_show(text)}}} is not an RFC 3339 date-time", at)
        return Literal("timestamp", moment, at)

    def temporal(self, doc: Any, at: str, depth: int) -> Any:
        if isinstance(doc, dict) and "interval" in doc:
            ends = doc["interval"]
            if len(doc) != 1 or not isinstance(ends, list) or len(ends) != 2:
                raise CQL2Error("an interval is {'interval': [start, end]}", at)
            start, end = (self.interval_end(v, f"{at}/interval/{i}") for i, v in enumerate(ends))
            return Interval(start, end, at)
        return self.value(doc, at, depth)

    def interval_end(self, doc: Any, at: str) -> Literal | Property | None:
        if isinstance(doc, str):
            return instant_literal(doc, at, _show(doc))
        if isinstance(doc, dict) and "property" in doc:
            return self.property(doc, at)
        if isinstance(doc, dict) and ("timestamp" in doc or "date" in doc):
            return self.instant(doc, at)
        raise CQL2Error(
            f"an interval end is '..', a date, a timestamp or a property, got {_kind(doc)}", at
        )

    def array(self, doc: Any, at: str, depth: int) -> Any:
        if isinstance(doc, list):
            d = self.deeper(at, depth)
            return ArrayLiteral(tuple(self.array(v, f"{at}/{i}", d) for i, v in enumerate(doc)), at)
        return self.value(doc, at, depth)

    def geometry_arg(self, doc: Any, at: str) -> Any:
        if isinstance(doc, dict) and "property" in doc:
            return self.property(doc, at)
        if isinstance(doc, dict) and "bbox" in doc:
            box = doc["bbox"]
            if len(doc) != 1 or not isinstance(box, list) or len(box) not in (4, 6):
                raise CQL2Error("a bbox is {'bbox': [4 or 6 numbers]}", at)
            nums = [self.number(v, f"{at}/bbox/{i}") for i, v in enumerate(box)]
            if len(nums) == 6:
                nums = [nums[0], nums[1], nums[3], nums[4]]
            return GeometryLiteral("BBOX", tuple(nums), at)
        if isinstance(doc, dict) and "type" in doc:
            return self.geometry(doc, at, 0)
        raise CQL2Error(
            f"expected a geometry property, a GeoJSON geometry or a bbox, got {_kind(doc)}", at
        )

    def geometry(self, doc: dict[str, Any], at: str, depth: int) -> GeometryLiteral:
        given = doc.get("type")
        kind = _GEOJSON.get(given) if isinstance(given, str) else None
        if kind is None:
            raise CQL2Error(
                f"unknown GeoJSON geometry type {_show(given)} (one of {', '.join(_GEOJSON)})",
                f"{at}/type",
            )
        if kind == "GEOMETRYCOLLECTION":
            members = doc.get("geometries")
            if depth > 0 or not isinstance(members, list) or not members:
                raise CQL2Error(
                    "a GeometryCollection has a non-empty 'geometries' array (not nested)", at
                )
            geoms = []
            for i, m in enumerate(members):
                if not isinstance(m, dict):
                    raise CQL2Error(
                        f"expected a GeoJSON geometry, got {_kind(m)}", f"{at}/geometries/{i}"
                    )
                geoms.append(self.geometry(m, f"{at}/geometries/{i}", depth + 1))
            return GeometryLiteral(kind, geoms, at)
        c, p = doc.get("coordinates"), f"{at}/coordinates"
        if kind == "POINT":
            coords: Any = self.position(c, p)
        elif kind == "LINESTRING":
            coords = self.positions(c, p, 2)
        elif kind == "POLYGON":
            coords = self.polygon(c, p)
        elif kind == "MULTIPOINT":
            coords = self.positions(c, p, 1)
        elif kind == "MULTILINESTRING":
            coords = [self.positions(x, f"{p}/{i}", 2) for i, x in enumerate(self.items(c, p))]
        else:
            coords = [self.polygon(x, f"{p}/{i}") for i, x in enumerate(self.items(c, p))]
        return GeometryLiteral(kind, coords, at)

    @staticmethod
    def items(doc: Any, at: str) -> list[Any]:
        if not isinstance(doc, list) or not doc:
            raise CQL2Error(f"expected a non-empty array, got {_kind(doc)}", at)
        return doc

    def polygon(self, doc: Any, at: str) -> list[Any]:
        rings = [self.positions(r, f"{at}/{i}", 4) for i, r in enumerate(self.items(doc, at))]
        for i, ring in enumerate(rings):
            if ring[0] != ring[-1]:
                raise CQL2Error(
                    "polygon ring is not closed (first and last points differ)", f"{at}/{i}"
                )
        return rings

    def positions(self, doc: Any, at: str, minimum: int) -> list[tuple[float, float]]:
        pts = [self.position(x, f"{at}/{i}") for i, x in enumerate(self.items(doc, at))]
        if len(pts) < minimum:
            raise CQL2Error(f"expected at least {minimum} positions, got {len(pts)}", at)
        return pts

    def position(self, doc: Any, at: str) -> tuple[float, float]:
        if not isinstance(doc, list) or not 2 <= len(doc) <= 4:
            raise CQL2Error("a position is an array of 2 (or 3) numbers", at)
        nums = [self.number(v, f"{at}/{i}") for i, v in enumerate(doc)]
        return (nums[0], nums[1])  # Z (and M) are accepted and dropped

    @staticmethod
    def number(doc: Any, at: str) -> float:
        if isinstance(doc, bool) or not isinstance(doc, int | float):
            raise CQL2Error(f"expected a number, got {_kind(doc)}", at)
        value = float(doc)
        if not math.isfinite(value):
            raise CQL2Error("numbers must be finite", at)
        return value

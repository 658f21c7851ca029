"""CQL2 array functions (``A_EQUALS``, ``A_CONTAINS``, ``A_CONTAINEDBY``, ``A_OVERLAPS``) as
PostgreSQL array operators (``=``, ``@>``, ``<@``, ``&&``), for queryables whose column is an
array; elsewhere they answer 400. Array literals travel as one typed array parameter.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg import sql
from sqlalchemy import ARRAY

from cimtwin.api.cql2_ast import (
    ArrayLiteral,
    ArrayPredicate,
    CQL2Error,
    Literal,
    Property,
    describe,
)
from cimtwin.spatial.base import table_of
from cimtwin.spatial.catalogue import Layer

if TYPE_CHECKING:
    from cimtwin.api.cql2_sql import Compiler

_OPERATORS = {"A_EQUALS": "=", "A_CONTAINS": "@>", "A_CONTAINEDBY": "<@", "A_OVERLAPS": "&&"}
#: element type -> (SQL element type, the family its literals are checked as)
_ELEMENTS = {
    "integer": ("bigint", "number"),
    "number": ("double precision", "number"),
    "string": ("text", "string"),
    "datetime": ("timestamptz", "datetime"),
}


def array_kind(layer: Layer, name: str) -> str | None:
    """``array:<element type>`` when the queryable's column is an array, else None."""
    col_type = table_of(layer.model).columns[name].type
    if not isinstance(col_type, ARRAY):
        return None
    try:
        py = col_type.item_type.python_type
    except NotImplementedError:
        return None
    element = {int: "integer", float: "number", str: "string", datetime: "datetime"}.get(py)
    return f"array:{element}" if element else None


def _element(c: Compiler, prop: Property, func: str) -> str:
    kind = c.prop_kind(prop)
    if not kind.startswith("array:") or kind[6:] not in _ELEMENTS:
        arrays = sorted(n for n, k in c.ctx.properties.items() if k.startswith("array:"))
        which = f"array queryables: {', '.join(arrays)}" if arrays else "this collection has none"
        raise CQL2Error(
            f"{func} needs array properties; {prop.name!r} is not an array ({which})", prop.pos
        )
    return kind[6:]


def _literal_values(c: Compiler, arr: ArrayLiteral, element: str, func: str) -> list[Any]:
    family = _ELEMENTS[element][1]
    values = []
    for item in arr.items:
        if isinstance(item, ArrayLiteral):
            raise CQL2Error(f"{func}: nested arrays are not supported", item.pos)
        if not isinstance(item, Literal):
            raise CQL2Error(
                f"{func}: array items are literals, not {describe(item)}",
                getattr(item, "pos", None),
            )
        value = c.coerce(item, family, f"an item of a {element} array")
        if element == "integer":
            if float(value) != int(value):
                raise CQL2Error(f"{func}: {value!r} is not an integer", item.pos)
            value = int(value)
        values.append(value)
    return values


def array_predicate(c: Compiler, node: ArrayPredicate) -> sql.Composable:
    props = [x for x in (node.a, node.b) if isinstance(x, Property)]
    if not props:
        raise CQL2Error(f"{node.func} needs an array property as one argument", node.pos)
    elements = {_element(c, p, node.func) for p in props}
    if len(elements) > 1:
        raise CQL2Error(f"{node.func}: the arrays hold different types", node.pos)
    element = elements.pop()
    sql_type = sql.SQL(_ELEMENTS[element][0] + "[]")  # fixed text from the table above
    args: list[sql.Composable] = []
    for arg in (node.a, node.b):
        if isinstance(arg, Property):
            args.append(sql.SQL("CAST({} AS {})").format(sql.Identifier(arg.name), sql_type))
        elif isinstance(arg, ArrayLiteral):
            value = c.bind(_literal_values(c, arg, element, node.func))
            args.append(sql.SQL("CAST({} AS {})").format(value, sql_type))
        else:
            raise CQL2Error(
                f"{node.func} takes array properties and ( .. ) arrays, not {describe(arg)}",
                getattr(arg, "pos", node.pos),
            )
    return sql.SQL("({} {} {})").format(args[0], sql.SQL(_OPERATORS[node.func]), args[1])

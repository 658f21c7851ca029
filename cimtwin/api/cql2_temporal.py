"""CQL2 temporal functions (``T_AFTER`` .. ``T_STARTS``) as SQL over timestamp queryables.

Each argument becomes an interval [start, end]: an instant (a datetime property, a
``TIMESTAMP``/``DATE`` literal) is [t, t]; ``INTERVAL(a, b)`` takes literals, properties or
'..' (open: -infinity / infinity). The relations are Allen's interval algebra, as CQL2 defines
them, written as comparisons of the ends so an index on the column serves them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg import sql

from cimtwin.api.cql2_ast import CQL2Error, Interval, Literal, Property, Temporal, describe

if TYPE_CHECKING:
    from cimtwin.api.cql2_sql import Compiler


@dataclass(frozen=True)
class _End:
    """One end of an interval: a column, a bound value, or an open end."""

    column: str | None = None
    value: Any = None
    open_side: str | None = None  # '-infinity' or 'infinity'

    def render(self, c: Compiler) -> sql.Composable:
        if self.column is not None:
            return sql.Identifier(self.column)
        if self.open_side is not None:  # fixed text from this module, not user input
            return sql.SQL("CAST({} AS timestamptz)").format(sql.Literal(self.open_side))
        return sql.SQL("CAST({} AS timestamptz)").format(c.bind(self.value))


_S, _E = 0, 1
#: function -> conditions (a end, operator, b end) that all hold
_RELATIONS: dict[str, tuple[tuple[int, str, int], ...]] = {
    "T_AFTER": ((_S, ">", _E),),
    "T_BEFORE": ((_E, "<", _S),),
    "T_CONTAINS": ((_S, "<", _S), (_E, ">", _E)),
    "T_DURING": ((_S, ">", _S), (_E, "<", _E)),
    "T_EQUALS": ((_S, "=", _S), (_E, "=", _E)),
    "T_FINISHEDBY": ((_S, "<", _S), (_E, "=", _E)),
    "T_FINISHES": ((_S, ">", _S), (_E, "=", _E)),
    "T_INTERSECTS": ((_S, "<=", _E), (_E, ">=", _S)),
    "T_MEETS": ((_E, "=", _S),),
    "T_METBY": ((_S, "=", _E),),
    "T_OVERLAPPEDBY": ((_S, ">", _S), (_S, "<", _E), (_E, ">", _E)),
    "T_OVERLAPS": ((_S, "<", _S), (_E, ">", _S), (_E, "<", _E)),
    "T_STARTEDBY": ((_S, "=", _S), (_E, ">", _E)),
    "T_STARTS": ((_S, "=", _S), (_E, "<", _E)),
}


def _instant(c: Compiler, node: Any, func: str, side: str) -> _End:
    if node is None:
        return _End(open_side=side)
    if isinstance(node, Property):
        if c.prop_family(node) != "datetime":
            raise CQL2Error(
                f"{func} needs dates or timestamps; property {node.name!r} is a "
                f"{c.prop_family(node)}",
                node.pos,
            )
        return _End(column=node.name)
    if isinstance(node, Literal) and node.kind in ("timestamp", "date"):
        return _End(value=c.coerce(node, "datetime", func))
    raise CQL2Error(
        f"{func} takes a datetime property, TIMESTAMP('..'), DATE('..') or INTERVAL(..), "
        f"not {describe(node)}",
        getattr(node, "pos", None),
    )


def _interval(c: Compiler, node: Any, func: str) -> tuple[_End, _End]:
    if isinstance(node, Interval):
        start = _instant(c, node.start, func, "-infinity")
        end = _instant(c, node.end, func, "infinity")
        if start.value is not None and end.value is not None and start.value > end.value:
            raise CQL2Error("INTERVAL starts after it ends", node.pos)
        return start, end
    one = _instant(c, node, func, "")
    return one, one


def temporal_predicate(c: Compiler, node: Temporal) -> sql.Composable:
    a = _interval(c, node.a, node.func)
    b = _interval(c, node.b, node.func)
    if node.func == "T_DISJOINT":  # neither before nor after: not intersecting
        return sql.SQL("({} > {} OR {} < {})").format(
            a[_S].render(c), b[_E].render(c), a[_E].render(c), b[_S].render(c)
        )
    parts: list[sql.Composable] = []
    for ia, op, ib in _RELATIONS[node.func]:
        parts.append(sql.SQL("{} {} {}").format(a[ia].render(c), sql.SQL(op), b[ib].render(c)))
    return sql.SQL("({})").format(sql.SQL(" AND ").join(parts))

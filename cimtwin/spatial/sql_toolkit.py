"""The small SQL toolkit every query module uses, so a table, a row fetch or a GeoJSON column is
written one way everywhere.

* :data:`T` names tables from the model: ``f"SELECT ... FROM {T.work_grid}"`` gives the
  schema-qualified, quoted name, and a misspelt table fails when the module is imported,
  not when a request first runs the statement. Identifiers come from the SQLAlchemy metadata
  (the allow-list), never from input.
* :func:`rows`, :func:`one`, :func:`one_row` and :func:`rows_nojit` run a parameterised
  statement (:func:`cimtwin.db.connect.one_row_sync` is ``one_row`` on a synchronous
  connection).
* :func:`geojson_sql` / :func:`geojson_text` turn a stored geometry into CRS84 GeoJSON.

Each table's own SQL fragments (formulas such as a pipe's size) live with its model.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql

from cimtwin.spatial import model
from cimtwin.spatial.base import Base, schema_of, table_of


class _Tables:
    """Attribute access to the twin's tables by name: ``T.pipeline_segment``."""

    def __getattr__(self, name: str) -> str:
        table = model.Base.metadata.tables.get(f"{model.SCHEMA}.{name}")
        if table is None:
            raise AttributeError(f"no table {name!r} in the twin's model")
        return f'"{table.schema}"."{table.name}"'


T = _Tables()


def table(model_class: type[Base]) -> str:
    """The quoted, schema-qualified name of a model's table, as SQL text."""
    return f'"{schema_of(model_class)}"."{table_of(model_class).name}"'


def identifier(model_class: type[Base]) -> sql.Composed:
    """The same name as a :mod:`psycopg.sql` composable, for composed statements."""
    return sql.SQL("{}.{}").format(
        sql.Identifier(schema_of(model_class)), sql.Identifier(table_of(model_class).name)
    )


async def rows(conn: AsyncConnection, query: Any, params: Any = None) -> list[tuple]:
    """All rows of a parameterised statement."""
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def one(conn: AsyncConnection, query: Any, params: Any = None) -> tuple | None:
    """The first row of a parameterised statement, None when there is none."""
    cur = await conn.execute(query, params)
    return await cur.fetchone()


async def one_row(conn: AsyncConnection, query: Any, params: Any = None) -> tuple:
    """The row of a statement that always returns one (an aggregate without GROUP BY, a
    function call); raises :class:`RuntimeError` when none came, which would be a bug."""
    row = await one(conn, query, params)
    if row is None:
        raise RuntimeError(f"a statement expected to return one row returned none: {query!r}")
    return row


async def rows_nojit(conn: AsyncConnection, query: Any, params: Any = None) -> list[tuple]:
    """For the spatial analyses: set-returning PostGIS functions make the planner's costs
    huge, which buys a JIT compilation costing far more than the query (0.6 s for 1 ms).
    The API's pooled connections have JIT off already (``jit_off``): one round trip."""
    if getattr(conn, "jit_off", False):
        return await rows(conn, query, params)
    async with conn.transaction():
        await conn.execute("SET LOCAL jit = off")
        cur = await conn.execute(query, params)
        return await cur.fetchall()


def geojson_sql(column: sql.Composable | str) -> sql.Composable:
    """GeoJSON text of a stored geometry in CRS84 (lon, lat), 7 decimals (about 1 cm)."""
    col = sql.SQL(column) if isinstance(column, str) else column
    return sql.SQL("ST_AsGeoJSON(ST_Transform({}, 4326), 7, 0)").format(col)


def geojson_text(column: str) -> str:
    """:func:`geojson_sql` as plain SQL text, for a trusted column expression."""
    return f"ST_AsGeoJSON(ST_Transform({column}, 4326), 7, 0)"

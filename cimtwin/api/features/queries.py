"""The SQL of the features routes: the feature SELECT in an output CRS, page and count, and
database errors turned into the service's answers (503 on a statement timeout, 400 on a
value PostgreSQL refuses)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import AsyncConnection, sql

from cimtwin.api.errors import bad_request
from cimtwin.api.geojson import CrsDef, feature_json, geometry_output_sql
from cimtwin.errors import UnavailableError
from cimtwin.spatial.catalogue import Layer


def select_sql(layer: Layer, crs: CrsDef, props: tuple[str, ...] | None = None) -> sql.Composable:
    """id, geometry (GeoJSON in ``crs``) and ``props`` (all the layer's by default)."""
    geom: sql.Composable = sql.Identifier(layer.geometry_column)
    if (layer.features_geometry or "").startswith("MULTI"):
        geom = sql.SQL("ST_Multi({})").format(geom)
    cols = [
        sql.Identifier(layer.id_column),
        geometry_output_sql(geom, crs),
        *(sql.Identifier(p) for p in (layer.properties if props is None else props)),
    ]
    return sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(cols), sql.Identifier(layer.schema, layer.table)
    )


def layer_condition(layer: Layer) -> list[sql.Composable]:
    """The catalogue's fixed condition selecting the collection's rows (none: all rows)."""
    if layer.features_where is None:
        return []
    return [sql.SQL(layer.features_where)]


async def fetch_rows(conn: AsyncConnection, query: sql.Composed, params: list[Any]) -> list[Any]:
    try:
        cur = await conn.execute(query, params)
        return await cur.fetchall()
    except psycopg.errors.QueryCanceled:
        raise UnavailableError(
            "the query took longer than the statement "
            "timeout; narrow it with bbox, filter or a smaller limit",
        ) from None
    except psycopg.errors.DataError as exc:
        raise bad_request(f"invalid value: {exc.diag.message_primary or exc}") from None
    except psycopg.errors.UndefinedFunction as exc:
        if "unaccent" not in str(exc):
            raise
        raise bad_request(
            "filter: ACCENTI needs the PostgreSQL extension unaccent, which this database "
            "lacks (cimtwin db setup creates it where the server has it)"
        ) from None


def feature_texts(layer: Layer, rows: list[Any], props: tuple[str, ...] | None = None) -> list[str]:
    props = layer.properties if props is None else props
    return [feature_json(r[0], r[1], dict(zip(props, r[2:], strict=True))) for r in rows]

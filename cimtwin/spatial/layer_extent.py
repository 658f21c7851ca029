"""The extent of a published layer: one computation for OGC API collections and TileJSON, so
the two never disagree.

The storage-CRS box is densified before it is transformed: a Gauss-Krüger rectangle is curved
in longitude/latitude, and transforming only its corners cuts off the bulging edges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, sql

from cimtwin.spatial.base import SRID
from cimtwin.spatial.catalogue import Layer

#: seconds an extent is reused before it is read again
EXTENT_TTL_S = 60.0
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class LayerExtent:
    lonlat: Box | None  # (west, south, east, north) in CRS84; None for an empty layer
    interval: tuple[Any, Any] | None  # (first, last) of the layer's time; None without time


def _box_sql(layer: Layer) -> sql.Composed:
    return sql.SQL(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM ("
        " SELECT ST_Envelope(ST_Transform(ST_Segmentize(b, GREATEST(ST_XMax(b) - ST_XMin(b),"
        " ST_YMax(b) - ST_YMin(b), 1.0) / 32), 4326)) AS e"
        " FROM (SELECT ST_SetSRID(ST_Extent({geom})::geometry, {srid}) AS b FROM {table}{where}) s"
        ") t"
    ).format(
        geom=sql.Identifier(layer.geometry_column),
        srid=sql.Literal(SRID),
        table=sql.Identifier(layer.schema, layer.table),
        where=_where(layer),
    )


def _where(layer: Layer) -> sql.Composable:
    """The catalogue's fixed condition of a one-geometry-type collection (fixed SQL text)."""
    if layer.features_where is None:
        return sql.SQL("")
    return sql.SQL(" WHERE " + layer.features_where)


async def layer_extent(
    conn: AsyncConnection, layer: Layer, cache: dict[str, tuple[float, LayerExtent]] | None = None
) -> LayerExtent:
    """Where and when the layer's data are. With a ``cache`` dict (one per app), an answer is
    reused for :data:`EXTENT_TTL_S`."""
    now = time.monotonic()
    if cache is not None:
        hit = cache.get(layer.id)
        if hit and hit[0] > now:
            return hit[1]
    row = await (await conn.execute(_box_sql(layer))).fetchone()
    box = (
        None
        if not row or row[0] is None
        else (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
    )
    interval = None
    if layer.temporal:
        col = sql.Identifier(layer.temporal)
        row = await (
            await conn.execute(
                sql.SQL("SELECT min({c}), max({c}) FROM {t}{w}").format(
                    c=col, t=sql.Identifier(layer.schema, layer.table), w=_where(layer)
                )
            )
        ).fetchone()
        interval = (row[0], row[1]) if row else (None, None)
    extent = LayerExtent(box, interval)
    if cache is not None:
        cache[layer.id] = (now + EXTENT_TTL_S, extent)
    return extent


def rounded_outward(box: Box) -> list[float]:
    """The box at 7 decimals (about 1 cm), rounded outwards so it still covers the data."""
    w, s, e, n = box
    return [
        float(f"{w - 5e-8:.7f}"),
        float(f"{s - 5e-8:.7f}"),
        float(f"{e + 5e-8:.7f}"),
        float(f"{n + 5e-8:.7f}"),
    ]


def extent_cache(state: Any) -> dict[str, tuple[float, LayerExtent]]:
    """The app's extent cache (``app.state``), shared by collections and TileJSON."""
    cache = getattr(state, "layer_extent_cache", None)
    if cache is None:
        cache = state.layer_extent_cache = {}
    return cache

"""The extent of a published layer in CRS84: one computation for OGC API collections and
TileJSON, so the two never disagree.

The storage-CRS box is densified before it is transformed: a Gauss-Krüger rectangle is curved
in longitude/latitude, and transforming only its corners cuts off the bulging edges.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg import AsyncConnection, sql

from cimtwin.spatial.base import SRID
from cimtwin.spatial.catalogue import Layer

#: seconds an extent is reused before it is read again
EXTENT_TTL_S = 10.0
Box = tuple[float, float, float, float]


def _extent_sql(layer: Layer) -> sql.Composed:
    return sql.SQL(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM ("
        " SELECT ST_Envelope(ST_Transform(ST_Segmentize(b, GREATEST(ST_XMax(b) - ST_XMin(b),"
        " ST_YMax(b) - ST_YMin(b), 1.0) / 32), 4326)) AS e"
        " FROM (SELECT ST_SetSRID(ST_Extent({geom})::geometry, {srid}) AS b FROM {table}) s"
        ") t").format(geom=sql.Identifier(layer.geometry_column),
                      srid=sql.Literal(SRID),
                      table=sql.Identifier(layer.schema, layer.table))


async def lonlat_extent(conn: AsyncConnection, layer: Layer,
                        cache: dict[str, Any] | None = None) -> Box | None:
    """(west, south, east, north) of the layer's data; None when the layer is empty. With a
    ``cache`` dict (one per app), an answer is reused for :data:`EXTENT_TTL_S`."""
    now = time.monotonic()
    if cache is not None:
        hit = cache.get(layer.id)
        if hit and hit[0] > now:
            return hit[1]
    row = await (await conn.execute(_extent_sql(layer))).fetchone()
    box = None if not row or row[0] is None else (
        float(row[0]), float(row[1]), float(row[2]), float(row[3]))
    if cache is not None:
        cache[layer.id] = (now + EXTENT_TTL_S, box)
    return box

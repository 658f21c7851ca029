"""Mapbox Vector Tiles straight from PostGIS, one parameterised statement per layer.

Best practice from the PostGIS docs and martin/tipg: the tile envelope (Web Mercator) is
transformed into the storage CRS once, so ``geom && envelope`` uses the GiST index and the
column is never transformed for the filter; geometries are simplified in storage units before
``ST_AsMVTGeom``; features smaller than a pixel are dropped; 3D pipes are forced to 2D; the
feature id is the table's stable integer id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import morecantile
from psycopg import sql

from cimtwin.spatial.base import SRID
from cimtwin.spatial.catalogue import Layer

EXTENT = 4096
BUFFER = 64
#: Web Mercator world width in metres
WORLD = 2 * math.pi * 6378137.0
MAX_ZOOM = 24
WEB_MERCATOR = morecantile.tms.get("WebMercatorQuad")


@dataclass(frozen=True)
class TileRequest:
    z: int
    x: int
    y: int

    def valid(self) -> bool:
        n = 1 << self.z
        return 0 <= self.z <= MAX_ZOOM and 0 <= self.x < n and 0 <= self.y < n

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        """West, south, east, north in degrees: closed-form Web Mercator (this runs on every
        tile request; morecantile's general path goes through pyproj and costs far more)."""
        n = 1 << self.z

        def lat(row: float) -> float:
            return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

        return self.x / n * 360 - 180, lat(self.y + 1), (self.x + 1) / n * 360 - 180, lat(self.y)

    def pixel_m(self) -> float:
        """Ground size of one screen pixel (512-px tiles) at the tile's latitude, metres."""
        _, s, _, n = self.lonlat_bounds()
        return WORLD / (1 << self.z) / 512 * math.cos(math.radians((s + n) / 2))


def _property_sql(layer: Layer, name: str) -> sql.Composable:
    col = sql.SQL("s.{}").format(sql.Identifier(name))
    kind = layer.column_type(name)
    if kind == "datetime":
        return sql.SQL(
            "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS {n}"
        ).format(c=col, n=sql.Identifier(name))
    return sql.SQL("{c} AS {n}").format(c=col, n=sql.Identifier(name))


@lru_cache(maxsize=256)
def layer_statement(layer: Layer, zoom_filter: str | None) -> str:
    """The MVT statement for one layer; parameters z, x, y, margin, tol, minsize, limit."""
    geom = sql.SQL("s.{}").format(sql.Identifier(layer.geometry_column))
    flat = sql.SQL("ST_Force2D({})").format(geom)
    shape: sql.Composable
    size: sql.Composable
    if layer.point_on_surface:
        shape, size = sql.SQL("ST_PointOnSurface({})").format(flat), sql.SQL("")
    elif layer.simplify_px > 0:
        shape = sql.SQL("ST_Simplify({}, %(tol)s, true)").format(flat)
        size = sql.SQL(
            " AND GREATEST(ST_XMax({g}) - ST_XMin({g}), ST_YMax({g}) - ST_YMin({g})) >= %(minsize)s"
        ).format(g=geom)
    else:
        shape, size = flat, sql.SQL("")
    fid = sql.SQL(layer.tile_id) if layer.tile_id else sql.Identifier(layer.id_column)
    props = sql.SQL(", ").join(_property_sql(layer, p) for p in layer.tile_fields)
    where_zoom = sql.SQL(" AND ({})").format(sql.SQL(zoom_filter)) if zoom_filter else sql.SQL("")
    return (
        sql.SQL(
            "SELECT ST_AsMVT(t.*, {name}, {extent}, 'geom', 'fid') FROM ("
            " SELECT {fid} AS fid, {props},"
            " ST_AsMVTGeom(ST_Transform({shape}, 3857), e.env, {extent}, {buffer}, true) AS geom"
            " FROM {table} AS s,"
            " (SELECT ST_TileEnvelope(%(z)s, %(x)s, %(y)s) AS env,"
            "  ST_Transform(ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => %(margin)s), {srid})"
            "  AS box) e"
            " WHERE {geom} && e.box{size}{where_zoom}"
            " ORDER BY {fidcol} LIMIT %(limit)s"
            ") t WHERE t.geom IS NOT NULL"
        )
        .format(
            name=sql.Literal(layer.id),
            extent=sql.Literal(EXTENT),
            buffer=sql.Literal(BUFFER),
            fid=fid,
            props=props,
            shape=shape,
            geom=geom,
            size=size,
            where_zoom=where_zoom,
            table=sql.SQL("{}.{}").format(
                sql.Identifier(layer.schema), sql.Identifier(layer.table)
            ),
            srid=sql.Literal(SRID),
            fidcol=sql.Identifier(layer.id_column),
        )
        .as_string()
    )  # rendered once: psycopg then prepares it by its text


@lru_cache(maxsize=64)
def aggregate_statement(layer: Layer, zoom_filter: str | None) -> str:
    """Low-zoom overview: one merged, simplified line per group in the tile."""
    geom = sql.SQL("s.{}").format(sql.Identifier(layer.geometry_column))
    by = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in layer.aggregate_by)
    where_zoom = sql.SQL(" AND ({})").format(sql.SQL(zoom_filter)) if zoom_filter else sql.SQL("")
    return (
        sql.SQL(
            "SELECT ST_AsMVT(t.*, {name}, {extent}, 'geom') FROM ("
            " SELECT {by}, count(*) AS features,"
            " ST_AsMVTGeom(ST_Transform(ST_Simplify(ST_LineMerge(ST_Collect(ST_Force2D({geom}))),"
            " %(tol)s, true), 3857), e.env, {extent}, {buffer}, true) AS geom"
            " FROM {table} AS s,"
            " (SELECT ST_TileEnvelope(%(z)s, %(x)s, %(y)s) AS env,"
            "  ST_Transform(ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => %(margin)s), {srid})"
            "  AS box) e"
            " WHERE {geom} && e.box{where_zoom}"
            " GROUP BY {by}, e.env"
            ") t WHERE t.geom IS NOT NULL"
        )
        .format(
            name=sql.Literal(layer.id),
            extent=sql.Literal(EXTENT),
            buffer=sql.Literal(BUFFER),
            by=by,
            geom=geom,
            where_zoom=where_zoom,
            srid=sql.Literal(SRID),
            table=sql.SQL("{}.{}").format(
                sql.Identifier(layer.schema), sql.Identifier(layer.table)
            ),
        )
        .as_string()
    )


def zoom_filter(layer: Layer, z: int) -> str | None:
    """The generalisation condition in force at zoom ``z`` (the first whose bound exceeds z)."""
    for below, condition in layer.lowzoom_filters:
        if z < below:
            return condition
    return None


def layer_query(
    layer: Layer, tile: TileRequest, max_features: int
) -> tuple[str, dict[str, float | int]] | None:
    """Statement and parameters for one layer of one tile; None when the zoom is too low."""
    if tile.z < layer.minzoom or tile.z > layer.maxzoom:
        return None
    px = tile.pixel_m()
    params = {
        "z": tile.z,
        "x": tile.x,
        "y": tile.y,
        "margin": BUFFER / EXTENT,
        "tol": px * layer.simplify_px,
        "minsize": px,
        "limit": max_features,
    }
    if layer.aggregate_below is not None and tile.z < layer.aggregate_below:
        return aggregate_statement(layer, zoom_filter(layer, tile.z)), params
    return layer_statement(layer, zoom_filter(layer, tile.z)), params

"""Geometry literals of CQL2 filters (WKT or GeoJSON, read into
:class:`cimtwin.api.cql2_ast.GeometryLiteral`) checked and turned into SQL in the storage CRS:
coordinates in range for the literal's CRS, valid shapes, world-sized windows clipped."""

from __future__ import annotations

from typing import Any

import shapely
from psycopg import sql

from cimtwin.api.cql2_ast import CQL2Error, GeometryLiteral
from cimtwin.api.geojson import CrsDef, check_coordinates, format_coord, literal_geometry_sql


def geometry_sql(geom: GeometryLiteral, crs: CrsDef) -> tuple[sql.Composable, list[Any]]:
    """Validate a geometry literal and give SQL for it in the storage CRS."""
    wkt, xs, ys = _wkt(geom, crs)
    try:
        check_coordinates(xs, ys, crs, f"{geom.kind} literal")
    except ValueError as exc:
        raise CQL2Error(str(exc), geom.pos) from None
    shape = shapely.from_wkt(wkt, on_invalid="ignore")
    if shape is None:
        raise CQL2Error(f"invalid {geom.kind} literal", geom.pos)
    if not shapely.is_valid(shape):
        reason = shapely.is_valid_reason(shape)
        raise CQL2Error(f"invalid {geom.kind} literal: {reason}", geom.pos)
    return literal_geometry_sql(wkt, (min(xs), min(ys), max(xs), max(ys)), crs)


def _wkt(geom: GeometryLiteral, crs: CrsDef) -> tuple[str, list[float], list[float]]:
    """WKT in (easting, northing) order of ``crs``, and every x and y for checks."""
    xs: list[float] = []
    ys: list[float] = []

    def put(x: float, y: float) -> str:
        xs.append(x)
        ys.append(y)
        return f"{format_coord(x)} {format_coord(y)}"

    def pt(c: tuple[float, float]) -> str:
        return put(*crs.to_xy(c[0], c[1]))

    def seq(cs: list) -> str:
        return "(" + ",".join(pt(c) for c in cs) + ")"

    def body(g: GeometryLiteral) -> str:
        k, c = g.kind, g.coords
        if k == "BBOX":
            a0, b0, a1, b1 = c
            x0, y0 = crs.to_xy(a0, b0)
            x1, y1 = crs.to_xy(a1, b1)
            if x0 > x1 or y0 > y1:
                raise CQL2Error("BBOX lower corner exceeds its upper corner", g.pos)
            return (
                f"POLYGON(({put(x0, y0)},{put(x1, y0)},{put(x1, y1)},{put(x0, y1)},{put(x0, y0)}))"
            )
        if k == "POINT":
            return f"POINT({pt(c)})"
        if k == "LINESTRING":
            return f"LINESTRING{seq(c)}"
        if k == "POLYGON":
            return "POLYGON(" + ",".join(seq(r) for r in c) + ")"
        if k == "MULTIPOINT":
            return "MULTIPOINT(" + ",".join(f"({pt(p)})" for p in c) + ")"
        if k == "MULTILINESTRING":
            return "MULTILINESTRING(" + ",".join(seq(ln) for ln in c) + ")"
        if k == "MULTIPOLYGON":
            return (
                "MULTIPOLYGON("
                + ",".join("(" + ",".join(seq(r) for r in poly) + ")" for poly in c)
                + ")"
            )
        return "GEOMETRYCOLLECTION(" + ",".join(body(m) for m in c) + ")"

    return body(geom), xs, ys

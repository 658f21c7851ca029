"""JSON Schemas of the collections, from the catalogue: the queryables (Part 3)."""

from __future__ import annotations

from typing import Any

from cimtwin.spatial.catalogue import Layer

GEOMETRY_FORMATS = {
    "POINT": "geometry-point",
    "LINESTRING": "geometry-linestring",
    "POLYGON": "geometry-polygon",
    "MULTIPOINT": "geometry-multipoint",
    "MULTILINESTRING": "geometry-multilinestring",
    "MULTIPOLYGON": "geometry-multipolygon",
}


def property_schema(layer: Layer, prop: str) -> dict[str, Any]:
    kind = layer.column_type(prop)
    schema: dict[str, Any] = {"title": prop}
    if kind == "datetime":
        schema.update(type="string", format="date-time")
    elif kind == "object":
        schema.update(type="object")
    else:
        schema.update(type=kind)
    return schema


def storage_geometry_type(layer: Layer) -> str:
    """The geometry column's declared type (POINT, MULTIPOLYGON, ... or GEOMETRY), without Z/M."""
    column = layer.model.__table__.columns[layer.geometry_column]
    return str(getattr(column.type, "geometry_type", "GEOMETRY")).upper().rstrip("ZM")


def queryables(layer: Layer, schema_id: str) -> dict[str, Any]:
    props: dict[str, Any] = {
        "geometry": {
            "title": f"geometry (also '{layer.geometry_column}')",
            "format": GEOMETRY_FORMATS.get(storage_geometry_type(layer), "geometry-any"),
            "x-ogc-role": "primary-geometry",
        },
    }
    for prop in layer.properties:
        props[prop] = property_schema(layer, prop)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": schema_id,
        "type": "object",
        "title": layer.title,
        "properties": props,
        "additionalProperties": False,
    }

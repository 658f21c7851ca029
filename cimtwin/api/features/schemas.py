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
    if layer.features_geometry is not None:
        return layer.features_geometry
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


#: GeoJSON geometry types a column of each declared type holds (GEOMETRY: any of them)
GEOJSON_TYPES = {
    "POINT": ("Point",),
    "LINESTRING": ("LineString",),
    "POLYGON": ("Polygon",),
    "MULTIPOINT": ("MultiPoint",),
    "MULTILINESTRING": ("MultiLineString",),
    "MULTIPOLYGON": ("MultiPolygon",),
}
ANY_GEOMETRY = (
    "Point",
    "LineString",
    "Polygon",
    "MultiPoint",
    "MultiLineString",
    "MultiPolygon",
    "GeometryCollection",
)


def geometry_types(layer: Layer) -> tuple[str, ...]:
    """The GeoJSON geometry types the collection's features can have."""
    return GEOJSON_TYPES.get(storage_geometry_type(layer), ANY_GEOMETRY)


def feature_schema(layer: Layer, schema_id: str) -> dict[str, Any]:
    """JSON Schema of one GeoJSON feature of the collection (``rel=describedby``), with the
    roles of OGC API Features Part 5 (``x-ogc-role``) on the id and the geometry.

    Each member has one ``type`` (values may also be null): GDAL's OAPIF driver types its
    fields from this document, and reads a field whose ``type`` is a list as a string."""
    geometry = {
        "title": f"geometry ('{layer.geometry_column}')",
        "type": "object",
        "x-ogc-role": "primary-geometry",
        "format": GEOMETRY_FORMATS.get(storage_geometry_type(layer), "geometry-any"),
        "required": ["type"],
        "properties": {"type": {"type": "string", "enum": list(geometry_types(layer))}},
    }
    id_kind = layer.column_type(layer.id_column)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": schema_id,
        "title": f"{layer.title}: a feature",
        "description": "A GeoJSON feature of the collection; property values may be null.",
        "type": "object",
        "required": ["type", "id", "geometry", "properties"],
        "properties": {
            "type": {"type": "string", "enum": ["Feature"]},
            "id": {
                "title": f"feature id ('{layer.id_column}')",
                "type": "integer" if id_kind == "integer" else "string",
                "x-ogc-role": "id",
            },
            "geometry": geometry,
            "properties": {
                "type": "object",
                "properties": {p: property_schema(layer, p) for p in layer.properties},
                "additionalProperties": False,
            },
        },
    }

"""The OpenAPI side of the features API: the documented query parameters of /items, one
``/collections/{id}/items`` path per collection with its property filters (what GDAL's OAPIF
driver reads to push ``-where`` down: ``filter-lang`` listing ``cql-text`` and the queryable
properties as query parameters), and the app's OpenAPI 3.1 document rewritten as 3.0 for OGC
clients (``/api``, ``rel=service-desc``).
"""

from __future__ import annotations

import copy
from typing import Any

from cimtwin.api.features.params import DEFAULT_LIMIT, FILTER_LANGS, MAX_LIMIT
from cimtwin.api.features.schemas import property_schema
from cimtwin.spatial.catalogue import COLLECTIONS, Layer

ITEMS_OPENAPI = {
    "parameters": [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "style": "form",
            "explode": False,
            "description": f"features per page (1 .. {MAX_LIMIT}, default {DEFAULT_LIMIT})",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
            },
        },
        {
            "name": "offset",
            "in": "query",
            "required": False,
            "description": "features to skip (paging; prefer the 'next' links)",
            "schema": {"type": "integer", "minimum": 0, "default": 0},
        },
        {
            "name": "bbox",
            "in": "query",
            "required": False,
            "style": "form",
            "explode": False,
            "description": "minx,miny,maxx,maxy in bbox-crs (CRS84 by default)",
            "schema": {"type": "array", "minItems": 4, "maxItems": 6, "items": {"type": "number"}},
        },
        {
            "name": "bbox-crs",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "format": "uri"},
        },
        {
            "name": "datetime",
            "in": "query",
            "required": False,
            "description": "RFC 3339 instant or interval (start/end, '..' for open)",
            "schema": {"type": "string"},
        },
        {
            "name": "crs",
            "in": "query",
            "required": False,
            "description": "output CRS (CRS84 by default)",
            "schema": {"type": "string", "format": "uri"},
        },
        {
            "name": "filter",
            "in": "query",
            "required": False,
            "description": "CQL2 filter over the queryables (CQL2-text, or CQL2-JSON "
            "with filter-lang=cql2-json)",
            "schema": {"type": "string"},
        },
        {
            "name": "filter-lang",
            "in": "query",
            "required": False,
            "description": "cql2-text or cql2-json; cql-text (CQL2-text's older name, as "
            "GDAL's OAPIF driver sends it) is read as cql2-text",
            "schema": {"type": "string", "enum": list(FILTER_LANGS), "default": "cql2-text"},
        },
        {
            "name": "filter-crs",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "format": "uri"},
        },
        {
            "name": "sortby",
            "in": "query",
            "required": False,
            "description": "comma-separated properties, '-' prefix for descending",
            "schema": {"type": "string"},
        },
        {
            "name": "properties",
            "in": "query",
            "required": False,
            "style": "form",
            "explode": False,
            "description": "the properties each feature carries, comma-separated (empty: none; "
            "absent: all); a name the collection does not have is a 400",
            "schema": {"type": "array", "items": {"type": "string"}},
        },
        {
            "name": "f",
            "in": "query",
            "required": False,
            "description": "json (GeoJSON) or html (a page for a browser)",
            "schema": {"type": "string", "enum": ["json", "html"]},
        },
    ]
}


def openapi_30(doc: dict[str, Any]) -> dict[str, Any]:
    """The app's OpenAPI 3.1 document rewritten as 3.0 (nullable, single types, example)."""

    def fix(node: Any) -> Any:
        if isinstance(node, list):
            return [fix(x) for x in node]
        if not isinstance(node, dict):
            return node
        out = {k: fix(v) for k, v in node.items()}
        for key in ("anyOf", "oneOf"):
            options = out.get(key)
            if isinstance(options, list) and {"type": "null"} in options:
                rest = [o for o in options if o != {"type": "null"}]
                out.pop(key)
                if len(rest) == 1 and isinstance(rest[0], dict):
                    merged = {**rest[0], **out}
                    out = merged
                else:
                    out[key] = rest
                out["nullable"] = True
        if isinstance(out.get("type"), list):
            types = [t for t in out["type"] if t != "null"]
            if len(types) < len(out["type"]):
                out["nullable"] = True
            out["type"] = types[0] if len(types) == 1 else "string"
        if "const" in out:
            out["enum"] = [out.pop("const")]
        if isinstance(out.get("examples"), list) and "in" not in out:
            examples = out.pop("examples")
            if examples:
                out["example"] = examples[0]
        for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if isinstance(out.get(bound), int | float) and not isinstance(out[bound], bool):
                out[plain] = out[bound]
                out[bound] = True
        out.pop("$schema", None)
        return out

    converted = fix(copy.deepcopy(doc))
    converted["openapi"] = "3.0.3"
    converted.pop("webhooks", None)
    converted.pop("jsonSchemaDialect", None)
    return converted


def _property_parameter(layer: Layer, prop: str) -> dict[str, Any]:
    schema = property_schema(layer, prop)
    schema.pop("title", None)
    return {
        "name": prop,
        "in": "query",
        "required": False,
        "style": "form",
        "explode": True,
        "description": f"features whose {prop} equals the value (repeat for any of several)",
        "schema": schema,
    }


def collection_paths(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with one items path per collection: the generic operation's answers and
    parameters (less ``collectionId``) plus the collection's properties as filters."""
    generic = doc.get("paths", {}).get("/collections/{collectionId}/items", {}).get("get")
    if generic is None:
        return doc
    common = [p for p in generic.get("parameters", []) if p.get("name") != "collectionId"]
    paths = dict(doc["paths"])
    for layer in COLLECTIONS:
        op = copy.deepcopy(generic)
        op["operationId"] = f"items_{layer.id}"
        op["summary"] = f"{layer.title}: features"
        op["parameters"] = copy.deepcopy(common) + [
            _property_parameter(layer, prop)
            for prop in layer.properties
            if layer.column_type(prop) != "object"
        ]
        paths[f"/collections/{layer.id}/items"] = {"get": op}
    return {**doc, "paths": paths}

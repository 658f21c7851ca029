"""The OpenAPI document: what every operation really answers, derived from its route.

FastAPI documents a 200 and a 422 per operation, with a validation-error schema the service
never sends. Here each operation's error responses come from what the route depends on, so
that a new route is documented by declaring its dependencies, not by hand-listing statuses:

- a read dependency (:func:`cimtwin.api.auth.require_read`): 401 (a key that is sent is always
  checked); the key is optional while reads are open (``security: [{}, ...]``);
- a role dependency (:func:`cimtwin.api.auth.require_role`): 401 and 403, key required;
- a database connection: 503 with ``Retry-After`` (database away, statement timeout);
- an analysis or bulk slot (:mod:`cimtwin.api.admission`): 503 with ``Retry-After``;
- a body: 413 (``CIMTWIN_MAX_BODY_KB``), 408 (body timeout), 400 (a body that cannot be
  decoded) and 422;
- path parameters: 404; any parameter or body: 422;
- the OGC API - Features operations check their query parameters: 400.

Every error response carries the one error format (:mod:`cimtwin.api.errors`) as the
``Error`` schema; GeoJSON answers carry ``Feature`` / ``FeatureCollection`` schemas. The plain
Starlette routes (vector tiles, 3D Tiles files) are added with the same treatment.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from cimtwin.api import threed, tiles
from cimtwin.api.admission import analysis_slot, bulk_slot
from cimtwin.api.auth import require_read
from cimtwin.api.db import connection, primary_connection
from cimtwin.api.geojson import GEOJSON, JSON
from cimtwin.api.page_gate import gated
from cimtwin.api.responses import ERROR_REF, FEATURE_COLLECTION_REF, FEATURE_REF
from cimtwin.spatial.access import ROLES

_POSITION = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 4}
_NESTED = {"type": "array"}  # rings, lines and parts: arrays of positions at some depth

SCHEMAS: dict[str, Any] = {
    "Error": {
        "title": "Error",
        "description": "The service's one error format (OGC API exception): a code and a "
        "description saying what to change; 422 answers list each problem in `errors`.",
        "type": "object",
        "required": ["code", "description"],
        "properties": {
            "code": {"type": "string", "examples": ["InvalidParameterValue"]},
            "description": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["where", "message", "type"],
                    "properties": {
                        "where": {"type": "string"},
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                    },
                },
            },
        },
    },
    "Geometry": {
        "title": "GeoJSON geometry",
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {
                "type": "string",
                "enum": [
                    "Point",
                    "LineString",
                    "Polygon",
                    "MultiPoint",
                    "MultiLineString",
                    "MultiPolygon",
                    "GeometryCollection",
                ],
            },
            "coordinates": {"anyOf": [_POSITION, _NESTED]},
            "geometries": {"type": "array", "items": {"$ref": "#/components/schemas/Geometry"}},
        },
    },
    "Link": {
        "type": "object",
        "required": ["href"],
        "properties": {
            "href": {"type": "string"},
            "rel": {"type": "string"},
            "type": {"type": "string"},
            "title": {"type": "string"},
        },
    },
    "Feature": {
        "title": "GeoJSON Feature",
        "type": "object",
        "required": ["type", "geometry", "properties"],
        "properties": {
            "type": {"type": "string", "enum": ["Feature"]},
            "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "geometry": {"anyOf": [{"$ref": "#/components/schemas/Geometry"}, {"type": "null"}]},
            "properties": {"type": ["object", "null"]},
            "links": {"type": "array", "items": {"$ref": "#/components/schemas/Link"}},
        },
    },
    "FeatureCollection": {
        "title": "GeoJSON FeatureCollection",
        "type": "object",
        "required": ["type", "features"],
        "properties": {
            "type": {"type": "string", "enum": ["FeatureCollection"]},
            "features": {"type": "array", "items": FEATURE_REF},
            "numberMatched": {"type": "integer", "minimum": 0},
            "numberReturned": {"type": "integer", "minimum": 0},
            "timeStamp": {"type": "string", "format": "date-time"},
            "links": {"type": "array", "items": {"$ref": "#/components/schemas/Link"}},
        },
    },
}

_LINKS = {"type": "array", "items": {"$ref": "#/components/schemas/Link"}}
#: the 200 answers of the OGC API - Features routes (features.py returns plain Responses)
OGC_ANSWERS: dict[str, dict[str, Any]] = {
    "/": {"type": "object", "required": ["links"], "properties": {"links": _LINKS}},
    "/conformance": {
        "type": "object",
        "required": ["conformsTo"],
        "properties": {"conformsTo": {"type": "array", "items": {"type": "string"}}},
    },
    "/collections": {
        "type": "object",
        "required": ["links", "collections"],
        "properties": {
            "links": _LINKS,
            "collections": {"type": "array", "items": {"type": "object"}},
        },
    },
    "/collections/{collectionId}": {
        "type": "object",
        "required": ["id", "links"],
        "properties": {"id": {"type": "string"}, "links": _LINKS},
    },
    "/collections/{collectionId}/queryables": {
        "type": "object",
        "required": ["type", "properties"],
        "properties": {"type": {"const": "object"}, "properties": {"type": "object"}},
    },
    "/collections/{collectionId}/schema": {
        "type": "object",
        "required": ["type", "properties"],
        "properties": {"type": {"const": "object"}, "properties": {"type": "object"}},
    },
    "/collections/{collectionId}/items": FEATURE_COLLECTION_REF,
    "/collections/{collectionId}/items/{featureId}": FEATURE_REF,
}

RETRY_AFTER_HEADER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}
}
WWW_AUTHENTICATE_HEADER = {
    "WWW-Authenticate": {"description": "always 'Bearer'", "schema": {"type": "string"}}
}

_ROLE_DEPENDENCIES = {f"require_{role}" for role in ROLES}
_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def install(app: FastAPI) -> None:
    """Serve :func:`build`'s document as ``app.openapi()`` (built once, then kept)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app, generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build(app: FastAPI, doc: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's generated ``doc`` made truthful: plain routes added, real error responses
    and schemas on every operation, security optional where reads are open."""
    open_reads: bool = app.state.settings.open_reads
    doc["paths"].update(copy.deepcopy(tiles.OPENAPI_PATHS))
    doc["paths"].update(copy.deepcopy(threed.OPENAPI_PATHS))
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(SCHEMAS)
    schemes = list(doc["components"].get("securitySchemes", {}))
    facts = {
        (method, route.path_format): _facts(route)
        for route in _api_routes(app)
        if route.include_in_schema
        for method in (m.lower() for m in route.methods)
    }
    plain = _plain_facts()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in _HTTP_METHODS:
                continue
            found = facts.get((method, path)) or plain.get((method, path)) or RouteFacts()
            if gated(path) and not open_reads:
                found.read = True
            _document(op, path, found, open_reads, schemes)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return doc


def _api_routes(app: FastAPI) -> Iterator[Any]:
    """The app's API routes as mounted (FastAPI 0.165 keeps included routers as branches and
    resolves each route's path and router-level dependencies in a route context)."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:  # older FastAPI: included routes are copied flat into app.routes
        yield from (r for r in app.routes if isinstance(r, APIRoute))
        return
    for context in contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context


class RouteFacts:
    """What an operation can answer besides its success, as its dependencies say."""

    def __init__(self) -> None:
        self.read = False  # read rule: 401 for a bad key, a key under closed reads
        self.role = False  # a role: 401 and 403, key always required
        self.database = False  # 503 (database away or statement timeout)
        self.slot = False  # 503 with Retry-After when no slot frees in time
        self.body = False  # 400, 408, 413, 422
        self.paths = False  # 404
        self.params = False  # 422
        self.ogc = False  # 400 for unknown or bad query parameters


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


def _flat_params(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for dep in dependant.dependencies:
        yield from _flat_params(dep)


def _facts(route: Any) -> RouteFacts:
    facts = RouteFacts()
    calls = list(_calls(route.dependant))
    facts.read = require_read in calls
    facts.role = any(getattr(c, "__name__", "") in _ROLE_DEPENDENCIES for c in calls)
    facts.database = connection in calls or primary_connection in calls
    facts.slot = analysis_slot in calls or bulk_slot in calls
    parts = list(_flat_params(route.dependant))
    facts.body = any(d.body_params for d in parts) or bool(
        (route.openapi_extra or {}).get("requestBody")
    )
    facts.paths = any(d.path_params for d in parts)
    facts.params = facts.body or facts.paths or any(d.query_params for d in parts)
    facts.ogc = "OGC API - Features" in (route.tags or [])
    return facts


def _plain_facts() -> dict[tuple[str, str], RouteFacts]:
    """The plain routes' facts: reads through :func:`cimtwin.api.auth.check_read`, path ids."""
    out = {}
    for path in (*tiles.OPENAPI_PATHS, *threed.OPENAPI_PATHS):
        facts = RouteFacts()
        facts.read = facts.paths = facts.params = True
        facts.database = path == tiles.TILE_PATH  # tiles are rendered by PostGIS
        out[("get", path)] = facts
    return out


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {JSON: {"schema": ERROR_REF}}}
    if headers:
        answer["headers"] = headers
    return answer


def _document(
    op: dict[str, Any], path: str, facts: RouteFacts, open_reads: bool, schemes: list[str]
) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    wanted: dict[str, tuple[str, dict[str, Any] | None]] = {}
    if facts.ogc:
        wanted["400"] = ("an unknown query parameter or a bad value (named)", None)
    elif facts.body:  # FastAPI's own answer to a body it cannot decode (not UTF-8 JSON)
        wanted["400"] = ("the body cannot be parsed", None)
    if facts.read or facts.role:
        wanted["401"] = ("no key where one is needed, or an invalid or revoked key", None)
    if facts.role:
        wanted["403"] = ("the key's role is too low for this operation", None)
    if facts.paths:
        wanted["404"] = ("no such item (the description names it)", None)
    if facts.body:
        wanted["408"] = ("the request body did not arrive in time", None)
        wanted["413"] = ("the request body is over the service's limit (named)", None)
    if facts.params:
        wanted["422"] = ("invalid input: each problem listed with where it is", None)
    if facts.database or facts.slot:
        busy = "busy (no free slot in time), " if facts.slot else ""
        wanted["503"] = (
            f"{busy}database unavailable or statement timeout (narrow the request)",
            RETRY_AFTER_HEADER,
        )
    for status, answer in list(responses.items()):
        if status[:1] in ("4", "5") and status not in wanted:
            wanted[status] = (answer.get("description") or "error", None)
    for status, (description, headers) in wanted.items():
        declared = responses.get(status, {})
        if declared.get("description") not in (None, "", "Validation Error"):
            description = declared["description"]
        if status == "401":
            headers = WWW_AUTHENTICATE_HEADER
        answer = _error(description, {**(headers or {}), **declared.get("headers", {})})
        if _own_schema(declared):  # e.g. /healthz's 503 is its health report
            answer["content"] = declared["content"]
        responses[status] = answer
    for status, answer in responses.items():
        content = answer.get("content", {})
        # FastAPI adds an empty application/json to answers a route declares in its own type
        typed = any(m.get("schema") for media, m in content.items() if media != JSON)
        if status[:1] == "2" and typed and not content.get(JSON, {}).get("schema"):
            content.pop(JSON, None)
    if path in OGC_ANSWERS:
        ok = responses.setdefault("200", {"description": "OK"})
        media = GEOJSON if OGC_ANSWERS[path] in (FEATURE_REF, FEATURE_COLLECTION_REF) else JSON
        if path.endswith(("/queryables", "/schema")):
            media = "application/schema+json"
        ok["content"] = {media: {"schema": OGC_ANSWERS[path]}}
    _secure(op, facts, open_reads, schemes)


def _own_schema(answer: dict[str, Any]) -> bool:
    schemas = [m.get("schema") for m in answer.get("content", {}).values()]
    return any(s and s.get("$ref") != "#/components/schemas/HTTPValidationError" for s in schemas)


def _secure(op: dict[str, Any], facts: RouteFacts, open_reads: bool, schemes: list[str]) -> None:
    """Key optional for reads under open reads, required for roles and for closed reads."""
    if not (facts.read or facts.role):
        op.pop("security", None)
        return
    required: list[dict[str, list[str]]] = [{name: []} for name in schemes]
    op["security"] = [{}, *required] if facts.read and not facts.role and open_reads else required

"""The OpenAPI document says what the service does: real error responses in the service's
error format, schemas for the answers, and a key that is optional where reads are open.

The document is built without a database (the app's lifespan is not run); that the live
answers match it is tests/test_openapi_fuzz.py's job."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from cimtwin.api.app import create_app
from cimtwin.settings import Settings

METHODS = ("get", "post", "put", "patch", "delete")
#: answers that are files, not JSON
BINARY = {"/tiles/{layers}/{z}/{x}/{y}.mvt", "/fonts/{fontstack}/{start}-{end}.pbf"}


def _doc(open_reads: bool) -> dict[str, Any]:
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/none", open_reads=open_reads)
    app = create_app(settings)
    if open_reads:
        response = TestClient(app).get("/openapi.json")
        assert response.status_code == 200
        return response.json()
    return app.openapi()  # closed reads: /openapi.json itself needs a key (and a database)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return _doc(open_reads=True)


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def _schema_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [m.get("schema") or {} for m in answer.get("content", {}).values()]


def test_every_error_answer_is_the_error_format(doc: dict[str, Any]) -> None:
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["code", "description"]
    assert set(error["properties"]) == {"code", "description", "errors"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for method, path, op in _operations(doc):
        for status, answer in op["responses"].items():
            if status[0] in "45" and path != "/healthz":
                schemas = _schema_of(answer)
                assert schemas == [{"$ref": "#/components/schemas/Error"}], (method, path, status)


def _statuses(doc: dict[str, Any], method: str, path: str) -> set[str]:
    return set(doc["paths"][path][method]["responses"])


def test_error_responses_follow_the_route_dependencies(doc: dict[str, Any]) -> None:
    # a write: key and role, a body, a path id, a database, its own 409
    assert {"400", "401", "403", "404", "408", "409", "413", "422", "503"} <= _statuses(
        doc, "patch", "/incidents/{incident_id}"
    )
    # a read with an optional key: an invalid key is still a 401, but no role check
    read = _statuses(doc, "get", "/incidents/{incident_id}")
    assert {"401", "404", "422"} <= read and "403" not in read and "413" not in read
    # an analysis: the data's own 400/404, a body, and a slot that may be busy
    isolation = doc["paths"]["/pipelines/isolation"]["post"]["responses"]
    assert {"400", "401", "404", "413", "422", "503"} <= set(isolation)
    assert "Retry-After" in isolation["503"]["headers"]
    assert "WWW-Authenticate" in isolation["401"]["headers"]
    # OGC API - Features: unknown query parameters are a 400
    assert "400" in _statuses(doc, "get", "/collections/{collectionId}/items")
    # the bulk route keeps its own 415
    assert {"413", "415", "503"} <= _statuses(doc, "post", "/grids/assign")
    # the plain tile route is documented too, errors in the same format
    assert {"401", "404", "503"} <= _statuses(doc, "get", "/tiles/{layers}/{z}/{x}/{y}.mvt")


def test_geojson_answers_have_geojson_schemas(doc: dict[str, Any]) -> None:
    fc = {"$ref": "#/components/schemas/FeatureCollection"}
    feature = {"$ref": "#/components/schemas/Feature"}
    expected = {
        ("get", "/collections/{collectionId}/items", "200"): fc,
        ("get", "/collections/{collectionId}/items/{featureId}", "200"): feature,
        ("get", "/incidents", "200"): fc,
        ("post", "/incidents", "201"): feature,
        ("get", "/parcels", "200"): fc,
        ("get", "/grids/{code}/features", "200"): fc,
        ("get", "/buildings/{code}/rooms", "200"): fc,
    }
    for (method, path, status), ref in expected.items():
        content = doc["paths"][path][method]["responses"][status]["content"]
        assert content["application/geo+json"]["schema"] == ref, (method, path)
    schemas = doc["components"]["schemas"]
    assert schemas["FeatureCollection"]["required"] == ["type", "features"]
    assert schemas["Feature"]["properties"]["type"]["enum"] == ["Feature"]


#: the analyses' answers: each documented by its model's schema
ANALYSES = {
    ("post", "/pipelines/isolation"): "Isolation",
    ("post", "/pipelines/clearance-check"): "ClearanceCheck",
    ("post", "/pipelines/excavation-check"): "ExcavationCheck",
    ("post", "/pipelines/cross-section"): "CrossSection",
    ("get", "/pipelines/qa"): "NetworkQA",
    ("get", "/pipelines/{segment_id}/profile"): "Profile",
    ("get", "/incidents/{incident_id}/context"): "IncidentContext",
    ("post", "/districts/{slug}/query"): "VolumeAnswer",
}


def test_analysis_answers_have_their_models(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for (method, path), name in ANALYSES.items():
        content = doc["paths"][path][method]["responses"]["200"]["content"]
        assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
        assert schemas[name]["required"], name
    assert "features" in schemas["Isolation"]["required"]
    assert schemas["VolumeAnswer"]["properties"]["layers"]["additionalProperties"] == {
        "$ref": "#/components/schemas/FeatureCollectionJSON"
    }


#: answers not (yet) documented by a schema: rows echoed back as sent, 3D Tiles files as built
UNTYPED = ("/grids/assign", "/3dtiles/")


def test_every_json_success_has_a_schema(doc: dict[str, Any]) -> None:
    missing = []
    for method, path, op in _operations(doc):
        if path in BINARY or path.startswith(UNTYPED):
            continue
        for status, answer in op["responses"].items():
            for media, body in answer.get("content", {}).items():
                if status[0] == "2" and "json" in media and not body.get("schema"):
                    missing.append(f"{method.upper()} {path} {status} {media}")
    assert not missing, missing


def test_no_answer_is_documented_twice_with_an_empty_schema(doc: dict[str, Any]) -> None:
    for method, path, op in _operations(doc):
        for status, answer in op["responses"].items():
            content = answer.get("content", {})
            if (
                status[0] == "2"
                and len(content) > 1
                and not path.startswith(("/3dtiles/", "/grids/assign"))
            ):
                assert all(m.get("schema") for m in content.values()), (method, path, status)


def _optional(op: dict[str, Any]) -> bool:
    return {} in op.get("security", [])


def test_open_reads_make_the_key_optional_for_reads_only(doc: dict[str, Any]) -> None:
    for method, path, op in _operations(doc):
        if path == "/healthz" or path.startswith(("/styles", "/legends", "/fonts")):
            assert "security" not in op, (method, path)
        elif method == "get":
            assert _optional(op), (method, path)
            assert len(op["security"]) > 1, (method, path)  # a key may still be sent
        else:
            writes = op["security"]
            needs_role = any(s == "403" for s in op["responses"])
            assert _optional(op) is not needs_role, (method, path)
            assert writes, (method, path)
    for method, path in (("post", "/incidents"), ("patch", "/incidents/{incident_id}")):
        assert not _optional(doc["paths"][path][method])


def test_closed_reads_require_the_key_everywhere_but_healthz() -> None:
    closed = _doc(open_reads=False)
    for method, path, op in _operations(closed):
        if path == "/healthz":
            assert "security" not in op
            continue
        assert op.get("security"), (method, path)
        assert not _optional(op), (method, path)
        assert "401" in op["responses"], (method, path)


def test_healthz_documents_its_bare_answer_and_its_503(doc: dict[str, Any]) -> None:
    answers = doc["paths"]["/healthz"]["get"]["responses"]
    ok = answers["200"]["content"]["application/json"]["schema"]["anyOf"]
    assert {"$ref": "#/components/schemas/HealthStatus"} in ok  # closed reads, no key
    down = answers["503"]["content"]["application/json"]["schema"]["anyOf"]
    assert {"$ref": "#/components/schemas/Error"} in down  # no connection at all
    assert {"$ref": "#/components/schemas/Health"} in down

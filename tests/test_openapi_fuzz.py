"""Schemathesis against the service's own /openapi.json: generated requests for every
operation, on a live server over a database with the North Station sample.

Two passes: open reads without a key (the default deployment) and with an admin key (every
write too). For every response: no 5xx (``not_a_server_error``), the status is one the
document lists (``status_code_conformance``) and the body matches the documented schema
(``response_schema_conformance``). Bounded: ``EXAMPLES`` cases per operation and pass. The
counts are printed (run with ``-s``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from cimtwin.db.engine import libpq_dsn
from cimtwin.settings import Settings
from cimtwin.spatial.access_queries import create_key

#: cases generated per operation and pass: ~45 operations x 2 passes x up to 8 = a few hundred
EXAMPLES = 8
CHECKS = (not_a_server_error, status_code_conformance, response_schema_conformance)


@pytest.fixture(scope="module")
def fuzz_server(sample_database: str) -> Iterator[tuple[str, str, str]]:
    """A live API over its own database (writes land there, not in the session's) with the
    sample loaded: its URL, an admin key for it and the database's URL."""
    from tests.browser import serve

    with psycopg.connect(libpq_dsn(sample_database)) as conn:
        admin = create_key(conn, "fuzz-admin", "admin")[0]
    for url in serve(Settings(database_url=sample_database)):
        yield url, admin, sample_database


Outcome = tuple[int, int, Counter[str], list[str], Counter[int]]


def _fuzz(url: str, headers: dict[str, str]) -> Outcome:
    """Run every operation; returns (operations, cases, failures per check, examples,
    statuses answered)."""
    document = httpx.get(f"{url}/openapi.json", headers=headers, timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    failures: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    examples: list[str] = []
    cases = 0
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            nonlocal cases
            cases += 1
            response = case.call(base_url=url, headers=headers, timeout=60)
            statuses[response.status_code] += 1
            for check in CHECKS:
                try:
                    case.validate_response(response, checks=[check], headers=headers)
                except (Failure, FailureGroup) as exc:  # count it, keep fuzzing
                    failures[check.__name__] += 1
                    if len(examples) < 30:
                        first = str(exc).strip().splitlines()[:6]
                        examples.append(
                            f"{check.__name__}: {case.method} {case.formatted_path} "
                            f"-> {response.status_code}: {' | '.join(first)}"
                        )

        run()
    return operations, cases, failures, examples, statuses


def _report(name: str, outcome: Outcome, took: float) -> None:
    operations, cases, failures, examples, statuses = outcome
    counts = ", ".join(f"{c.__name__}={failures[c.__name__]}" for c in CHECKS)
    print(f"\n[{name}] {operations} operations, {cases} cases in {took:.1f} s; failures: {counts}")
    print(f"[{name}] statuses: {dict(sorted(statuses.items()))}")
    for line in examples:
        print("  ", line)


@pytest.mark.parametrize("who", ["open-reads-no-key", "admin-key"])
def test_schemathesis(fuzz_server: tuple[str, str, str], who: str) -> None:
    url, admin, _ = fuzz_server
    headers = {"X-API-Key": admin} if who == "admin-key" else {}
    started = time.monotonic()
    outcome = _fuzz(url, headers)
    _report(who, outcome, time.monotonic() - started)
    operations, cases, failures, examples, statuses = outcome
    assert sum(n for status, n in statuses.items() if status < 300) > 0, statuses
    assert operations >= 40, operations
    assert cases >= operations * 2, cases
    assert not failures, examples


def _known_good(db: str) -> list[tuple[str, str, dict[str, Any], dict[str, Any], Any]]:
    """Requests that find something in the sample: (method, path, path params, query, body).

    Generated cases rarely hit an id that exists; these make every documented 200 schema
    meet a real answer."""
    with psycopg.connect(libpq_dsn(db)) as conn:

        def one(query: str) -> tuple:
            row = conn.execute(query).fetchone()
            assert row is not None, query
            return row

        grid = one("SELECT code FROM cim.work_grid ORDER BY code LIMIT 1")[0]
        lon, lat = one(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_Transform(ST_PointOnSurface(geom), 4326) p "
            "FROM cim.work_grid ORDER BY code LIMIT 1) s"
        )
        parcel = one("SELECT id FROM cim.parcel ORDER BY id LIMIT 1")[0]
        slug = one("SELECT slug FROM cim.district ORDER BY slug LIMIT 1")[0]
        water = one(
            "SELECT id FROM cim.pipeline_segment WHERE subtype = 'JP' AND length_m > 30 "
            "ORDER BY id LIMIT 1"
        )[0]
        drain = one(
            "SELECT id FROM cim.pipeline_segment WHERE subtype = 'YS' ORDER BY id OFFSET 20 LIMIT 1"
        )[0]
        (cx, cy) = one(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_Transform(geom, 4326) p FROM "
            "cim.pipeline_node WHERE network = 'RQ' ORDER BY id LIMIT 1) s"
        )
    d = 0.0005  # about 50 m
    square = {
        "type": "Polygon",
        "coordinates": [
            [
                [cx - d, cy - d],
                [cx + d, cy - d],
                [cx + d, cy + d],
                [cx - d, cy + d],
                [cx - d, cy - d],
            ]
        ],
    }
    return [
        ("get", "/grids/locate", {}, {"lon": lon, "lat": lat}, None),
        ("get", "/grids/{code}", {"code": grid}, {}, None),
        ("get", "/grids/{code}/features", {"code": grid}, {"layer": "buildings"}, None),
        ("get", "/districts", {}, {"summary": True}, None),
        ("get", "/districts/{slug}", {"slug": slug}, {}, None),
        (
            "post",
            "/districts/{slug}/query",
            {"slug": slug},
            {},
            {"elevation": {"from": -25, "to": 50, "reference": "ground"}},
        ),
        ("get", "/parcels", {}, {"limit": 5}, None),
        ("get", "/parcels/{parcel}/report", {"parcel": str(parcel)}, {}, None),
        ("get", "/search", {}, {"q": grid[:6]}, None),
        ("get", "/indoor/locate", {}, {"lon": lon, "lat": lat, "h": 10}, None),
        ("post", "/pipelines/isolation", {}, {}, {"segment_id": water}),
        (
            "post",
            "/pipelines/trace",
            {},
            {},
            {"network": "PS", "start": {"segment_id": drain}, "direction": "downstream"},
        ),
        ("post", "/pipelines/clearance-check", {}, {}, {"area": square}),
        ("post", "/pipelines/excavation-check", {}, {}, {"polygon": square, "depth": 2}),
        ("post", "/pipelines/cross-section", {}, {}, {"line": square["coordinates"][0][:3:2]}),
        ("get", "/pipelines/qa", {}, {"network": "PS", "max_items": 5}, None),
        ("get", "/pipelines/{segment_id}/profile", {"segment_id": drain}, {}, None),
        ("get", "/collections", {}, {}, None),
        (
            "get",
            "/collections/{collectionId}/items",
            {"collectionId": "pipelines"},
            {"limit": 3},
            None,
        ),
        ("get", "/tiles/{layers}/tilejson.json", {"layers": "buildings"}, {}, None),
        ("get", "/styles", {}, {}, None),
        ("get", "/legends", {}, {}, None),
        ("get", "/healthz", {}, {}, None),
    ]


def test_real_answers_match_their_documented_schemas(fuzz_server: tuple[str, str, str]) -> None:
    url, admin, db = fuzz_server
    headers = {"X-API-Key": admin}
    schema = schemathesis.openapi.from_dict(httpx.get(f"{url}/openapi.json", timeout=30).json())
    database = httpx.get(f"{url}/healthz", timeout=30).json()
    assert database["status"] == "ok", database
    problems = []
    for method, path, params, query, body in _known_good(db):
        operation = schema[path][method]
        kwargs: dict[str, Any] = {"path_parameters": params, "query": query}
        if body is not None:
            kwargs.update(body=body, media_type="application/json")
        case = operation.Case(**kwargs)
        response = case.call(base_url=url, headers=headers, timeout=60)
        if response.status_code != 200:
            problems.append(
                f"{method.upper()} {path}: {response.status_code} {response.text[:300]}"
            )
            continue
        try:
            case.validate_response(response, checks=[response_schema_conformance], headers=headers)
        except (Failure, FailureGroup) as exc:
            problems.append(f"{method.upper()} {path}: {str(exc)[:600]}")
    assert not problems, "\n".join(problems)

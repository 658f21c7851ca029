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

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import Failure, FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    response_schema_conformance,
    status_code_conformance,
)

from cimtwin.db.engine import libpq_dsn  # noqa: E402
from cimtwin.settings import Settings  # noqa: E402
from cimtwin.spatial.access_queries import create_key  # noqa: E402
from tests.conftest import SAMPLE  # noqa: E402

#: cases generated per operation and pass: ~45 operations x 2 passes x up to 8 = a few hundred
EXAMPLES = 8
CHECKS = (not_a_server_error, status_code_conformance, response_schema_conformance)


@pytest.fixture(scope="module")
def fuzz_server(scratch_database: str) -> Iterator[tuple[str, str]]:
    """A live API over its own database (writes land there, not in the session's) with the
    sample loaded, and an admin key for it."""
    from cimtwin.samples.loader import load_sample
    from tests.browser import serve

    load_sample(SAMPLE, scratch_database)
    with psycopg.connect(libpq_dsn(scratch_database)) as conn:
        admin = create_key(conn, "fuzz-admin", "admin")[0]
    yield from ((url, admin) for url in serve(Settings(database_url=scratch_database)))


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
def test_schemathesis(fuzz_server: tuple[str, str], who: str) -> None:
    url, admin = fuzz_server
    headers = {"X-API-Key": admin} if who == "admin-key" else {}
    started = time.monotonic()
    outcome = _fuzz(url, headers)
    _report(who, outcome, time.monotonic() - started)
    operations, cases, failures, examples, statuses = outcome
    assert sum(n for status, n in statuses.items() if status < 300) > 0, statuses
    assert operations >= 40, operations
    assert cases >= operations * 2, cases
    assert not failures, examples

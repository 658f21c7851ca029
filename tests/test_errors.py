"""One exception hierarchy (cimtwin/errors.py) and one status table (cimtwin/api/errors.py)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import cimtwin
from cimtwin import errors
from cimtwin.api.errors import STATUS, install, status_of

#: private control flow, never shown to anyone: each is raised and caught in its own module
PRIVATE = {
    # hardening: aborts reading a request body that trickles in, caught a few lines below
    "cimtwin.api.hardening._SlowBody",
    # replicas: a read on a replica failed; caught in the same module to retry on the primary
    "cimtwin.api.replicas.ReplicaFailed",
}


def _modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(cimtwin.__path__, "cimtwin.")]


def _hierarchy() -> list[type[errors.CimtwinError]]:
    found, todo = [], [errors.CimtwinError]
    while todo:
        kind = todo.pop()
        found.append(kind)
        todo += kind.__subclasses__()
    return found


def test_only_errors_module_defines_exceptions() -> None:
    stray = []
    for name in _modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == name
                and name != "cimtwin.errors"
                and f"{name}.{attr}" not in PRIVATE
            ):
                stray.append(f"{name}.{attr}")
    assert stray == [], f"exception classes outside cimtwin/errors.py: {stray}"


def test_private_ones_still_exist_and_stay_private() -> None:
    """The allow-list names real classes, none of them a CimtwinError (never answered)."""
    for path in PRIVATE:
        module, _, attr = path.rpartition(".")
        kind = getattr(importlib.import_module(module), attr)
        assert issubclass(kind, Exception) and not issubclass(kind, errors.CimtwinError)


def test_every_kind_has_a_status_and_none_carries_one() -> None:
    kinds = _hierarchy()
    assert len(kinds) >= 10
    for kind in kinds:
        assert kind.__module__ == "cimtwin.errors", kind
        assert 400 <= status_of(kind) <= 599, kind
        assert not any(hasattr(kind, a) for a in ("status", "status_code", "code")), kind
    assert set(STATUS) <= set(kinds)


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (errors.InputError, 400),
        (errors.UserError, 400),
        (errors.GeorefError, 400),
        (errors.OsgbError, 400),
        (errors.NotFoundError, 404),
        (errors.ConflictError, 409),
        (errors.UnavailableError, 503),
        (errors.DatabaseUnavailable, 503),
        (errors.CimtwinError, 500),
    ],
)
def test_kinds_map_to_their_status(kind: type[errors.CimtwinError], status: int) -> None:
    assert status_of(kind) == status


def test_a_new_kind_inherits_its_base_status() -> None:
    class Gone(errors.NotFoundError):
        pass

    assert status_of(Gone) == 404


def _app() -> TestClient:
    app = FastAPI()
    install(app)
    raising = {
        "input": errors.InputError("x: not a number"),
        "missing": errors.NotFoundError("segment 9 does not exist"),
        "conflict": errors.ConflictError("status cannot go from 'closed' to 'new'"),
        "slow": errors.UnavailableError("the query took longer than the statement timeout"),
        "db": errors.DatabaseUnavailable("database unavailable: connection refused"),
        "cql2": errors.CQL2Error("unknown property 'nope'", 3),
    }

    @app.get("/{what}")
    async def fail(what: str) -> None:
        raise raising[what]

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("path", "status", "code", "description"),
    [
        ("/input", 400, "InvalidParameterValue", "x: not a number"),
        ("/missing", 404, "NotFound", "segment 9 does not exist"),
        ("/conflict", 409, "Conflict", "status cannot go from 'closed' to 'new'"),
        ("/slow", 503, "ServiceUnavailable", "the query took longer than the statement timeout"),
        ("/db", 503, "ServiceUnavailable", "database unavailable: connection refused"),
        ("/cql2", 400, "InvalidParameterValue", "unknown property 'nope' at position 3"),
    ],
)
def test_handler_answers_from_the_table(
    path: str, status: int, code: str, description: str
) -> None:
    r = _app().get(path)
    assert r.status_code == status
    assert r.json() == {"code": code, "description": description}
    # only a database that is away says when to come back; a slow query must be narrowed
    assert ("retry-after" in r.headers) == (path == "/db")

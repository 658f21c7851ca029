"""The service's one error format, ``{"code": ..., "description": ...}`` (the OGC API
exception format), for every router and for what no router catches.

:func:`install` registers app-wide handlers: HTTP errors keep their headers
(``WWW-Authenticate``, ``Retry-After``); invalid input is a 422 listing each problem with where
it is; a statement timeout is a 503 that says to narrow the request; a database that gives no
connection in time, refuses connections or loses one mid-query is a 503 with ``Retry-After``
(never the plain-text 500 of an unhandled error); a value PostgreSQL refuses (class 22, data
exception) is a 422; an error of the :mod:`cimtwin.errors` hierarchy gets the status of its
kind from :data:`STATUS`, the one place that says which kind is which status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from psycopg_pool import PoolTimeout
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cimtwin.api.geojson import JSON, dumps
from cimtwin.errors import (
    CimtwinError,
    ConflictError,
    DatabaseUnavailable,
    InputError,
    NotFoundError,
    UnavailableError,
)

#: seconds a client should wait before retrying while the database is away
RETRY_AFTER = {"Retry-After": "5"}

CODES = {
    400: "InvalidParameterValue",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "RequestTimeout",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "InvalidParameterValue",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def error_response(
    status: int, description: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    body = {"code": CODES.get(status, "HTTPError"), "description": description, **extra}
    return Response(dumps(body), status_code=status, media_type=JSON, headers=headers)


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("query", "path", "body", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "request"


def describe_errors(
    errors: Sequence[Mapping[str, Any]],
) -> tuple[str, list[dict[str, Any]]]:
    """One readable line and a JSON-safe list from pydantic's error list."""
    items = []
    for e in errors[:20]:
        msg = str(e.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        items.append(
            {"where": _where(e.get("loc", ())), "message": msg, "type": str(e.get("type", ""))}
        )
    text = "; ".join(f"{i['where']}: {i['message']}" for i in items) or "invalid request"
    if len(errors) > 20:
        text += f"; and {len(errors) - 20} more"
    return text, items


def invalid(description: str) -> HTTPException:
    """422 with a message that says what is wrong."""
    return HTTPException(422, description)


#: the HTTP status of each kind of :class:`~cimtwin.errors.CimtwinError`; a class not listed
#: answers with its nearest listed base's (:func:`status_of`). A bare ``CimtwinError`` says no
#: kind, so it is the service's fault.
STATUS: dict[type[CimtwinError], int] = {
    CimtwinError: 500,
    InputError: 400,
    NotFoundError: 404,
    ConflictError: 409,
    UnavailableError: 503,
}

#: kinds whose answer tells the client when to try again
RETRY: dict[type[CimtwinError], dict[str, str]] = {DatabaseUnavailable: RETRY_AFTER}


def status_of(kind: type[CimtwinError]) -> int:
    """The status of an error kind: its own entry in :data:`STATUS` or its nearest base's."""
    return next(STATUS[k] for k in kind.__mro__ if k in STATUS)


def bad_request(description: str) -> InputError:
    return InputError(description)


def not_found(description: str) -> NotFoundError:
    return NotFoundError(description)


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` in the one format."""

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(
            exc.status_code, str(exc.detail), headers=dict(exc.headers or {}) or None
        )

    async def invalid_input(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError | ValidationError)
        text, items = describe_errors(list(exc.errors()))
        return error_response(422, text, errors=items)

    async def timed_out(request: Request, exc: Exception) -> Response:
        return error_response(
            503,
            "the query took longer than the statement timeout; "
            "narrow it (smaller area, radius or limit)",
        )

    async def no_connection(request: Request, exc: Exception) -> Response:
        return error_response(
            503, "database unavailable: no connection within the pool timeout", headers=RETRY_AFTER
        )

    async def connection_lost(request: Request, exc: Exception) -> Response:
        # AdminShutdown, CrashShutdown, "server closed the connection unexpectedly" ...
        return error_response(
            503,
            "database unavailable: the connection to the database was "
            f"lost ({type(exc).__name__}); retry",
            headers=RETRY_AFTER,
        )

    async def bad_value(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, psycopg.DataError)
        message = exc.diag.message_primary or str(exc).strip().splitlines()[0]
        return error_response(422, f"invalid value: {message[:300]}")

    async def twin_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CimtwinError)
        kind = type(exc)
        headers = next((RETRY[k] for k in kind.__mro__ if k in RETRY), None)
        return error_response(status_of(kind), str(exc), headers=headers)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_input)
    app.add_exception_handler(ValidationError, invalid_input)
    app.add_exception_handler(psycopg.errors.QueryCanceled, timed_out)
    app.add_exception_handler(PoolTimeout, no_connection)
    app.add_exception_handler(psycopg.OperationalError, connection_lost)
    app.add_exception_handler(psycopg.InterfaceError, connection_lost)
    app.add_exception_handler(psycopg.DataError, bad_value)
    # DatabaseUnavailable is also a PoolTimeout: its CimtwinError bases come first in its MRO,
    # so Starlette answers it with twin_error
    app.add_exception_handler(CimtwinError, twin_error)

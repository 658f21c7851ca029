"""Access: API keys and roles for the use-case endpoints, and their error format.

A key travels as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Roles are ordered
viewer < editor < importer < admin; a route that needs a role takes any higher one too:

    @router.post("/incidents", dependencies=[Depends(require_role("editor"))])

Reads are open when the setting ``open_reads`` is true (the default); otherwise they need a
viewer key. A key that is sent is always checked, also on open reads. Answers: 401 (with
``WWW-Authenticate: Bearer``) when no key, an unknown one or a revoked one is sent where one is
needed; 403 when the key's role is too low.

:class:`ApiRoute` gives the routers of this package one error body, the OGC exception format
of the features API, ``{"code": ..., "description": ...}``: 422 for invalid input lists each
problem with where it is, and the headers of an error (``WWW-Authenticate``) are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from pydantic import ValidationError

from cimtwin.api.db import connection
from cimtwin.api.geojson import JSON, dumps
from cimtwin.spatial.access import ROLES
from cimtwin.spatial.access_queries import lookup_key, role_allows, touch_key

log = logging.getLogger(__name__)

CODES = {400: "InvalidParameterValue", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
         405: "MethodNotAllowed", 409: "Conflict", 413: "PayloadTooLarge",
         415: "UnsupportedMediaType", 422: "InvalidParameterValue", 503: "ServiceUnavailable"}
BEARER = {"WWW-Authenticate": "Bearer"}


# --- errors ---------------------------------------------------------------------------------


def error_response(status: int, description: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> Response:
    body = {"code": CODES.get(status, "HTTPError"), "description": description, **extra}
    return Response(dumps(body), status_code=status, media_type=JSON, headers=headers)


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("query", "path", "body", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "request"


def describe_errors(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """One readable line and a JSON-safe list from pydantic's error list."""
    items = []
    for e in errors[:20]:
        msg = str(e.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        items.append({"where": _where(e.get("loc", ())), "message": msg,
                      "type": str(e.get("type", ""))})
    text = "; ".join(f"{i['where']}: {i['message']}" for i in items) or "invalid request"
    if len(errors) > 20:
        text += f"; and {len(errors) - 20} more"
    return text, items


def invalid(description: str) -> HTTPException:
    """422 with a message that says what is wrong."""
    return HTTPException(422, description)


class ApiRoute(APIRoute):
    """Routes whose errors come back as ``{"code", "description"}`` with their headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except (RequestValidationError, ValidationError) as exc:
                text, items = describe_errors(list(exc.errors()))
                return error_response(422, text, errors=items)
            except HTTPException as exc:
                return error_response(exc.status_code, str(exc.detail),
                                      headers=dict(exc.headers or {}) or None)
            except psycopg.errors.QueryCanceled:
                return error_response(503, "the query took longer than the statement timeout; "
                                      "narrow it (smaller area, radius or limit)")

        return route


# --- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who sent a request: the key's name and role."""

    key_id: int
    name: str
    role: str


_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


def presented_key(bearer: HTTPAuthorizationCredentials | None, header: str | None) -> str | None:
    if bearer is not None and bearer.credentials:
        return bearer.credentials.strip()
    if header:
        return header.strip()
    return None


async def authenticate(conn: AsyncConnection, key: str) -> Principal:
    record = await lookup_key(conn, key)
    if record is None:
        raise HTTPException(401, "unknown API key", headers=BEARER)
    if not record.active:
        raise HTTPException(401, f"API key {record.name!r} ({record.prefix}...) was revoked",
                            headers=BEARER)
    try:
        await touch_key(conn, record)
    except psycopg.Error as exc:  # bookkeeping only: never fail a request on it
        log.warning("could not record the use of key %s: %s", record.name, exc)
    return Principal(record.id, record.name, record.role)


def _authorise(principal: Principal, role: str, action: str) -> Principal:
    if not role_allows(principal.role, role):
        raise HTTPException(
            403, f"API key {principal.name!r} has role {principal.role!r}; {action} needs "
                 f"role {role!r} or higher ({' < '.join(ROLES)})")
    return principal


def require_role(role: str) -> Callable[..., Awaitable[Principal]]:
    """FastAPI dependency: a valid, unrevoked key whose role is ``role`` or higher."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")

    async def dependency(
        request: Request,
        conn: Annotated[AsyncConnection, Depends(connection)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header)],
    ) -> Principal:
        key = presented_key(bearer, header)
        action = f"{request.method} {request.url.path}"
        if key is None:
            raise HTTPException(
                401, f"{action} needs an API key with role {role!r} or higher: send it as "
                     "'Authorization: Bearer <key>' or 'X-API-Key: <key>'", headers=BEARER)
        return _authorise(await authenticate(conn, key), role, action)

    dependency.__name__ = f"require_{role}"
    return dependency


def reads_open(request: Request) -> bool:
    return request.app.state.settings.open_reads


async def require_read(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> Principal | None:
    """FastAPI dependency for reads: open by configuration, else a viewer key (or higher)."""
    return await check_read(request, presented_key(bearer, header))


def request_key(request: Request) -> str | None:
    """The key a request carries, read straight from its headers (for plain routes)."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key", "").strip() or None


async def check_read(request: Request, key: str | None = None) -> Principal | None:
    """The read rule, shared by the FastAPI dependency and the plain tile route.

    Takes a database connection only when a key has to be looked up, so open reads (every
    map tile) cost nothing here."""
    if key is None:
        key = request_key(request)
    if key is None:
        if reads_open(request):
            return None
        raise HTTPException(
            401, "reads need an API key on this service (open_reads is off): send it as "
                 "'Authorization: Bearer <key>' or 'X-API-Key: <key>'", headers=BEARER)
    async with request.app.state.pool.connection() as conn:
        principal = await authenticate(conn, key)
    return _authorise(principal, "viewer", f"{request.method} {request.url.path}")


Reader = Annotated[Principal | None, Depends(require_read)]
Editor = Annotated[Principal, Depends(require_role("editor"))]

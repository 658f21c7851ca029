"""Access: API keys and roles for the use-case endpoints, and their error format.

A key travels as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Roles are ordered
viewer < editor < importer < admin; a route that needs a role takes any higher one too:

    @router.post("/incidents", dependencies=[Depends(require_role("editor"))])

Reads are open when the setting ``open_reads`` is true (the default); otherwise they need a
viewer key. A key that is sent is always checked, also on open reads. Answers: 401 (with
``WWW-Authenticate: Bearer``) when no key, an unknown one or a revoked one is sent where one is
needed; 403 when the key's role is too low.

Errors, ``WWW-Authenticate`` included, answer in the service's one format
(:mod:`cimtwin.api.errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import psycopg
from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection

from cimtwin.api.db import connection
from cimtwin.spatial.access import ROLES
from cimtwin.spatial.access_queries import lookup_key, role_allows, touch_key

log = logging.getLogger(__name__)

BEARER = {"WWW-Authenticate": "Bearer"}
INVALID_KEY = "invalid or revoked key"


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
    # one message for both: an answer must not tell which keys exist or whose they were
    if record is None or not record.active:
        raise HTTPException(401, INVALID_KEY, headers=BEARER)
    try:
        await touch_key(conn, record)
    except psycopg.Error as exc:  # bookkeeping only: never fail a request on it
        log.warning("could not record the use of key %s: %s", record.name, exc)
    return Principal(record.id, record.name, record.role)


def _authorise(principal: Principal, role: str, action: str) -> Principal:
    if not role_allows(principal.role, role):
        raise HTTPException(
            403,
            # the route's documented need, never the key's name or role
            f"this key may not {action}: it needs role {role!r} or higher ({' < '.join(ROLES)})",
        )
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
                401,
                f"{action} needs an API key with role {role!r} or higher: send it as "
                "'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers=BEARER,
            )
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
            401,
            "reads need an API key on this service (open_reads is off): send it as "
            "'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            headers=BEARER,
        )
    async with request.app.state.pool.connection() as conn:
        principal = await authenticate(conn, key)
    return _authorise(principal, "viewer", f"{request.method} {request.url.path}")


Reader = Annotated[Principal | None, Depends(require_read)]
Editor = Annotated[Principal, Depends(require_role("editor"))]

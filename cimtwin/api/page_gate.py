"""Closed reads close the pages too: with ``open_reads`` off, the OpenAPI document, the docs
pages, the styles, legends and glyphs, ``/map`` and everything under ``/viewer`` (pages and
their static assets) need a read key, like the data routes.

A browser navigating to a page cannot send a header, and the scripts, workers and assets a
page loads send none either. So here a key is also taken from the ``key`` query parameter
(the viewer pages' own convention, ``/viewer/?key=...``) and from the ``cimtwin_key`` cookie;
a page opened with a valid ``?key=`` sets that cookie (HttpOnly, SameSite=Strict, Secure on
https) so its assets follow. The cookie and the query parameter count only here, for GET and
HEAD of these paths, never for the data routes (which keep taking headers: no cookie-borne
writes).

Installed only when reads are closed: open reads pay nothing."""

from __future__ import annotations

from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from fastapi import HTTPException
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cimtwin.api.auth import BEARER, authenticate
from cimtwin.api.errors import error_response

#: the paths (and everything below them) closed reads close besides the data routes
GATED = ("/openapi.json", "/docs", "/redoc", "/styles", "/legends", "/fonts", "/map", "/viewer")
COOKIE = "cimtwin_key"


def gated(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in GATED)


def _header_key(scope: Scope) -> str | None:
    headers = dict((k.lower(), v) for k, v in scope["headers"])
    scheme, _, credentials = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get(b"x-api-key", b"").decode("latin-1").strip() or None


def _query_key(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("key")
    return values[0].strip() or None if values else None


def _cookie_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name.lower() == b"cookie":
            morsel = SimpleCookie(value.decode("latin-1")).get(COOKIE)
            if morsel is not None and morsel.value.strip():
                return morsel.value.strip()
    return None


class PageGate:
    """ASGI middleware: a read key for the :data:`GATED` paths, else a 401 in the service's
    error format."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not gated(scope["path"]):
            await self.app(scope, receive, send)
            return
        from_query = _query_key(scope) if scope["method"] in ("GET", "HEAD") else None
        key = _header_key(scope) or from_query
        if key is None and scope["method"] in ("GET", "HEAD"):
            key = _cookie_key(scope)
        if key is None:
            response = error_response(
                401,
                "reads need an API key on this service (open_reads is off): send it as "
                "'Authorization: Bearer <key>' or 'X-API-Key: <key>', or open a page "
                "with ?key=<key>",
                headers=BEARER,
            )
            await response(scope, receive, send)
            return
        try:
            async with scope["app"].state.pool.connection() as conn:
                await authenticate(conn, key)
        except HTTPException as exc:
            response = error_response(exc.status_code, str(exc.detail), headers=BEARER)
            await response(scope, receive, send)
            return
        if from_query is None or from_query != key:
            await self.app(scope, receive, send)
            return
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = f"{COOKIE}={key}; Path=/; HttpOnly; SameSite=Strict{secure}"

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("Set-Cookie", cookie)
            await send(message)

        await self.app(scope, receive, send_with_cookie)

"""Headers every answer carries, and the last word on errors nothing else caught.

A ``Content-Security-Policy`` on the HTML pages (:data:`PAGE_CSP`),
``X-Content-Type-Options: nosniff`` (a browser never runs a tile or a GeoJSON answer as a
script) and ``Referrer-Policy: no-referrer`` (pages may be opened with ``?key=``: the key must
not leave in a Referer). An exception no handler took answers a 500 in the service's JSON
error format (:mod:`cimtwin.api.errors`), logged with its traceback, instead of Starlette's
plain-text page; once an answer has started it cannot be replaced and is left to the
server. A body that does not arrive in time is a 408 (:class:`BodyTimeout`); headers that do
not arrive are the server's to time out (:mod:`cimtwin.api.header_deadline`)."""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cimtwin.api.errors import error_response

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


#: for the HTML pages (the viewers, /docs, /redoc): everything from this origin only. CesiumJS
#: needs 'unsafe-eval' (its widgets' knockout bindings compile with ``new Function``) and
#: WebAssembly (draco, KTX2); MapLibre and Cesium run workers from blob: URLs and draw images
#: from data: and blob:; the pages and Swagger UI have inline scripts ('unsafe-inline' until
#: they move to files or hashes); no plugins, no framing by other sites, no foreign forms
PAGE_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline' 'unsafe-eval' 'wasm-unsafe-eval' blob:",
        "worker-src 'self' blob:",
        "child-src 'self' blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self' data: blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'self'",
    )
)


class Hardening:
    """ASGI middleware: :data:`SECURITY_HEADERS` on every answer, JSON 500s."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_hardened(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                html = headers.get("content-type", "").startswith("text/html")
                if html and "content-security-policy" not in headers:
                    headers["Content-Security-Policy"] = PAGE_CSP
            await send(message)

        try:
            await self.app(scope, receive, send_hardened)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = error_response(500, "internal error: the server log has the details")
            await response(scope, receive, send_hardened)


class BodyTimeout:
    """ASGI middleware: a request body must arrive within ``seconds`` of the request's start,
    else a 408 in the service's error format and the connection is dropped.

    A half-sent body (slowloris) would otherwise hold a worker's request, and any pool
    connection it took, for as long as the client likes; the deadline is for the whole body,
    not per chunk, so a byte every few seconds does not keep it alive. After the body, the
    app's waits for a disconnect go through untimed."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        body_done = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise _SlowBody from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, watched_send)
        except _SlowBody:
            if started:
                raise
            response = error_response(
                408,
                f"the request body did not arrive within {self.seconds:g} s",
                headers={"Connection": "close"},
            )
            await response(scope, receive, watched_send)


class _SlowBody(Exception):
    """The body's deadline passed (raised out of ``receive``, caught by :class:`BodyTimeout`)."""


class TrustedHosts:
    """ASGI middleware: only requests whose ``Host`` is on the list get in (400 otherwise, in
    the error format). Style documents and TileJSON build their URLs from the request's host
    when ``CIMTWIN_PUBLIC_URL`` is unset: an attacker's ``Host`` must not end up in them (or in
    a proxy cache holding them). ``*.example.org`` takes the subdomains."""

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        self.app = app
        self.hosts = [h.lower() for h in hosts]

    def allowed(self, host: str) -> bool:
        name = host.lower().rsplit(":", 1)[0] if not host.endswith("]") else host.lower()
        return any(name == h or (h.startswith("*.") and name.endswith(h[1:])) for h in self.hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if not self.allowed(host):
                response = error_response(400, "this service does not answer for that Host")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

"""Headers every answer carries, and the last word on errors nothing else caught.

``X-Content-Type-Options: nosniff`` (a browser never runs a tile or a GeoJSON answer as a
script) and ``Referrer-Policy: no-referrer`` (pages may be opened with ``?key=``: the key must
not leave in a Referer). An exception no handler took answers a 500 in the service's JSON
error format (:mod:`cimtwin.api.errors`), logged with its traceback, instead of Starlette's
plain-text page; once an answer has started it cannot be replaced and is left to the
server."""

from __future__ import annotations

import logging

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cimtwin.api.errors import error_response

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


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
            await send(message)

        try:
            await self.app(scope, receive, send_hardened)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = error_response(500, "internal error: the server log has the details")
            await response(scope, receive, send_hardened)

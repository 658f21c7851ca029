"""A size limit on every request body, enforced before any route parses it.

Without it FastAPI reads and parses whatever a client sends: a 100 MB JSON body was
accepted, and a 6.8 MB one of stray keys held the event loop for 11 s. This ASGI middleware
answers 413 (in the service's error format, naming the limit) as soon as ``Content-Length``
or the bytes received pass ``max_body_kb``; bodies under it are read here and handed on, so
a route never sees a partial body. Routes that read their own body with their own, larger
limit (``POST /grids/assign``: ``assign_max_body_mb``, rows streamed in) are passed through.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cimtwin.api.errors import error_response

#: methods whose bodies no route reads: passed through untouched (the tile path among them)
NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyLimit:
    """413 for a body over ``max_bytes``; ``own_limit`` paths enforce their own."""

    def __init__(self, app: ASGIApp, /, max_bytes: int, own_limit: frozenset[str]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.own_limit = own_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in NO_BODY or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # http.disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    def _exempt(self, scope: Scope) -> bool:
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return path in self.own_limit

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        kb = self.max_bytes // 1024
        response = error_response(
            413,
            f"request body larger than {kb} KB, the limit of this service "
            "(setting CIMTWIN_MAX_BODY_KB): send a smaller request",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)

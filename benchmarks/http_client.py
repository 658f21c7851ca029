"""A lean HTTP/1.1 keep-alive client for the load benchmarks.

The benchmarks run the load generator on the same two cores as the servers they measure.
httpx spends about 1 ms of CPU per request, which on this machine is a third of the CPU
and turns up as queueing in every server's latency. This client does only what the
benchmarks need (one keep-alive connection per simulated client, Content-Length and
chunked bodies, gzip) over asyncio streams, at a few tens of microseconds per request, so
the figures describe the servers rather than the client. It is not a general HTTP client:
no TLS, no redirects, no proxies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import zlib
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

try:  # the API's own dependencies include uvloop (uvicorn[standard])
    import uvloop
except ImportError:  # pragma: no cover - falls back to the default loop
    uvloop = None


def run(coro):  # noqa: ANN001, ANN201 - passes any coroutine through
    """asyncio.run on uvloop when available (lower per-request cost in the client)."""
    if uvloop is not None:
        return uvloop.run(coro)
    return asyncio.run(coro)


class HTTPError(Exception):
    """The connection failed or the answer was not HTTP/1.1."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes  # decoded (gunzipped when the server sent gzip), unless decode=False
    wire: int  # body bytes on the wire

    @property
    def content(self) -> bytes:
        return self.body

    def json(self):  # noqa: ANN201
        return jsonlib.loads(self.body)


class Connection:
    """One keep-alive connection; reconnects when the server closed it."""

    def __init__(
        self,
        base: str,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
        decode: bool = True,
    ) -> None:
        u = urlsplit(base)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"only http://host:port bases: {base!r}")
        self.host, self.port = u.hostname, u.port or 80
        self.prefix = u.path.rstrip("/")
        self.timeout = timeout
        self.decode = decode  # False: leave gzip bodies compressed (callers decode later)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head_tail = f"Host: {self.host}:{self.port}\r\n{extra}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        json: object = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        target = self.prefix + path + ("?" + urlencode(params) if params else "")
        body = b"" if json is None else jsonlib.dumps(json).encode()
        head = f"{method} {target} HTTP/1.1\r\n{self._head_tail}"
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if body or method in ("POST", "PUT", "PATCH"):
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        data = (head + "\r\n").encode("latin-1") + body
        for attempt in (0, 1):  # a kept-alive connection may have been closed by the server
            fresh = self._writer is None
            if fresh:
                await self._connect()
            try:
                return await asyncio.wait_for(self._exchange(data, method), self.timeout)
            except (OSError, asyncio.IncompleteReadError, HTTPError) as exc:
                await self.close()
                if fresh or attempt:
                    raise HTTPError(f"{method} {target}: {type(exc).__name__}: {exc}") from exc
            except TimeoutError as exc:
                await self.close()
                raise HTTPError(f"{method} {target}: no answer in {self.timeout:.0f} s") from exc
        raise AssertionError("unreachable")

    async def _exchange(self, data: bytes, method: str) -> Response:
        assert self._reader is not None and self._writer is not None
        self._writer.write(data)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise HTTPError(f"not an HTTP/1.x status line: {lines[0]!r}")
        status = int(parts[1])
        hdrs: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                hdrs[k.strip().lower()] = v.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            raw = b""
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            raw = await self._read_chunked()
        elif "content-length" in hdrs:
            raw = await self._reader.readexactly(int(hdrs["content-length"]))
        else:  # body until close
            raw = await self._reader.read()
            await self.close()
        if hdrs.get("connection", "").lower() == "close":
            await self.close()
        body = raw
        if raw and self.decode and hdrs.get("content-encoding") == "gzip":
            body = zlib.decompress(raw, 16 + zlib.MAX_WBITS)
        return Response(status, hdrs, body, len(raw))

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        out = bytearray()
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while (await self._reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return bytes(out)
            out += await self._reader.readexactly(size + 2)
            del out[-2:]

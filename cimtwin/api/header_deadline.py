"""A deadline for request headers in ``cimtwin serve`` (uvicorn has none).

uvicorn times out a keep-alive connection that stays idle between requests, but not one that
never sends anything or sends its request line and headers a byte now and then (slowloris):
such a connection holds a socket and a file descriptor of the worker for as long as the
client likes, and a few thousand of them exhaust the process. :class:`HeaderDeadlineProtocol`
is uvicorn's httptools protocol with one rule added: the headers of each request must be
complete within ``CIMTWIN_HEADER_TIMEOUT_S`` of the connection opening or of the first byte
after the previous answer, else the connection is closed. The deadline is for the whole
header block, not per byte. Bodies have their own deadline (:class:`~cimtwin.api.hardening.
BodyTimeout`) and an idle keep-alive connection uvicorn's ``timeout_keep_alive``.

It works from what both of uvicorn's HTTP protocols do: a request whose headers are complete
gets a new ``cycle``; a request is in flight until its cycle's response is complete.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cimtwin.settings import get_settings


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol closing connections whose headers come too slowly."""

    #: seconds; None: ``CIMTWIN_HEADER_TIMEOUT_S`` (read in each worker process)
    header_timeout_s: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = self.header_timeout_s or get_settings().header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._seen_cycle: object = None

    def _in_flight(self) -> bool:
        """A request whose headers arrived is not answered yet (its body may still come)."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self._in_flight() and not self.transport.is_closing():
            self.logger.info(
                "%s: request headers not complete within %g s; connection closed",
                "{}:{}".format(*self.client) if self.client else "client",
                self.header_timeout,
            )
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that sends nothing is timed out too

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._seen_cycle:  # a request's headers are complete
            self._seen_cycle = self.cycle
            self._disarm()
        if self.transport.is_closing():
            self._disarm()
        elif not self._in_flight():  # the bytes are the start of the next request's headers
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


#: the ``http=`` argument of ``uvicorn.run`` (an import string: workers are spawned processes)
PROTOCOL = f"{__name__}:{HeaderDeadlineProtocol.__name__}"

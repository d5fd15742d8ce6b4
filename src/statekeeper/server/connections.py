"""Slow, numerous and bloated clients: a deadline and a size for request headers, and a
cap on connections.

uvicorn closes an idle keep-alive connection, but not one that never finishes
its request headers (a "slowloris" client sending a byte now and then), and
its ``limit_concurrency`` answers 503 to *requests* while such connections stay
open: a few hundred of them would hold the server. Reverse proxies bound both
(nginx: ``client_header_timeout 60s``, ``worker_connections 512``); a server
exposed without one must too.

:func:`bounded_protocol` makes the server's protocol class
(:class:`~statekeeper.server.wire.HeadersOnlyProtocol`, uvicorn's httptools
protocol without trailers in the headers) that:

- answers ``408`` and closes a connection whose request headers are not
  complete ``header_timeout`` seconds after the connection opened or the
  request began (the body is bounded by the request timeout of
  ``server/limits.py``, which covers reading it);
- answers ``503`` and closes a connection opened while ``max_connections``
  are already open;
- answers ``431`` and closes a connection whose request headers go on past
  :data:`MAX_HEAD` bytes. httptools sets no bound of its own, and it joins a
  header's pieces as they arrive, which grows with the square of the header's
  size: one request with a 100 MB header held the event loop for seconds, and
  every other client with it. Terraform's headers are well under a kilobyte;
  nginx takes at most 32 KiB.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from statekeeper.server.wire import HeadersOnlyProtocol

__all__ = ["MAX_HEAD", "bounded_protocol"]

#: Bytes of a request's headers past which it is refused (431).
MAX_HEAD = 64 * 1024

_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\nconnection: close\r\n"
    b"content-length: 34\r\n\r\nthe request headers took too long\n"
)
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
    b"connection: close\r\ncontent-length: 43\r\n\r\nthe request headers are larger than 64 KiB\n"
)
_FULL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nconnection: close\r\n"
    b"retry-after: 1\r\ncontent-length: 37\r\n\r\nthe server has too many connections\n"
)


class _BoundedProtocol(HeadersOnlyProtocol):
    header_timeout: float = 60.0
    max_connections: int = 512

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        #: The request's headers are being read, and how many bytes of them so far.
        self._in_head = True
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        in_head = self._in_head
        super().data_received(data)
        # Counted only for reads wholly inside the headers: a read that began a
        # request may end the last one's body. So at most one read (256 KiB) more.
        if in_head and self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD and not self.transport.is_closing():
                self._headers_done()
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(_FULL)
            transport.close()
            return
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_done()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        if self._header_deadline is None:
            self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_done()
        self._in_head = False
        super().on_headers_complete()

    def _await_headers(self) -> None:
        if self.header_timeout > 0:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _headers_done(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            # Nothing of ours is being answered: the 408 is the connection's last word.
            self.transport.write(_TIMEOUT)
        self.transport.close()


def bounded_protocol(header_timeout: float, max_connections: int) -> type[HttpToolsProtocol]:
    """The server's protocol with these bounds (pass it as ``uvicorn.Config(http=…)``)."""
    return type(
        "BoundedHttpToolsProtocol",
        (_BoundedProtocol,),
        {"header_timeout": header_timeout, "max_connections": max_connections},
    )

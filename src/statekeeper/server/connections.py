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

It also refuses two kinds of request before they reach the ASGI app:

- ``400 bad_request`` for bytes the HTTP parser refuses (a malformed request
  line, two ``Content-Length`` headers), naming the parser's reason; uvicorn
  answers those in plain text, after logging its warning, which is kept;
- ``405 method_not_allowed`` for ``CONNECT``, a proxy's method. llhttp reads a
  CONNECT as a protocol upgrade: uvicorn either parsed its ``host:port`` as a
  path (a plain-text 400) or ran the app and then logged two warnings about
  WebSocket libraries (for ``CONNECT /path``). One warning is logged instead;
- ``400 bad_request`` for a request that asks to upgrade the connection
  (``Connection: Upgrade`` with ``Upgrade: websocket`` or ``h2c``) and has a body:
  llhttp ends such a request at its headers, so its body would be lost (a state
  written as empty) or read as the next request. One warning is logged.

An upgrade request without a body is answered as plain HTTP/1.1, as RFC 9110
(section 7.8) lets a server that speaks no other protocol do: uvicorn's two
warnings about WebSocket libraries are not logged, and the bytes llhttp hands
back as the new protocol's (a request sent right after it) are read as HTTP.

Each refusal is in the server's one error shape (``{"error", "message"}``, see
``server/errors.py``) with ``connection: close``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from http import HTTPStatus
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from statekeeper.server.wire import HeadersOnlyProtocol
from statekeeper.telemetry.access import NOSNIFF

__all__ = ["MAX_HEAD", "bounded_protocol"]

#: Bytes of a request's headers past which it is refused (431).
MAX_HEAD = 64 * 1024


def _parser_fault(exc: BaseException | None) -> str:
    """What the HTTP parser found wrong, in words that hold none of the request's bytes."""
    if exc is not None and isinstance(exc.__context__, httptools.HttpParserInvalidURLError):
        return "the request target is not a path such as /state/NAME"
    if isinstance(exc, httptools.HttpParserError) and not isinstance(
        exc, httptools.HttpParserCallbackError
    ):
        return str(exc)  # llhttp's reason, a fixed text: "Duplicate Content-Length"
    return "the request could not be parsed"


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request with these headers (names lower-cased) has a body."""
    return any(
        name == b"transfer-encoding" or (name == b"content-length" and value.strip(b"0"))
        for name, value in headers
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
        #: Answered below the app and closed: the parser's further callbacks do nothing.
        self._refused = False
        #: The bytes being parsed, and those after an upgrade request's headers in them.
        self._received = self._after_upgrade = b""

    def data_received(self, data: bytes) -> None:
        # The parser stops at the end of an upgrade request's headers: the bytes
        # after them are parsed in another pass (a loop, not a call per request).
        while data:
            self._received, self._after_upgrade = data, b""
            self._parse(data)
            data = self._after_upgrade

    def _parse(self, data: bytes) -> None:
        in_head = self._in_head
        super().data_received(data)
        # Counted only for reads wholly inside the headers: a read that began a
        # request may end the last one's body. So at most one read (256 KiB) more.
        if in_head and self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD and not self.transport.is_closing():
                self._headers_done()
                self._refuse(
                    431,
                    "headers_too_large",
                    f"the request headers are larger than {MAX_HEAD // 1024} KiB; "
                    "send the request with smaller headers",
                )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(
                503,
                "too_many_connections",
                f"the server has {self.max_connections} connections open, its limit "
                "(max_connections); retry in a second",
                (b"retry-after", b"1"),
            )
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
        if self.parser.get_method() == b"CONNECT":
            # Most likely a client given this server as its HTTPS proxy.
            self.logger.warning("CONNECT refused (405): statekeeper is not a proxy")
            self._refuse(
                405,
                "method_not_allowed",
                "CONNECT is not allowed: statekeeper is not a proxy; use its URL as "
                "Terraform's backend address, not as a proxy",
            )
            return
        if self.parser.should_upgrade() and _has_body(self.headers):
            self.logger.warning("Upgrade request with a body refused (400)")
            self._refuse(
                400,
                "bad_request",
                "a request that asks to upgrade the connection (Connection: Upgrade) "
                "cannot have a body: statekeeper speaks HTTP/1.1 only; send the request "
                "without the Upgrade header",
            )
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # A refused CONNECT's message ends with no request cycle for uvicorn to complete.
        if not self._refused:
            super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this while it handles the parser's error, having logged `msg`
        # (a fixed text, without the request's bytes): the error is the one in hand.
        self._refuse(
            400,
            "bad_request",
            f"the request is not valid HTTP/1.1: {_parser_fault(sys.exception())}; "
            "correct it and send it again on a new connection",
        )

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn calls this once the parser has ended an upgrade request at its
        # headers, while it handles the parser's HttpParserUpgrade. A refused request
        # (CONNECT, a body) is answered and closed; any other has been handed to the
        # app as plain HTTP, and what follows its headers is the next request.
        upgrade = sys.exception()
        if self._refused or not isinstance(upgrade, httptools.HttpParserUpgrade):
            return
        self._after_upgrade = self._received[upgrade.args[0] :]

    def _refuse(self, status: int, code: str, message: str, *headers: tuple[bytes, bytes]) -> None:
        """Answer ``status`` in the server's error shape, and close the connection.

        While the app answers the request in hand, or owes an answer to an earlier
        one (HTTP/1.1 pipelining), nothing is written: the refusal would cut into
        that answer, or be read as it. The connection then ends after that answer,
        with nothing more read.
        """
        if self._refused:
            return
        self._refused = True
        cycle = self.cycle
        answering = cycle is not None and not cycle.response_complete
        if answering and (cycle.response_started or not cycle.more_body):
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        body = json.dumps({"error": code, "message": message}).encode()
        fields = [
            *self.server_state.default_headers,  # the Date header, as every answer has
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            NOSNIFF,  # as every answer of the app's (telemetry/access.py)
            *headers,
        ]
        head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
        head += b"".join(name + b": " + value + b"\r\n" for name, value in fields)
        self.transport.write(head + b"\r\n" + body)
        self.transport.close()

    def _await_headers(self) -> None:
        if self.header_timeout > 0:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _headers_done(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self._refuse(
                408,
                "header_timeout",
                f"the request headers took longer than {self.header_timeout:g} s "
                "(header_timeout); send the whole request at once",
            )


def bounded_protocol(header_timeout: float, max_connections: int) -> type[HttpToolsProtocol]:
    """The server's protocol with these bounds (pass it as ``uvicorn.Config(http=…)``)."""
    return type(
        "BoundedHttpToolsProtocol",
        (_BoundedProtocol,),
        {"header_timeout": header_timeout, "max_connections": max_connections},
    )

"""The sender's HTTP: one signed POST over a kept-alive HTTP/1.1 connection.

A delivery is one small POST and a short answer that is not read, only its
status; the standard library's client made it cost more CPU than the rest of a
delivery of a small event (an ``email`` parser for the answer's headers, a
name resolution per request). This client writes the request in one buffer
and reads the answer's status line, its framing headers and its body
(``Content-Length``, chunked, or up to the close), and nothing else.

Connections are kept per destination (scheme, host, port), one each (the
sender delivers one at a time), at most :data:`_DESTINATIONS` of them, each
closed once idle for :data:`_IDLE` seconds. A new connection goes to an address
the SSRF guard (:mod:`statekeeper.hooks.guard`) resolved and checked just then.
A kept connection the receiver closed meanwhile is noticed before the request
is written (it reads as ended) and replaced; one that breaks while the request
is written is replaced and the request written again once: the receiver cannot
have read a whole request. Once a request was written whole, a broken answer is
a failed attempt (retried later: at least once). Redirects are not followed.

The timeout bounds a delivery as a whole, from its connection to the answer's
last byte read, not each read on its own: a receiver that answers a byte at a
time cannot hold the sender, and the other hooks' deliveries behind it, past it.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from statekeeper import __version__
from statekeeper.hooks.guard import destinations
from statekeeper.hooks.signing import HEADER, sign

if TYPE_CHECKING:
    from statekeeper.hooks.guard import IPNetwork
    from statekeeper.hooks.model import Policy, Subscription

__all__ = ["TRANSPORT_ERRORS", "Connections", "post"]

#: What a delivery that never got an answer raises.
TRANSPORT_ERRORS = (OSError,)
#: Seconds a connection is kept unused (receivers close theirs after 5 to 120 s).
_IDLE = 30.0
#: Destinations whose connections are kept at once.
_DESTINATIONS = 16
#: URLs whose request line and destination are kept (one per subscription).
_ROUTES = 256
#: The most of an answer read (headers; a body is read only to keep the connection).
_HEAD_LIMIT = 64 << 10
_BODY_LIMIT = 1 << 20


class BadAnswer(ConnectionError):
    """The receiver's answer is not HTTP/1.x as this client reads it."""


class _Connection:
    """One socket to a receiver and what is read of it ahead."""

    def __init__(self, sock: socket.socket, target: tuple[str, str, int]) -> None:
        self.sock = sock
        self.target = target
        self.used = time.monotonic()
        self.requests = 0

    def dropped(self) -> bool:
        """True when the receiver closed the idle connection (or wrote to it unasked)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        self.sock.close()


class Connections:
    """Kept-alive connections to receivers. Used by one thread at a time."""

    def __init__(self, timeout: float, allow: Sequence[IPNetwork | str] = ()) -> None:
        self.timeout = timeout
        self.allow = allow
        self._open: dict[tuple[str, str, int], _Connection] = {}
        self._routes: dict[str, tuple[tuple[str, str, int], str]] = {}
        #: Connections opened so far (the tests count them).
        self.opened = 0

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST ``body`` to ``url``; the answer's status. A ``TimeoutError`` when it
        takes longer than the timeout in all."""
        deadline = time.monotonic() + self.timeout
        key, start = self._routes.get(url) or self._route(url)
        lines = [f"{start}Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self._expire()
        conn = self._open.pop(key, None)
        if conn is not None and conn.dropped():
            conn.close()
            conn = None
        if conn is None:
            conn = self._connect(url, key, deadline)
        try:
            _bound(conn.sock, deadline)
            conn.sock.sendall(request)
        except OSError:
            conn.close()
            if not conn.requests:
                raise
            # A kept connection broke under the request: the receiver has not read it
            # whole, so it is written once more, on a new connection.
            conn = self._connect(url, key, deadline)
            try:
                _bound(conn.sock, deadline)
                conn.sock.sendall(request)
            except OSError:
                conn.close()
                raise
        try:
            status, keep = _answer(conn.sock, deadline)
        except OSError:
            conn.close()
            raise
        conn.requests += 1
        conn.used = time.monotonic()
        if keep:
            self._open[key] = conn
        else:
            conn.close()
        return status

    def destination(self, url: str) -> tuple[str, str, int]:
        """Where ``url``'s requests go: its scheme, host and port."""
        return (self._routes.get(url) or self._route(url))[0]

    def _route(self, url: str) -> tuple[tuple[str, str, int], str]:
        """Where ``url``'s requests go and their first lines, worked out once per URL."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{port}"
        if len(self._routes) >= _ROUTES:
            self._routes.clear()
        route = self._routes[url] = (
            (parts.scheme, host, port),
            f"POST {target} HTTP/1.1\r\nHost: {netloc}\r\n",
        )
        return route

    def _connect(self, url: str, key: tuple[str, str, int], deadline: float) -> _Connection:
        error: OSError | None = None
        for family, address in destinations(url, self.allow):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                _bound(sock, deadline)
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if key[0] == "https":
                    _bound(sock, deadline)  # the handshake's reads too
                    sock = _tls().wrap_socket(sock, server_hostname=key[1])
            except OSError as exc:
                sock.close()
                error = exc
                continue
            self.opened += 1
            return _Connection(sock, key)
        raise error or ConnectionError(f"{key[1]} resolves to no address")

    def _expire(self) -> None:
        now = time.monotonic()
        for key, conn in list(self._open.items()):
            if now - conn.used > _IDLE:
                conn.close()
                del self._open[key]
        while len(self._open) >= _DESTINATIONS:
            oldest = min(self._open, key=lambda k: self._open[k].used)
            self._open.pop(oldest).close()

    def close(self) -> None:
        for conn in self._open.values():
            conn.close()
        self._open.clear()


def _bound(sock: socket.socket, deadline: float) -> None:
    """Let ``sock``'s next call wait only until ``deadline`` (a ``TimeoutError`` once
    it has passed)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    sock.settimeout(left)


_TLS: Any = None


def _tls() -> Any:
    """The TLS context, made once (ssl is imported only where a receiver is https)."""
    global _TLS
    if _TLS is None:
        import ssl

        _TLS = ssl.create_default_context()
    return _TLS


class _Reader:
    """Reads an answer from a socket, in the chunks it arrives in."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""

    def more(self) -> bool:
        _bound(self.sock, self.deadline)
        data = self.sock.recv(16384)
        self.buffer += data
        return bool(data)

    def head(self) -> list[str]:
        """The lines of an answer's head (its status line and fields), read whole."""
        while True:
            end, gap = self.buffer.find(b"\r\n\r\n"), 4
            if end < 0:  # lines ended by a bare LF, as some servers write them
                end, gap = self.buffer.find(b"\n\n"), 2
            if end >= 0:
                break
            if len(self.buffer) > _HEAD_LIMIT or not self.more():
                raise BadAnswer("the answer ended inside its head")
        head, self.buffer = self.buffer[:end], self.buffer[end + gap :]
        return head.decode("latin-1").splitlines()

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > _HEAD_LIMIT or not self.more():
                raise BadAnswer("the answer ended inside a line")
        line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
        return line

    def skip(self, count: int) -> None:
        while len(self.buffer) < count:
            if not self.more():
                raise BadAnswer("the answer's body ended early")
        self.buffer = self.buffer[count:]


def _answer(sock: socket.socket, deadline: float) -> tuple[int, bool]:
    """Read one answer by ``deadline``: its status, and whether the connection may be
    used again."""
    try:
        return _read_answer(_Reader(sock, deadline))
    except ValueError as exc:  # a length or a chunk size that is not a number
        raise BadAnswer(f"the answer's framing cannot be read: {exc}") from exc


def _read_answer(reader: _Reader) -> tuple[int, bool]:
    while True:
        status, version, fields = _head(reader)
        if not 100 <= status < 200:
            break  # a 1xx is followed by the answer
    connection = fields.get("connection", "").lower()
    keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    if status in (204, 304):
        return status, keep
    if "chunked" in fields.get("transfer-encoding", "").lower():
        total = 0
        while size := int(reader.line().split(b";", 1)[0].strip(), 16):
            if size < 0:
                raise BadAnswer("the answer has a negative chunk size")
            total += size
            if total > _BODY_LIMIT:
                return status, False
            reader.skip(size + 2)
        while reader.line():  # trailers, up to the empty line
            pass
        return status, keep and not reader.buffer
    length = fields.get("content-length")
    if length is None:
        return status, False  # the body runs to the close: not read
    if int(length) > _BODY_LIMIT:
        return status, False
    reader.skip(int(length))
    return status, keep and not reader.buffer


def _head(reader: _Reader) -> tuple[int, str, dict[str, str]]:
    first, *lines = reader.head() or [""]
    try:
        version, code, *_ = first.split(" ", 2)
        status = int(code)
    except ValueError as exc:
        raise BadAnswer("the answer has no HTTP status line") from exc
    if not 100 <= status <= 999:
        raise BadAnswer(f"the answer's status {status} is not an HTTP status")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadAnswer(f"the answer is not HTTP/1.x ({version[:20]!r})")
    fields: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return status, version, fields


def post(
    sub: Subscription, body: bytes, event_id: str, policy: Policy, connections: Connections
) -> int:
    """Send one signed delivery; the HTTP status (raises StatekeeperError or a transport
    error). The guard checks the destination for each connection made."""
    # Before the request is made: a URL stored before it was refused would end in a
    # UnicodeEncodeError, or with a line break in it, write a header of its own.
    sub.check_sendable()
    headers = {
        "Content-Type": "application/cloudevents+json",
        HEADER: sign(sub.secret, body),
        "Statekeeper-Event-Id": event_id,
        "User-Agent": f"statekeeper/{__version__}",
    }
    return connections.post(sub.url, body, headers)

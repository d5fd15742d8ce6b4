"""uvicorn's HTTP/1.1 protocol, with a chunked body's trailer kept out of the headers,
and a large body read from the socket in larger pieces.

uvicorn's httptools protocol appends every field the parser reports to the
request's header list, trailer fields included, and it parses a whole packet
before the application runs: a ``Content-MD5`` or an ``Authorization`` sent
after a chunked body would read as a header. The h11 protocol drops trailers
but costs about a third more time on a large state upload, so this keeps
httptools and gives the trailer a list of its own that nothing reads.

asyncio reads a socket 256 KiB at a time, and every read is a turn of the
event loop that takes the GIL back from the thread checking the state being
uploaded (four turns per MiB, each waiting up to the interpreter's switch
interval while that thread runs). Once a read fills the buffer, the body is
large: the rest of the request is read a MiB at a time. uvloop's transport reads
as libuv hands it the bytes and has no such setting: on it nothing changes.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["LARGE_READ", "HeadersOnlyProtocol"]

#: The read size for the rest of a request whose body filled a read.
LARGE_READ = 1 << 20


class HeadersOnlyProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # The request's scope keeps the header list built so far; fields parsed
        # from here on (a trailer) go to a fresh list, reset by the next request.
        self.headers = []

    def data_received(self, data: bytes) -> None:
        # asyncio's socket transport reads max_size bytes at a time (a TLS
        # transport has no such attribute and is left as it is).
        read = getattr(self.transport, "max_size", None)
        if read is not None and len(data) == read < LARGE_READ:
            self.transport.max_size = LARGE_READ  # type: ignore[attr-defined]
        super().data_received(data)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next request on the connection is read at asyncio's own size.
        # uvloop's transport (a C type) has no ``__dict__``, and never had the attribute.
        if "max_size" in getattr(self.transport, "__dict__", ()):
            del self.transport.max_size  # type: ignore[attr-defined]

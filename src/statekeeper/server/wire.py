"""uvicorn's HTTP/1.1 protocol, with a chunked body's trailer kept out of the headers.

uvicorn's httptools protocol appends every field the parser reports to the
request's header list, trailer fields included, and it parses a whole packet
before the application runs: a ``Content-MD5`` or an ``Authorization`` sent
after a chunked body would read as a header. The h11 protocol drops trailers
but costs about a third more time on a large state upload, so this keeps
httptools and gives the trailer a list of its own that nothing reads.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeadersOnlyProtocol"]


class HeadersOnlyProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # The request's scope keeps the header list built so far; fields parsed
        # from here on (a trailer) go to a fresh list, reset by the next request.
        self.headers = []

"""Reading request bodies within the configured limit (chunked bodies included)."""

from __future__ import annotations

import io
from collections.abc import Callable

from starlette.requests import Request

from statekeeper.errors import BadRequest, PayloadTooLarge

__all__ = ["read_body", "single_header"]


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than the limit of {limit} bytes "
        f"({limit / 1024**2:.0f} MiB); raise max_body (STATEKEEPER_MAX_BODY) if states "
        "this large are expected"
    )


def single_header(request: Request, name: str) -> str | None:
    """The value of a header that must appear at most once; two are a 400.

    Two values of one header are read differently by different proxies and
    frameworks (first wins, last wins, joined), so none of them is trusted.
    """
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"the request carries {len(values)} {name} headers; send exactly one")
    return values[0] if values else None


async def read_body(
    request: Request,
    limit: int,
    too_large: Callable[[int], PayloadTooLarge] = _too_large,
) -> bytes:
    """The whole body; 413 (from ``too_large``) as soon as it is known to exceed ``limit``."""
    declared = single_header(request, "content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise BadRequest(f"the Content-Length header {declared!r} is not a number")
        if int(declared) > limit:
            raise too_large(limit)
    # BytesIO grows one buffer and hands it over without a copy; a list of
    # chunks and their join would hold the body twice at the end.
    buffer = io.BytesIO()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        buffer.write(chunk)
    return buffer.getvalue()

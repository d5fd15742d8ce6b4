"""Reading request bodies within the configured limit (chunked bodies included)."""

from __future__ import annotations

import io

from starlette.requests import Request

from statekeeper.errors import BadRequest, PayloadTooLarge
from statekeeper.settings import format_size

__all__ = ["read_body"]


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than the limit of {format_size(limit)} ({limit} bytes); "
        "raise max_body (STATEKEEPER_MAX_BODY) if states "
        "this large are expected"
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body; 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(f"the Content-Length header {declared!r} is not a number")
        if int(declared) > limit:
            raise _too_large(limit)
    # BytesIO grows one buffer and hands it over without a copy; a list of
    # chunks and their join would hold the body twice at the end.
    buffer = io.BytesIO()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        buffer.write(chunk)
    return buffer.getvalue()

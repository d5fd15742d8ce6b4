"""Request limits: a token bucket per caller (429 + Retry-After), a request timeout,
and the size of control bodies.

Terraform retries 429 and 503 and honours ``Retry-After`` (``docs/protocol.md#retries``),
so both answers slow a client down without failing its run at once. The limit on
state bodies (413) lives in ``server/body.py``, applied after the caller is authorized.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statekeeper.errors import PayloadTooLarge, RateLimited
from statekeeper.telemetry.access import answer_of

__all__ = [
    "CONTROL_BODY_LIMIT",
    "STATE_BODY_PATHS",
    "ControlBodyMiddleware",
    "RateLimiter",
    "TimeoutMiddleware",
    "rate_limited_response",
]

#: Routes whose body is a state (or a LockInfo): they read it themselves, after
#: authorizing the caller from the headers, within ``max_body``.
STATE_BODY_PATHS = ("/state/", "/lock/", "/api/v1/content/")
#: Every other body is a small JSON document (a rollback target, a token request).
CONTROL_BODY_LIMIT = 64 * 1024


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """``rate`` requests per second per key, with bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}
        self._guard = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, key: str, now: float | None = None) -> None:
        """Take one token from ``key``'s bucket, or raise RateLimited."""
        if not self.enabled:
            return
        now = time.monotonic() if now is None else now
        with self._guard:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    # Drop full buckets: they hold nothing a new bucket would not.
                    self._buckets = {
                        k: b
                        for k, b in self._buckets.items()
                        if b.tokens + (now - b.stamp) * self.rate < self.burst
                    }
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return
            wait = math.ceil((1 - bucket.tokens) / self.rate)
        raise RateLimited(
            f"{key} sent more than {self.rate:g} requests per second (bursts of "
            f"{self.burst}); retry after {wait} s",
            retry_after=wait,
        )


def rate_limited_response(exc: RateLimited) -> JSONResponse:
    return JSONResponse(
        exc.to_json(), status_code=429, headers={"Retry-After": str(exc.retry_after)}
    )


class TimeoutMiddleware:
    """503 with Retry-After when a request has not started its answer in ``seconds``.

    A blocking store call running in the thread pool cannot be interrupted and
    may still complete (one on the event loop's thread, see ``server/workers.py``,
    delays this answer until it ends); Terraform's retry then meets the idempotent paths (a
    LOCK with the holder's own ID, a write of the bytes already current).
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.seconds <= 0:
            await self.app(scope, receive, send)
            return
        answer, send = answer_of(scope, send)
        try:
            async with asyncio.timeout(self.seconds):
                await self.app(scope, receive, send)
        except TimeoutError:
            if answer.started:
                raise
            response = JSONResponse(
                {
                    "error": "timeout",
                    "message": f"the request took longer than {self.seconds:g} s and was "
                    "abandoned; retry (raise request_timeout if the store is slow)",
                },
                status_code=503,
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)


class ControlBodyMiddleware:
    """Bodies of routes that do not carry a state: at most ``limit`` bytes, read here.

    FastAPI parses a route's JSON body before the route runs, that is before it
    can check a permission; bounding those bodies here means no route reads more
    than a small document for a caller it has not authorized yet.
    """

    def __init__(self, app: ASGIApp, limit: int = CONTROL_BODY_LIMIT) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(STATE_BODY_PATHS):
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(
            f"the body of {scope['method']} {scope['path'][:200]} is larger than "
            f"{self.limit} bytes; only state uploads may be larger"
        )
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _error(too_large)(scope, receive, send)
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.limit:
                await _error(too_large)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def _error(exc: PayloadTooLarge) -> JSONResponse:
    return JSONResponse(exc.to_json(), status_code=exc.status)

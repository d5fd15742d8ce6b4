"""Request limits: a token bucket per caller (429 + Retry-After) and a request timeout.

Terraform retries 429 and 503 and honours ``Retry-After`` (``docs/protocol.md#retries``), so
both answers slow a client down without failing its run at once. The body
size limit (413) lives in ``server/body.py``.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statekeeper.errors import RateLimited

__all__ = ["RateLimiter", "TimeoutMiddleware", "rate_limited_response"]


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
    may still complete; Terraform's retry then meets the idempotent paths (a
    LOCK with the holder's own ID, a write of the bytes already current).
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.seconds <= 0:
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            async with asyncio.timeout(self.seconds):
                await self.app(scope, receive, send_wrapper)
        except TimeoutError:
            if started:
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

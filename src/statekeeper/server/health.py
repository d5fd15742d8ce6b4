"""``/healthz`` (the process answers) and ``/readyz`` (the store and lock table answer).

A load balancer or Kubernetes sends traffic only to a ready replica, so
``/readyz`` asks each backend one cheap question (``probe()``: ``SELECT 1``,
HeadBucket, DescribeTable) and answers 503 naming the one that failed. Both
are public: probes carry no credentials.

Probes run on two threads of their own, never on the request thread pool, and
a probe still running when the next check comes is waited for again instead of
started twice: a store that hangs ties up one thread, not one per check.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from statekeeper import __version__
from statekeeper.errors import StatekeeperError

__all__ = ["Readiness", "healthz", "readyz"]


async def healthz(request: Request) -> Response:
    """The process is alive and serving; says nothing about the store."""
    return JSONResponse({"status": "ok", "version": __version__})


class _Probe:
    """One backend's probe, at most one call in flight."""

    def __init__(self, call: Callable[[], None], pool: concurrent.futures.Executor) -> None:
        self.call = call
        self.pool = pool
        self.running: concurrent.futures.Future[None] | None = None

    async def check(self, timeout: float) -> str:
        """``ok``, or why the backend is not ready."""
        if self.running is None or self.running.done():
            self.running = self.pool.submit(self.call)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self.running)), timeout)
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except StatekeeperError as exc:
            return exc.message
        except Exception as exc:  # noqa: BLE001 - a reason to show, never a traceback
            return f"{type(exc).__name__}: {exc}"
        return "ok"


class Readiness:
    """Probes the store and the lock table, each within ``timeout`` seconds."""

    def __init__(
        self, store: Callable[[], None], locks: Callable[[], None], timeout: float
    ) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(2, "statekeeper-probe")
        self.timeout = timeout
        self.probes = {"store": _Probe(store, self._pool), "locks": _Probe(locks, self._pool)}

    async def check(self) -> dict[str, str]:
        """Each backend's answer: ``ok`` or the reason it is not ready."""
        answers = await asyncio.gather(*(p.check(self.timeout) for p in self.probes.values()))
        return dict(zip(self.probes, answers, strict=True))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def readyz(request: Request) -> Response:
    """200 when the store and lock table both answer; 503 naming the one that did not."""
    readiness: Readiness = request.app.state.readiness
    checks = await readiness.check()
    failed = {name: why for name, why in checks.items() if why != "ok"}
    if not failed:
        return JSONResponse({"status": "ready", "checks": checks})
    return JSONResponse(
        {
            "error": "not_ready",
            "message": "; ".join(f"{name}: {why}" for name, why in failed.items()),
            "status": "unavailable",
            "checks": checks,
        },
        status_code=503,
        headers={"Retry-After": "1"},
    )

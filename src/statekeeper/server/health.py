"""``/healthz`` (the process answers) and ``/readyz`` (the store and lock table answer).

A load balancer or Kubernetes sends traffic only to a ready replica, so
``/readyz`` asks each backend one cheap question (``probe()``: ``SELECT 1``,
HeadBucket, DescribeTable) and answers 503 naming the one that failed. Both
are public: probes carry no credentials.

So ``/readyz`` says only the kind of each failure (the error's code, or
``timeout``): the full reason names the bucket, the table, the endpoint and the
IAM action, which is no business of whoever can reach the port. The reason goes
to the log instead, once each time a backend's answer changes: a load balancer
asking every second repeats a failure, not the log line.

Probes run on two threads of their own, never on the request thread pool, and
a probe still running when the next check comes is waited for again instead of
started twice: a store that hangs ties up one thread, not one per check.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from statekeeper import __version__
from statekeeper.errors import StatekeeperError

__all__ = ["Readiness", "healthz", "readyz"]

log = logging.getLogger("statekeeper.server")

#: What ``/readyz`` says of a failure of each code; a code not here is ``failed``.
_KINDS = {
    "storage_unavailable": "unavailable",
    "storage_access_denied": "access denied",
    "not_supported": "not supported",
    "config": "misconfigured",
    "internal": "unexpected error",
}


async def healthz(request: Request) -> Response:
    """The process is alive and serving; says nothing about the store."""
    return JSONResponse({"status": "ok", "version": __version__})


class _Probe:
    """One backend's probe, at most one call in flight."""

    def __init__(
        self, name: str, call: Callable[[], None], pool: concurrent.futures.Executor
    ) -> None:
        self.name = name
        self.call = call
        self.pool = pool
        self.running: concurrent.futures.Future[None] | None = None
        #: The last answer given, to log a failure when it starts, not at every check.
        self.said = "ok"

    async def check(self, timeout: float) -> str:
        """``ok``, or the kind of failure (``code: what``); its reason is logged."""
        if self.running is None or self.running.done():
            self.running = self.pool.submit(self.call)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self.running)), timeout)
        except TimeoutError:
            said = reason = f"timeout: no answer within {timeout:g} s"
        except StatekeeperError as exc:
            said = f"{exc.code}: {_KINDS.get(exc.code, 'failed')}"
            reason = f"{exc.code}: {exc.message}"
        except Exception as exc:  # noqa: BLE001 - a reason to log, never a traceback
            said = f"internal: {_KINDS['internal']}"
            reason = f"internal: {type(exc).__name__}: {exc}"
        else:
            said = reason = "ok"
        # Compared and set with no await between: checks running side by side on the
        # event loop log one change once.
        if said != self.said:
            if said == "ok":
                log.info("readiness: the %s is ready again", self.name)
            else:
                log.warning("readiness: the %s is not ready: %s", self.name, reason)
            self.said = said
        return said


class Readiness:
    """Probes the store and the lock table, each within ``timeout`` seconds."""

    def __init__(
        self, store: Callable[[], None], locks: Callable[[], None], timeout: float
    ) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(2, "statekeeper-probe")
        self.timeout = timeout
        self.probes = {
            "store": _Probe("store", store, self._pool),
            "locks": _Probe("lock table", locks, self._pool),
        }

    async def check(self) -> dict[str, str]:
        """Each backend's answer: ``ok`` or the kind of failure that makes it not ready."""
        answers = await asyncio.gather(*(p.check(self.timeout) for p in self.probes.values()))
        return dict(zip(self.probes, answers, strict=True))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def readyz(request: Request) -> Response:
    """200 when the store and lock table both answer; 503 naming the one that did not and
    the kind of failure, its reason left to the server log."""
    readiness: Readiness = request.app.state.readiness
    checks = await readiness.check()
    failed = {name: kind for name, kind in checks.items() if kind != "ok"}
    if not failed:
        return JSONResponse({"status": "ready", "checks": checks})
    return JSONResponse(
        {
            "error": "not_ready",
            "message": "; ".join(f"{name}: {kind}" for name, kind in failed.items())
            + " (the server log has the reason)",
            "status": "unavailable",
            "checks": checks,
        },
        status_code=503,
        headers={"Retry-After": "1"},
    )

"""The access line and the HTTP metrics: one pure ASGI middleware, outermost.

For each request it takes the request ID from ``X-Request-ID`` (or makes one),
echoes it in the response, keeps it in :data:`~statekeeper.telemetry.logs.REQUEST`
for every line logged while answering, and at the end writes one access line
and counts the request by route template (``/state/{name}``, never the state's
name), method and status. The event the request caused rides on that line (its
``event`` field) rather than on a line of its own: one line per request. Health
checks and scrapes log at DEBUG, so that a load balancer polling every second
does not drown the log.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statekeeper.security.caller import Caller
from statekeeper.telemetry.logs import REQUEST, RequestLog, event_line
from statekeeper.telemetry.metrics import Metrics

__all__ = ["AccessMiddleware", "route_template"]

log = logging.getLogger("statekeeper.access")

_QUIET = frozenset({"/healthz", "/readyz", "/metrics"})
_GOOD_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_CONVERTER = re.compile(r"\{([^}:]+):[^}]+\}")


def route_template(route: BaseRoute | None) -> str:
    """``/state/{name}`` for the route ``/state/{name:path}``; ``unmatched`` for none."""
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return "unmatched"
    return _template(path)


@functools.lru_cache(maxsize=256)
def _template(path: str) -> str:
    # Routes are few and fixed: the substitution runs once per route, not per request.
    return _CONVERTER.sub(r"{\1}", path)


def _request_id(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            text = value.decode("latin-1")
            if _GOOD_ID.fullmatch(text):
                return str(text)
    # 128 random bits, as a UUID4's hex without its object (a third of the time).
    return os.urandom(16).hex()


def _match(scope: Scope, routes: Sequence[BaseRoute]) -> tuple[BaseRoute | None, dict[str, Any]]:
    """The route a request was meant for, when it was answered before routing (401, 429)."""
    partial: tuple[BaseRoute | None, dict[str, Any]] = (None, {})
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return route, child.get("path_params", {})
        if match is Match.PARTIAL and partial[0] is None:
            partial = (route, child.get("path_params", {}))
    return partial


class AccessMiddleware:
    def __init__(
        self, app: ASGIApp, routes: Callable[[], Sequence[BaseRoute]], metrics: Metrics | None
    ) -> None:
        self.app = app
        self.routes = routes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request = RequestLog(_request_id(scope))
        request_id = request.id
        status = 500  # unless an answer starts: the app failed before answering
        sent = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        token = REQUEST.set(request)
        if self.metrics is not None:
            self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            if self.metrics is not None:
                self.metrics.in_flight -= 1
            self._finish(scope, request, status, seconds, sent)
            REQUEST.reset(token)

    def _finish(
        self, scope: Scope, request: RequestLog, status: int, seconds: float, sent: int
    ) -> None:
        route: BaseRoute | None = scope.get("route")
        params: dict[str, Any] = scope.get("path_params") or {}
        if route is None:
            route, params = _match(scope, self.routes())
        template = route_template(route)
        method: str = scope["method"]
        if self.metrics is not None:
            self.metrics.http_request(template, method, status, seconds)
        event = request.close()
        level = logging.DEBUG if scope["path"] in _QUIET else logging.INFO
        if not log.isEnabledFor(level):
            if event is not None:
                event_line(event)  # no access line to carry it
            return
        caller: Caller | None = (scope.get("state") or {}).get("caller")
        client = scope.get("client")
        path: str = scope["path"]
        if not path.isprintable():
            path = json.dumps(path, ensure_ascii=False)[1:-1]  # no line breaks in a log
        fields = {
            "remote_addr": client[0] if client else None,
            "caller": caller.actor if caller is not None else None,
            "method": method,
            "path": scope["path"],
            "route": template,
            "state": params.get("name"),
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "response_bytes": sent,
        }
        where = f"{client[0]}:{client[1]}" if client else "-"
        line = '%s - "%s %s HTTP/%s" %d %.1fms caller=%s request_id=%s'
        args: list[object] = [
            where,
            method,
            path,
            scope.get("http_version", "1.1"),
            status,
            seconds * 1000,
            fields["caller"] or "-",
            request.id,
        ]
        if event is not None:
            # The audit trail's JSON of the event, whole (docs/events.md).
            fields["event"] = event.to_json()
            line += " event=%s:%s"
            args += [event.action, event.outcome]
        log.log(level, line, *args, extra={"fields": fields})

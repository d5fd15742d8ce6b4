"""The access line and the HTTP metrics: one pure ASGI middleware, outermost.

For each request it takes the request ID from ``X-Request-ID`` (or makes one),
echoes it in the response, keeps it in :data:`~statekeeper.telemetry.logs.REQUEST`
for every line logged while answering, and at the end writes one access line
and counts the request by route template (``/state/{name}``, never the state's
name), method and status. The event the request caused rides on that line (its
``event`` field) rather than on a line of its own: one line per request. Health
checks and scrapes log at DEBUG, so that a load balancer polling every second
does not drown the log.

Every answer also says ``X-Content-Type-Options: nosniff``, added with the
request ID: JSON answers carry text callers wrote (lock holders, search hits,
error messages quoting a name), and a browser that sniffed one as HTML would run
it as a page of this server's.

It wraps ``send`` once for every layer inside it (:class:`Answer`): the error
guard and the request timeout need to know whether the answer has started, and
read it there instead of each wrapping ``send`` again (a coroutine frame per
layer per message).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statekeeper.events import Event
from statekeeper.security.caller import Caller
from statekeeper.telemetry.logs import REQUEST, RequestLog, event_line, write_direct
from statekeeper.telemetry.metrics import Metrics

__all__ = [
    "NOSNIFF",
    "AccessLine",
    "AccessMiddleware",
    "Answer",
    "answer_of",
    "new_request_id",
    "route_template",
]

log = logging.getLogger("statekeeper.access")

_QUIET = frozenset({"/healthz", "/readyz", "/metrics"})
_GOOD_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_CONVERTER = re.compile(r"\{([^}:]+):[^}]+\}")
#: On every answer: no browser reads one as other than the type it says it is.
NOSNIFF = (b"x-content-type-options", b"nosniff")


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


def _seed() -> None:
    """A new prefix for this process's request IDs (at import, and in a forked child:
    a child with its parent's prefix and counter would repeat the parent's IDs)."""
    global _PREFIX, _COUNTER
    _PREFIX = os.urandom(8).hex()
    _COUNTER = itertools.count()


_PREFIX: str
_COUNTER: itertools.count[int]
_seed()
os.register_at_fork(after_in_child=_seed)


def new_request_id() -> str:
    """32 hex digits, unique across processes and replicas: 64 random bits drawn once
    per process, then a count of the requests it numbered.

    An ``os.urandom`` per request is a ``getrandom`` call on the event loop's thread,
    which lets go of the GIL for a request's worker thread to take. Two processes share
    a prefix with a chance of one in 2^64 a pair; ``next`` on an ``itertools.count`` is
    one C call under the GIL, so no two threads get the same number (the count would
    need 2^64 requests to outgrow its 16 digits).
    """
    return f"{_PREFIX}{next(_COUNTER):016x}"


def _request_id(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            text = value.decode("latin-1")
            if _GOOD_ID.fullmatch(text):
                return str(text)
    return new_request_id()


#: The scope key of a request's :class:`Answer`.
_ANSWER = "statekeeper.answer"


class Answer:
    """A request's answer as it goes out, noted by one wrapper of ``send`` for every
    layer of statekeeper's: its status once it started, and the body bytes sent.

    The outermost layer makes it and the wrapper (:func:`answer_of`); a layer inside
    finds it in the scope and sends through the ``send`` it was given, already
    watched. It holds no reference to ``send``: the scope holds it, and the server's
    ``send`` belongs to an object that holds the scope, a cycle that would keep every
    request (its body too) alive until the garbage collector's next pass.
    """

    __slots__ = ("sent", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.sent = 0

    @property
    def started(self) -> bool:
        """The answer's status is sent: only ending the connection can change it now."""
        return self.status is not None


def answer_of(
    scope: Scope, send: Send, headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[Answer, Send]:
    """The request's :class:`Answer` and the ``send`` to answer through: the one an
    outer layer made, with ``send`` as it is, or else a new one and ``send`` wrapped
    to fill it in (and add ``headers`` to the answer's)."""
    answer: Answer | None = scope.get(_ANSWER)
    if answer is not None:
        return answer, send
    answer = scope[_ANSWER] = Answer()

    async def watched(message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            answer.status = message["status"]
            if headers:
                message["headers"] = [*message.get("headers", ()), *headers]
        elif kind == "http.response.body":
            answer.sent += len(message.get("body", b""))
        await send(message)

    return answer, watched


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
        answer, send = answer_of(
            scope, send, [(b"x-request-id", request.id.encode("latin-1")), NOSNIFF]
        )
        token = REQUEST.set(request)
        if self.metrics is not None:
            self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            seconds = time.perf_counter() - start
            if self.metrics is not None:
                self.metrics.in_flight -= 1
            # 500 unless an answer started: the app failed before answering.
            self._finish(scope, request, answer.status or 500, seconds, answer.sent)
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
        line = AccessLine(
            scope.get("client"),
            caller.actor if caller is not None else None,
            method,
            scope["path"],
            scope.get("http_version", "1.1"),
            template,
            params.get("name"),
            status,
            seconds,
            sent,
            request.id,
            event,
        )
        if not write_direct(log, level, line):
            fields = line.fields()
            if event is not None:
                fields["event"] = event.json_view()
            log.log(level, "%s", line.message(), extra={"fields": fields})


def _escaped(path: str) -> str:
    """A decoded path as the access line can quote it: a ``"`` (``%22``) would end the
    quotes early, and what follows would read as the line's own fields (``caller=``);
    a line break would start a line of its own, Unicode's (U+0085, U+2028) too, which
    a reader splitting lines as Python does (``str.splitlines``) takes for ends of lines."""
    return "".join(
        "\\" + c if c in '"\\' else c if c.isprintable() else ascii(c)[1:-1] for c in path
    )


@dataclass(slots=True, eq=False)
class AccessLine:
    """A request's access line as facts, made text when it is written.

    The server's writer holds the facts and formats a batch's lines one after the
    other when it writes them (``LineWriter``): formatting a line per request, between
    two requests' store work, costs several times what the same code costs run in a
    row, its instructions and data no longer in the caches.
    """

    client: tuple[str, int] | None
    caller: str | None
    method: str
    path: str
    http_version: str
    route: str
    state: str | None
    status: int
    seconds: float
    sent: int
    request_id: str
    event: Event | None

    def message(self) -> str:
        client, path = self.client, self.path
        if not path.isprintable() or '"' in path or "\\" in path:
            path = _escaped(path)
        where = f"{client[0]}:{client[1]}" if client else "-"
        message = (
            f'{where} - "{self.method} {path} HTTP/{self.http_version}" {self.status} '
            f"{self.seconds * 1000:.1f}ms caller={self.caller or '-'} request_id={self.request_id}"
        )
        event = self.event
        if event is not None:
            # Joined, not formatted: format() takes a slow way for an Action (a StrEnum).
            message += " event=" + event.action + ":" + event.outcome
        return message

    def fields(self) -> dict[str, Any]:
        """The line's own fields; the writer adds the event's (``event``) last."""
        fields: dict[str, Any] = {
            "remote_addr": self.client[0] if self.client else None,
            "caller": self.caller,
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "state": self.state,
            "status": self.status,
            # Hundredths of a millisecond; round(x, 2) formats the float in decimal to round it.
            "duration_ms": int(self.seconds * 100_000 + 0.5) / 100,
            "response_bytes": self.sent,
        }
        return fields

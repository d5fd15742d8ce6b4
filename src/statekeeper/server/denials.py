"""Refused authentications: limited per address, recorded once per window.

Every 401 used to write a synced, undeletable audit row with the full request
path, so anyone able to reach the port could grow the store by megabytes a
minute. Here:

- each address may fail authentication ``rate`` times a second (bursts of
  ``burst``); beyond that it is answered 429 with ``Retry-After`` (valid
  credentials from the same address are not affected: only failures count);
- the first refusal of an (address, label) pair is recorded at once, the ones
  that follow within ``window`` seconds are counted, and recorded as one event
  carrying the count when the window has passed (at the next refusal of any
  caller, or when the server stops);
- what a refusal records is bounded: the path is cut to :data:`PATH_LIMIT`
  characters, and every event field is bounded where events are made.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from statekeeper.errors import RateLimited
from statekeeper.events import Action, Event
from statekeeper.server.limits import RateLimiter
from statekeeper.telemetry.logs import apart_from_request

__all__ = ["PATH_LIMIT", "Denials"]

#: Characters of a refused request's path kept in its event.
PATH_LIMIT = 200


@dataclass
class _Window:
    started: float
    #: Refusals after the first one, not recorded yet.
    repeats: int = 0
    last: str = ""


class Denials:
    """Tracks refused authentications; ``emit`` records an event (the event stream's)."""

    def __init__(
        self,
        emit: Callable[[Event], None],
        rate: float = 2.0,
        burst: int = 30,
        window: float = 60.0,
        max_keys: int = 10_000,
    ) -> None:
        self.emit = emit
        self.window = window
        self.max_keys = max_keys
        self.limiter = RateLimiter(rate, burst, max_keys)
        self._windows: dict[tuple[str, str], _Window] = {}
        self._guard = threading.Lock()

    def refuse(
        self,
        remote: str | None,
        label: str,
        request: str,
        reason: str,
        now: float | None = None,
    ) -> RateLimited | None:
        """Count one refusal; the RateLimited to answer instead of 401, if over the rate.

        ``request`` is ``METHOD PATH``; ``reason`` the message of the refusal.
        """
        now = time.monotonic() if now is None else now
        address = remote or "unknown"
        limited: RateLimited | None = None
        try:
            self.limiter.check(address, now)
        except RateLimited as exc:
            limited = RateLimited(
                f"{address} failed authentication too often; retry after {exc.retry_after} s",
                retry_after=exc.retry_after,
            )
        detail = f"{_cut(request)}: {reason}"
        key = (address, label)
        due: list[Event] = []
        mine: Event | None = None
        with self._guard:
            due += self._expired(now)
            window = self._windows.get(key)
            if window is None:
                if len(self._windows) >= self.max_keys:
                    due += self._expired(float("inf"))
                self._windows[key] = _Window(started=now, last=detail)
                mine = _event(address, label, detail, count=1)
            else:
                window.repeats += 1
                window.last = detail
        # Earlier refusals' counts, closed now: not this request's (nor on its log line).
        with apart_from_request():
            for event in due:
                self.emit(event)
        if mine is not None:
            self.emit(mine)
        return limited

    def flush(self) -> None:
        """Record every pending count now (the server is stopping)."""
        with self._guard:
            due = self._expired(float("inf"))
        for event in due:
            self.emit(event)

    def _expired(self, now: float) -> list[Event]:
        """Close the windows older than ``window``; the events of their repeats."""
        out = []
        for key, window in list(self._windows.items()):
            if now - window.started < self.window:
                continue
            del self._windows[key]
            if window.repeats:
                address, label = key
                detail = (
                    f"{window.repeats} more refused within {self.window:g} s; "
                    f"the last: {window.last}"
                )
                out.append(_event(address, label, detail, count=window.repeats))
        return out


def _cut(request: str) -> str:
    if len(request) <= PATH_LIMIT:
        return request
    return f"{request[:PATH_LIMIT]}… ({len(request) - PATH_LIMIT} more characters)"


def _event(address: str, label: str, detail: str, count: int) -> Event:
    return Event(
        action=Action.AUTHENTICATE,
        actor=label,
        outcome="unauthenticated",
        remote_addr=address,
        detail=detail,
        count=count,
    )

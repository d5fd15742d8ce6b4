"""The sender: a background thread that delivers the outbox, never the request path.

It claims due rows with a lease, POSTs each as a signed CloudEvent, and
records the attempt: a 2xx answer delivers; anything else (an error status, a
timeout, a refused connection, a destination the guard refuses) is retried
after an exponential backoff with jitter, ``backoff * 2^(attempt-1)`` seconds
(capped at an hour) of which a random half, until ``attempts`` attempts
have failed: the row is then *dead* (the dead letters, listed by
``statekeeper hooks deliveries --outcome dead``). Delivery is at least once: a
sender killed after the receiver answered but before it recorded the answer
leaves the row to be sent again, with the same event ID.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from statekeeper import __version__
from statekeeper.errors import StatekeeperError
from statekeeper.hooks.guard import IPNetwork, check_destination
from statekeeper.hooks.model import Subscription, cloudevent
from statekeeper.hooks.outbox import Entry, Outbox
from statekeeper.hooks.signing import HEADER, sign

__all__ = ["Policy", "Sender", "post"]

log = logging.getLogger("statekeeper.hooks")

_BACKOFF_CAP = 3600.0


@dataclass(frozen=True)
class Policy:
    """How deliveries are made and retried."""

    attempts: int = 10
    backoff: float = 5.0
    timeout: float = 10.0
    lease: float = 60.0
    allow: tuple[IPNetwork | str, ...] = ()
    #: ``source`` of the CloudEvents: this server.
    source: str = "statekeeper"

    def delay(self, failed_attempts: int) -> float:
        """Seconds before the next attempt after ``failed_attempts`` failures."""
        full = min(_BACKOFF_CAP, self.backoff * 2.0 ** (failed_attempts - 1))
        return full / 2 + random.uniform(0, full / 2)


def post(sub: Subscription, body: bytes, event_id: str, policy: Policy) -> int:
    """Send one signed delivery; the HTTP status (raises StatekeeperError or httpx errors)."""
    check_destination(sub.url, policy.allow)
    headers = {
        "Content-Type": "application/cloudevents+json",
        HEADER: sign(sub.secret, body),
        "Statekeeper-Event-Id": event_id,
        "User-Agent": f"statekeeper/{__version__}",
    }
    with httpx.Client(timeout=policy.timeout, follow_redirects=False) as client:
        return client.post(sub.url, content=body, headers=headers).status_code


class Sender:
    """Delivers the outbox on a thread of its own; :meth:`wake` when rows were added."""

    def __init__(
        self,
        outbox: Outbox,
        policy: Policy,
        enrich: Callable[[Entry], dict[str, Any]],
        chores: Callable[[], None] = lambda: None,
    ) -> None:
        self.outbox = outbox
        self.policy = policy
        self.enrich = enrich
        self.chores = chores
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.failures = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="statekeeper-hooks", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.policy.timeout + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.chores()
                entries = self.outbox.claim(self.owner, self.policy.lease)
            except StatekeeperError as exc:
                log.error("the webhook outbox cannot be read: %s", exc.message)
                entries = []
            for entry in entries:
                if self._stop.is_set():
                    return  # the lease runs out and the row is claimed again
                self._deliver(entry)
            if not entries:
                # Rows of other servers, and retries coming due, are found by polling.
                self._wake.wait(1.0)
                self._wake.clear()

    def _deliver(self, entry: Entry) -> None:
        subs = {s.name: s for s in self.outbox.subscriptions()}
        sub = subs.get(entry.hook)
        start = time.perf_counter()
        if sub is None:
            self._record(entry, "dead", None, "the subscription was removed", start)
            return
        body = entry.payload
        if body is None:
            body = cloudevent(entry.kind, entry.event, self.policy.source, self.enrich(entry))
            self.outbox.set_payload(entry, body)
        status: int | None = None
        try:
            status = post(sub, body, entry.event_id, self.policy)
        except StatekeeperError as exc:
            error = exc.message
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            if 200 <= status < 300:
                self._record(entry, "delivered", status, None, start)
                return
            error = f"the receiver answered {status}"
        self.failures += 1
        if entry.attempts + 1 >= self.policy.attempts:
            log.warning(
                "webhook %s gave up on event %s (%s) after %d attempts: %s",
                entry.hook,
                entry.event_id,
                entry.kind,
                entry.attempts + 1,
                error,
            )
            self._record(entry, "dead", status, error, start)
        else:
            retry_at = time.time() + self.policy.delay(entry.attempts + 1)
            self._record(entry, "retry", status, error, start, retry_at)

    def _record(
        self,
        entry: Entry,
        outcome: str,
        status: int | None,
        error: str | None,
        start: float,
        next_attempt: float | None = None,
    ) -> None:
        try:
            self.outbox.finish(
                entry,
                self.owner,
                outcome=outcome,
                status=status,
                error=error,
                seconds=time.perf_counter() - start,
                next_attempt=next_attempt,
            )
        except StatekeeperError as exc:
            # The lease runs out and the row is sent again: at least once.
            log.error("webhook delivery %s could not be recorded: %s", entry.id, exc.message)

"""The sender: a thread of the delivery worker process (:mod:`statekeeper.hooks.worker`)
that delivers the outbox, never the request path.

It makes the rows of new audit records (where the audit trail is the outbox's
log), claims due rows with a lease, POSTs each as a signed CloudEvent, and
records the attempt: a 2xx answer delivers; anything else (an error status, a
timeout, a refused connection, a destination the guard refuses) is retried
after an exponential backoff with jitter: after the n-th failure, between half
and all of ``backoff * 2^(n-1)`` seconds (capped at an hour), until ``attempts``
attempts have failed: the row is then *dead* (the dead letters, listed by
``statekeeper hooks deliveries --outcome dead``). A destination that did not
answer (a timeout, a refused or broken connection) is not tried again in the
same round: its other events of the round fail at once, as a retry, so a
receiver that is down holds the others' deliveries one timeout a round, not
one an event. Delivery is at least once: a
sender killed after the receiver answered but before it recorded the answer
leaves the row to be sent again, with the same event ID.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from statekeeper.errors import StatekeeperError
from statekeeper.hooks.model import Policy, Subscription, recorded_cloudevent
from statekeeper.hooks.outbox import Attempt, Entry, OutboxStore, Wanted

if TYPE_CHECKING:
    from statekeeper.hooks.transport import Connections

__all__ = ["Sender"]

log = logging.getLogger("statekeeper.hooks")

#: Rows claimed at a time.
_BATCH = 20
#: The least seconds between the starts of two rounds woken by new events: the events
#: of a busy spell (a LOCK, a write and an UNLOCK come milliseconds apart; many
#: clients' cycles more) gather into rounds of this length, each costing one short
#: write transaction of the queue (the claim, which records the round before) and a
#: read of the store's audit trail, for them all: at most 1 / _LINGER a second. After
#: a quiet spell the first event is claimed at once; the ones that follow wait for the
#: next round, at most this long.
_LINGER = 0.1


class Sender:
    """Delivers the outbox on a thread of its own; :meth:`wake` when rows were added."""

    def __init__(
        self,
        outbox: OutboxStore,
        policy: Policy,
        enrich: Callable[[Entry], dict[str, Any]],
        chores: Callable[[], None] = lambda: None,
        subscriptions: Callable[[], list[Subscription]] | None = None,
        on_round: Callable[[int], None] = lambda failures: None,
        wanted: Wanted | None = None,
    ) -> None:
        self.outbox = outbox
        #: Which subscriptions want a recorded event (where the audit trail is the log).
        self.wanted = wanted
        self.subscriptions = subscriptions or outbox.subscriptions
        self.policy = policy
        self.enrich = enrich
        self.chores = chores
        #: Called after each round with the failed attempts so far (the worker reports).
        self.on_round = on_round
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
        # The HTTP client is imported by the thread that sends (see hooks.transport).
        from statekeeper.hooks.transport import Connections

        self.outbox.relax()
        # Connections to receivers are kept alive for the thread's life.
        connections = Connections(self.policy.timeout, self.policy.allow)
        try:
            self._loop(connections)
        finally:
            connections.close()

    def _loop(self, connections: Connections) -> None:
        # The attempts of the last round, not yet recorded: when a nudge comes before the
        # linger ends, the next round's claim records them in its transaction (the
        # worker takes the queue's write lock once a round, not twice); else they are
        # recorded at the linger's end, on their own. Recorded late, a delivered row
        # stays leased: a worker killed meanwhile sends it again (at least once).
        done: list[Attempt] = []
        try:
            while not self._stop.is_set():
                self._wake.clear()
                started = time.monotonic()
                try:
                    self.chores()
                    entries = self.outbox.claim(
                        self.owner, self.policy.lease, _BATCH, done, self.wanted
                    )
                    subs = {s.name: s for s in self.subscriptions()} if entries else {}
                except StatekeeperError as exc:
                    log.error("the webhook outbox cannot be read: %s", exc.message)
                    self._lost(done)
                    entries = []
                done = []
                down: dict[tuple[str, str, int], str] = {}
                for entry in entries:
                    if self._stop.is_set():
                        break  # the others' leases run out and they are claimed again
                    done.append(self._deliver(entry, subs.get(entry.hook), connections, down))
                try:
                    self.on_round(self.failures)
                except StatekeeperError as exc:
                    log.error("the webhook outbox cannot be read: %s", exc.message)
                if len(entries) >= _BATCH or self.outbox.more:
                    continue  # more are due, or records not looked at: the next round now
                # A new event woke the sender before the linger's end: the next round
                # starts _LINGER after this one started.
                if self._wake.wait(max(0.0, started + _LINGER - time.monotonic())):
                    self._stop.wait(started + _LINGER - time.monotonic())
                    continue
                self._record(done)
                done = []
                # A quiet spell: the next event starts a round at once; without one, the
                # poll for rows of other servers and retries coming due.
                self._wake.wait(self.outbox.poll)
        finally:
            self._record(done)

    def _deliver(
        self,
        entry: Entry,
        sub: Subscription | None,
        connections: Connections,
        down: dict[tuple[str, str, int], str],
    ) -> Attempt:
        """One attempt; ``down`` holds the destinations that did not answer this round,
        and gets this one when it does not."""
        from statekeeper.hooks.transport import TRANSPORT_ERRORS, post

        start = time.perf_counter()
        if sub is None:
            return Attempt(entry, "dead", None, "the subscription was removed", 0.0)
        body = entry.payload
        if body is None:
            body = recorded_cloudevent(
                entry.kind, entry.recorded, self.policy.source, self.enrich(entry)
            )
        status: int | None = None
        where = connections.destination(sub.url)
        if where in down:
            error = (
                f"not sent: {where[1]}:{where[2]} did not answer a delivery before it "
                f"this round ({down[where]})"
            )
        else:
            try:
                status = post(sub, body, entry.event_id, self.policy, connections)
            except StatekeeperError as exc:
                error = exc.message
            except TRANSPORT_ERRORS as exc:
                error = down[where] = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    return Attempt(entry, "delivered", status, None, time.perf_counter() - start)
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
            return Attempt(entry, "dead", status, error, time.perf_counter() - start)
        retry_at = time.time() + self.policy.delay(entry.attempts + 1)
        # The body is kept for the retries: each sends the same bytes.
        return Attempt(entry, "retry", status, error, time.perf_counter() - start, retry_at, body)

    def _record(self, attempts: list[Attempt]) -> None:
        if not attempts:
            return
        try:
            self.outbox.finish(self.owner, attempts)
        except StatekeeperError as exc:
            log.error("the webhook outbox cannot be written: %s", exc.message)
            self._lost(attempts)

    @staticmethod
    def _lost(attempts: list[Attempt]) -> None:
        if attempts:
            # The leases run out and the rows are sent again: at least once.
            log.error("%d webhook attempts could not be recorded", len(attempts))

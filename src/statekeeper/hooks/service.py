"""Webhooks as the server and the CLI see them: the event-stream subscriber and management.

On the embedded database the audit trail is the outbox's log: the request path
writes nothing for a webhook. :meth:`Webhooks.wake_for`, a subscriber after the
audit trail, nudges the sender when some subscription wants the event; the
sender (``serve``'s delivery worker, a process of its own,
:mod:`statekeeper.hooks.worker`, which runs :meth:`Webhooks.deliver`) makes
the outbox rows of the records it has not looked at, in the transaction that
claims them. On S3, where the audit trail is written in batches, the
subscriber puts the outbox objects itself before the request is answered
(:meth:`Webhooks.observe_event`).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from statekeeper.errors import BadRequest, NotFound, StatekeeperError, StorageError
from statekeeper.events import Action, Event
from statekeeper.hooks.guard import check_destination
from statekeeper.hooks.model import Policy, Subscription, cloudevent, hook_type
from statekeeper.hooks.outbox import Entry, OutboxStore
from statekeeper.security.caller import SERVER_ACTOR
from statekeeper.storage.base import ObjectStore
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.times import utcnow

if TYPE_CHECKING:
    from statekeeper.hooks.delivery import Sender
    from statekeeper.hooks.resources import ResourceIndex
    from statekeeper.hooks.worker import WorkerProcess
    from statekeeper.settings import Settings

__all__ = ["Webhooks"]

#: How long the subscriber trusts its copy of the subscriptions (``hooks add`` on
#: the CLI reaches a running server within this).
_REFRESH = 2.0
_STALE_SCAN = 30.0
#: The most seconds between the worker's removals of the expired delivery log (more
#: often when the log is kept less long than this).
_EXPIRE_EVERY = 60.0
#: (event type, state) pairs whose subscribers are kept (the states written lately).
_WANTS_KEPT = 4096
_STALE_IDS = uuid.UUID("5d1e2c1a-4b0e-4f3e-9a59-1c0ffee00001")


def _nobody() -> None:
    """Who is woken where nothing delivers (a CLI run): the next server's sender."""


def _is_text(value: str) -> bool:
    """Whether ``value`` is text UTF-8 can carry (no lone surrogate)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


class Webhooks:
    def __init__(
        self,
        outbox: OutboxStore,
        store: ObjectStore,
        policy: Policy,
        locks: Callable[[], Iterator[tuple[str, LockInfo]]] | None = None,
        stale_after: float = 0.0,
        configured: tuple[Subscription, ...] = (),
        kept: timedelta | None = None,
    ) -> None:
        self.outbox = outbox
        self.store = store
        self.policy = policy
        self.locks = locks
        self.stale_after = stale_after
        #: The config file's subscriptions, ahead of the stored ones (a stored one of the
        #: same name, added before the config named it, is shadowed).
        self.configured = configured
        #: How long the delivery log keeps an attempt (None: for ever).
        self.kept = kept
        self._expired_at = -float("inf")
        self._subs: list[Subscription] = []
        #: ``_subs``, and which of them want each (event type, state) seen lately.
        self._who_wants: tuple[list[Subscription], dict[tuple[str, str], list[str]]] = ([], {})
        self._read_at = -float("inf")
        self._guard = threading.Lock()
        self._scanned_at = -float("inf")
        #: The last version of a few states, for the resources of ``state.written``.
        self._resources: ResourceIndex | None = None
        self._wake: Callable[[], None] = _nobody
        self._worker: WorkerProcess | None = None
        self._sender: Sender | None = None

    def all(self) -> list[Subscription]:
        """Every subscription: the config file's, then those added by command."""
        named = {s.name for s in self.configured}
        stored = [s for s in self.outbox.subscriptions() if s.name not in named]
        return [*self.configured, *stored]

    def _configured(self, name: str) -> Subscription | None:
        return next((s for s in self.configured if s.name == name), None)

    # The subscriber (on the request path: a dictionary lookup, a query every two seconds)

    def subscriptions(self) -> list[Subscription]:
        """The subscriptions, re-read at most every two seconds."""
        if time.monotonic() - self._read_at <= _REFRESH:
            return self._subs  # the usual case, on every event: no lock taken
        with self._guard:
            if time.monotonic() - self._read_at > _REFRESH:  # not read meanwhile
                subs = self.all()
                if subs != self._subs:
                    self._subs = subs
                    self._who_wants = (subs, {})
                self._read_at = time.monotonic()
            return self._subs

    def wanted(self, event: Event) -> tuple[str, list[str]] | None:
        """``event``'s webhook event type and the subscriptions that want it (None when
        none does)."""
        kind = hook_type(event)
        if kind is None or event.state is None:
            return None
        wanting = self.wanting(kind, event.state)
        return (kind, wanting) if wanting else None

    def wanting(self, kind: str, state: str) -> list[str]:
        """The subscriptions that want ``kind`` events on ``state``."""
        self.subscriptions()
        # Which subscriptions want (type, state), decided once per pair while the
        # subscriptions stay the same: matching parses the name and every glob.
        subs, known = self._who_wants
        key = (kind, state)
        wanting = known.get(key)
        if wanting is None:
            wanting = [s.name for s in subs if s.wants(kind, state)]
            if len(known) >= _WANTS_KEPT:
                known.clear()
            known[key] = wanting
        return wanting

    def wake_for(self, event: Event) -> None:
        """The subscriber after the audit trail: the record is committed, and the sender
        makes its rows when woken (or at its next poll, for a process with no sender)."""
        if self.wanted(event) is not None:
            self._wake()

    def observe_event(self, event: Event) -> None:
        """The subscriber where the audit trail is not in the database (S3, written in
        batches): the outbox entries are put before the request is answered."""
        wanted = self.wanted(event)
        if wanted is not None:
            self.outbox.enqueue(wanted[0], event, wanted[1])
            self._wake()

    def _offer(self, kind: str, event: Event) -> None:
        assert event.state is not None
        wanted = [s.name for s in self.subscriptions() if s.wants(kind, event.state)]
        if wanted:
            self.outbox.enqueue(kind, event, wanted)
            self._wake()

    # The sender's side

    def start(self, settings: Settings) -> None:
        """``serve``: deliver from a worker process built from the server's ``settings``."""
        from statekeeper.hooks.worker import WorkerProcess

        self._worker = WorkerProcess(
            settings, self._subscriptions_changed, stop_timeout=self.policy.timeout + 10
        )
        self._wake = self._worker.wake

    def deliver(self, on_round: Callable[[int], None]) -> Sender:
        """The worker process: deliver on a thread of this process; ``on_round`` is called
        after each round with the failed attempts so far."""
        from statekeeper.hooks.delivery import Sender

        self._sender = Sender(
            self.outbox, self.policy, self._enrich, self._chores, self.all, on_round, self.wanting
        )
        self._wake = self._sender.wake
        self._sender.start()
        return self._sender

    def _subscriptions_changed(self) -> None:
        """The worker saw other subscriptions (``hooks add`` on a running server): the
        request path reads them again (on S3 it reads them from memory, until now)."""
        self.outbox.refresh()
        self._read_at = -float("inf")

    def backlog(self) -> int:
        """Entries waiting: counted in the database where there is one, else as the
        worker's last look at the bucket found them (a scrape makes no request to it)."""
        if self._worker is not None and self.store.records.database is None:
            return self._worker.backlog
        return self.outbox.backlog(self.wanting)

    def failures(self) -> int:
        """Failed delivery attempts since the server started."""
        if self._worker is not None:
            return self._worker.failures
        return self._sender.failures if self._sender is not None else 0

    def close(self) -> None:
        self._wake = _nobody
        if self._worker is not None:
            self._worker.close()
        if self._sender is not None:
            self._sender.close()
        self.outbox.close()

    def _enrich(self, entry: Entry) -> dict[str, Any]:
        """``state.written``: the resources the new version added, changed and removed."""
        if entry.kind != "state.written":
            return {}
        state, version = entry.recorded.get("state"), entry.recorded.get("version")
        if not version or not state:
            return {}
        if not self.store.supports_versions:
            return {}
        if self._resources is None:
            # Made by the worker process, never by a CLI run (it imports the state diff).
            from statekeeper.hooks.resources import ResourceIndex

            self._resources = ResourceIndex()

        try:
            # Both versions in one read of the store, the bytes alone; the one before
            # is not read when the index holds it (the usual case: it was the previous
            # delivery's new version).
            got = self.store.with_previous(state, version, self._resources.kept(state))
            read = {version: got.data, got.previous: got.previous_data}.get
            resources = self._resources.changes(state, got.previous, version, read)
        except StatekeeperError:
            return {}  # a version gone: the facts without it
        except ValueError:
            return {}  # not JSON (a stored version was checked when written: never so)
        if resources is None:
            return {}  # an OpenTofu encrypted state: its resources cannot be read
        return {"resources": resources}

    def _chores(self) -> None:
        """The worker's, before each round: the expired delivery log removed, and the
        stale locks' events."""
        self._expire()
        self._stale_locks()

    def _expire(self) -> None:
        """Remove the delivery log older than ``kept``, once a minute at most (or once
        per ``kept``, when that is shorter)."""
        if self.kept is None:
            return
        every = min(_EXPIRE_EVERY, self.kept.total_seconds())
        if time.monotonic() - self._expired_at < every:
            return
        self._expired_at = time.monotonic()
        self.outbox.expire(utcnow() - self.kept)

    def _stale_locks(self) -> None:
        """``lock.stale``: once per lock held longer than ``stale_after`` seconds."""
        if self.locks is None or self.stale_after <= 0:
            return
        if time.monotonic() - self._scanned_at < _STALE_SCAN:
            return
        self._scanned_at = time.monotonic()
        now = utcnow()
        for name, lock in self.locks():
            since = lock.since
            if since is None or now - since < timedelta(seconds=self.stale_after):
                continue
            # The same ID on every server and after restarts: queued once per lock.
            event_id = str(uuid.uuid5(_STALE_IDS, f"{name}\0{lock.id}"))
            held = int((now - since).total_seconds())
            self._offer(
                "lock.stale",
                Event(
                    action=Action.LOCK,
                    actor=lock.actor or "unknown",
                    state=name,
                    lock_id=lock.id,
                    who=lock.who or None,
                    operation=lock.operation or None,
                    detail=f"held for {held} s (more than {self.stale_after:g} s)",
                    id=event_id,
                ),
            )

    # The operator's commands

    def add(self, sub: Subscription) -> Subscription:
        """Add (or replace) a subscription; a secret is made when none is given."""
        if self._configured(sub.name) is not None:
            raise BadRequest(
                f"the hook {sub.name!r} is defined in the config file ([[hooks]]); "
                "change it there, or choose another name"
            )
        if not sub.secret:
            import secrets  # here: only a new hook's secret needs it

            sub = replace(sub, secret="whsec_" + secrets.token_urlsafe(32))
        check_destination(sub.url, self.policy.allow)
        self.outbox.add(sub)
        self._read_at = -float("inf")
        return sub

    def remove(self, name: str) -> None:
        if self._configured(name) is not None:
            raise BadRequest(
                f"the hook {name!r} is defined in the config file ([[hooks]]); "
                "remove it there and restart the server"
            )
        self.outbox.remove(name)
        self._read_at = -float("inf")

    def redeliver(
        self, name: str, event_id: str | None = None, since: datetime | None = None
    ) -> list[str]:
        """Queue the dead letters of the subscription ``name`` again (the one of
        ``event_id``, else all that died at ``since`` or after); their event IDs. They
        are sent as any event is, by a server's sender, with the same event ID."""
        if not any(s.name == name for s in self.all()):
            # A removed subscription's dead letters would only die again ("the subscription
            # was removed"): the subscription comes first.
            raise NotFound(
                f"there is no hook named {name!r}; see 'statekeeper hooks list'. The dead "
                f"letters of a removed hook are redelivered once it is added again: "
                f"'statekeeper hooks add {name} --url URL', then redeliver"
            )
        if event_id is not None and not _is_text(event_id):
            # A command line's bytes that are no UTF-8 arrive as lone surrogates, which
            # neither the queue's database nor a bucket's key can hold.
            raise BadRequest(
                f"the event ID {event_id!r} holds bytes that are no UTF-8 text; give it as "
                f"'statekeeper hooks deliveries --hook {name} --outcome dead' prints it"
            )
        queued = self.outbox.redeliver(name, event_id, since)
        if queued:
            self._wake()
        return queued

    def test(self, name: str) -> int:
        """Send a signed ``io.statekeeper.ping`` to one subscription now; its HTTP status."""
        sub = next((s for s in self.all() if s.name == name), None)
        if sub is None:
            raise NotFound(f"there is no hook named {name!r}; see 'statekeeper hooks list'")
        sub = sub.signing(os.environ)
        event = Event(action=Action.READ, actor=SERVER_ACTOR, detail="a test delivery")
        body = cloudevent("ping", event, self.policy.source)
        from statekeeper.hooks.transport import TRANSPORT_ERRORS, Connections, post

        connections = Connections(self.policy.timeout, self.policy.allow)
        try:
            return post(sub, body, event.id, self.policy, connections)
        except TRANSPORT_ERRORS as exc:
            raise StorageError(f"the test delivery to {name} failed: {exc}") from exc
        finally:
            connections.close()

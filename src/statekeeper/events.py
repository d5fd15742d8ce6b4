"""One typed event stream: every change and every denial, as the services see it.

The services emit an :class:`Event` for each operation they perform on a
caller's behalf (``docs/events.md`` lists who emits what). The audit trail,
the server log, and later metrics and webhooks are *subscribers*: callables
that receive every event. Emission happens in the services, never in their
callers, so the HTTP server and the CLI leave the same trail and no entry
point can forget it.

Two rules shape :class:`EventStream`:

- **One event per operation.** :meth:`EventStream.event` wraps an operation
  and records exactly one event with the outcome the operation ended in
  (``ok`` or the error code). An operation made of others (a rollback reads
  and writes under the lock) is one event: events opened while another event
  of the same stream is open in the same thread are folded into it.
- **A subscriber cannot undo what happened.** By the time an event is emitted
  the lock is taken or the state is stored; failing the request would only make
  Terraform believe it failed. A subscriber that raises is reported on the
  ``statekeeper.events`` log at ERROR, with the whole event, so that no audit
  event is lost silently; the other subscribers still receive it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from statekeeper.errors import InvalidLockInfo, StatekeeperError
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.times import format_rfc3339, parse_rfc3339, utcnow

if TYPE_CHECKING:
    from statekeeper.security.caller import Caller
    from statekeeper.terraform.names import StateName

__all__ = ["OUTCOMES", "Action", "Draft", "Event", "EventStream", "Subscriber", "in_operation"]

log = logging.getLogger("statekeeper.events")


class Action(StrEnum):
    """What an event records; the value is the ``action`` of the audit JSON."""

    READ = "read"
    WRITE = "write"
    PUSH = "push"
    DELETE = "delete"
    ROLLBACK = "rollback"
    MIGRATE = "migrate"
    LOCK = "lock"
    UNLOCK = "unlock"
    FORCE_UNLOCK = "force-unlock"
    #: A lock removed because it outlived its lease (the lock policy's ``ttl``).
    EXPIRE = "expire"
    REAP = "reap"
    #: Intermediate snapshots of a released lock removed (history hygiene).
    COMPACT = "compact"
    #: Versions removed by the retention rules (``statekeeper prune``).
    PRUNE = "prune"
    #: A deleted state brought back from the trash.
    RESTORE = "restore"
    #: A deleted state removed for good, with every version.
    PURGE = "purge"
    TOKEN_CREATE = "token-create"
    TOKEN_REVOKE = "token-revoke"
    TOKEN_LIST = "token-list"
    AUDIT_READ = "audit-read"
    KEY_ROTATE = "key-rotate"
    #: The AWS bucket and lock table created or brought into line (``statekeeper bootstrap``).
    BOOTSTRAP = "bootstrap"
    #: The safe fixes ``statekeeper doctor --fix`` applied to the bucket and table.
    DOCTOR_FIX = "doctor-fix"
    AUTHENTICATE = "authenticate"


#: Longest text kept per event field; the rest is cut with a note of its length.
_FIELD_LIMITS = {
    "actor": 256,
    "state": 1024,
    "version": 256,
    "remote_addr": 64,
    "lock_id": 256,
    "who": 256,
    "operation": 128,
    "detail": 1024,
}
_CLAIMS = 16
_CLAIM_LIMIT = 256


def _new_id() -> str:
    """A random (version 4) UUID's text, as ``str(uuid.uuid4())`` writes it, in less than
    half its time (1.2 against 2.7 µs; several events are made per lock cycle)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, its note of what was cut included: so a
    value cut once is within the limit, and an event read back from the audit trail
    (its ``__post_init__`` runs again) keeps it as recorded."""
    if len(text) <= limit:
        return text
    kept = max(limit - len(f"… ({len(text)} more characters)"), 0)  # the note at its longest
    return f"{text[:kept]}… ({len(text) - kept} more characters)"


@dataclass(frozen=True)
class Event:
    """One operation or denial: who did what to which state, and how it ended.

    ``outcome`` is ``ok`` or the :mod:`statekeeper.errors` code the operation
    failed with (``forbidden``, ``unauthenticated``, ``locked``, …); ``detail``
    says why in words. ``who`` and ``operation`` are Terraform's, from the
    LockInfo. ``claims`` are the OIDC claims the server records (never a secret).
    """

    action: Action
    actor: str
    outcome: str = "ok"
    state: str | None = None
    version: str | None = None
    serial: int | None = None
    remote_addr: str | None = None
    claims: dict[str, str] = field(default_factory=dict)
    lock_id: str | None = None
    who: str | None = None
    operation: str | None = None
    detail: str | None = None
    time: datetime = field(default_factory=utcnow)
    id: str = field(default_factory=_new_id)
    #: How many occurrences the event stands for (repeated refusals are coalesced).
    count: int = 1

    def __post_init__(self) -> None:
        # Events read back from the audit trail carry the action as text.
        object.__setattr__(self, "action", Action(self.action))
        # Bounded: most fields come from requests, and every event is stored for good.
        for name, limit in _FIELD_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, str) and len(value) > limit:
                object.__setattr__(self, name, _bounded(value, limit))
        if len(self.claims) > _CLAIMS or any(
            len(k) > _CLAIM_LIMIT or len(v) > _CLAIM_LIMIT for k, v in self.claims.items()
        ):
            kept = list(self.claims.items())[:_CLAIMS]
            object.__setattr__(
                self,
                "claims",
                {_bounded(k, _CLAIM_LIMIT): _bounded(str(v), _CLAIM_LIMIT) for k, v in kept},
            )

    def to_json(self) -> dict[str, Any]:
        """The event's JSON fields, a copy of its own (its claims too) for the caller to
        change; :meth:`json_view` when only reading them."""
        made = self.json_view()
        return {**made, "claims": dict(made["claims"])}

    def json_view(self) -> Mapping[str, Any]:
        """The event's JSON fields, made once and shared: the audit trail encodes them on
        the request's thread, the access line and the outbox again. Not to be changed.

        Field by field: dataclasses.asdict deep-copies every value.
        """
        made: dict[str, Any] | None = self.__dict__.get("_json")
        if made is None:
            made = self._to_json()
            object.__setattr__(self, "_json", made)
        return made

    def json_text(self) -> str:
        """The event as compact JSON text (:meth:`json_view`'s fields), made once and
        shared: the audit trail stores it, the outbox queues it, the access line
        carries it.

        orjson, at a sixth of ``json.dumps``'s cost (every request's event is encoded
        on its path), its text UTF-8 as is; what it refuses (an integer past 64 bits,
        a lone surrogate) the standard encoder writes, with ``\\u`` escapes.
        """
        made: str | None = self.__dict__.get("_text")
        if made is None:
            import orjson  # here: a command's start-up does without it

            view = self.json_view()
            try:
                made = orjson.dumps(view).decode()
            except TypeError:  # orjson.JSONEncodeError
                made = json.dumps(view, separators=(",", ":"))  # a lone surrogate escaped
            object.__setattr__(self, "_text", made)
        return made

    def _to_json(self) -> dict[str, Any]:
        return {
            "action": str(self.action),
            "actor": self.actor,
            "outcome": self.outcome,
            "state": self.state,
            "version": self.version,
            "serial": self.serial,
            "remote_addr": self.remote_addr,
            "claims": dict(self.claims),
            "lock_id": self.lock_id,
            "who": self.who,
            "operation": self.operation,
            "detail": self.detail,
            "time": format_rfc3339(self.time),
            "id": self.id,
            "count": self.count,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Event:
        raw = dict(raw)
        raw["time"] = parse_rfc3339(raw["time"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class Draft:
    """The facts of an event whose operation is still running; the service fills them in."""

    version: str | None = None
    serial: int | None = None
    lock_id: str | None = None
    who: str | None = None
    operation: str | None = None
    detail: str | None = None
    #: False when the operation found, at the last moment, nothing left to do (another
    #: server did it first): its success is then no event. A failure always is one.
    changed: bool = True
    #: Set by the stream while this draft's event is its own to record (not folded).
    _early: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def record_in_commit(self) -> None:
        """The operation succeeded, in a transaction not yet committed: record its event now.

        Called by the operation inside the transaction that makes its change (see
        ``Upload``'s ``then``): the subscribers that can join it (the SQLite audit
        trail, :meth:`EventStream.stage`) write the event there, so it commits and
        is synced with the change, one commit and one fsync for both. The event
        goes to every subscriber when the operation returns, as always, and
        records what the draft said here. Should the operation still fail (its
        commit does, and takes the staged record with it), its failure is recorded
        as a new event. Inside another event (folded into it) this does nothing.
        """
        if self._early is not None:
            self._early()

    def lock(self, info: LockInfo) -> None:
        """Take the lock's ID, Who and Operation (as Terraform wrote them)."""
        self.lock_id = info.id
        self.who = info.who or None
        self.operation = info.operation or None

    def lock_body(self, body: bytes) -> None:
        """Like :meth:`lock`, from a LockInfo body as sent (unreadable: nothing taken)."""
        try:
            self.lock(LockInfo.parse(body))
        except InvalidLockInfo:
            pass


Subscriber = Callable[[Event], None]

#: The streams with an event open in this thread (or task): nested events fold into it.
_OPEN: ContextVar[frozenset[int]] = ContextVar("statekeeper_open_events", default=frozenset())


def in_operation() -> bool:
    """True while an operation's event is open in this thread (or task): an event
    emitted then is a side effect of that operation (a lease expired on the way to a
    lock), not the operation's own, which is emitted when it ends."""
    return bool(_OPEN.get())


def _codes(error: type[StatekeeperError]) -> Iterator[str]:
    yield error.code
    for sub in error.__subclasses__():
        yield from _codes(sub)


#: Every outcome an event can have: ``ok``, or a code of the error tree (``internal``
#: for an exception outside it), as :func:`_outcome` gives them.
OUTCOMES: tuple[str, ...] = ("ok", *sorted(set(_codes(StatekeeperError))))


def _outcome(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, StatekeeperError):
        return exc.code, exc.message
    return "internal", type(exc).__name__


class EventStream:
    """Delivers each event to every subscriber, in the order they subscribed."""

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()
        self._stagers: tuple[Subscriber, ...] = ()
        self._scopes: tuple[Callable[[], AbstractContextManager[object]], ...] = ()

    def enclose(self, scope: Callable[[], AbstractContextManager[object]]) -> None:
        """Run each operation and its event's delivery inside ``scope()``.

        The audit trail of the embedded database encloses them in one sync of
        its log: the operation's commits and the event's record then cost one
        fsync, done before the operation returns.
        """
        self._scopes = (*self._scopes, scope)

    def stage(self, stager: Subscriber) -> None:
        """Hand ``stager`` each event an operation records inside its own commit
        (:meth:`Draft.record_in_commit`), before it commits.

        ``stager`` writes the event in that transaction if it can, and must then
        skip the same event (same ``id``) when it reaches it as a subscriber; it
        must not raise: an event it could not stage is recorded as a subscriber.
        """
        self._stagers = (*self._stagers, stager)

    def subscribe(self, subscriber: Subscriber) -> None:
        """Deliver every event emitted from now on to ``subscriber``."""
        self._subscribers = (*self._subscribers, subscriber)

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every subscriber; a failing subscriber is logged, never raised."""
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception as exc:  # the operation already happened: report, never raise
                reason = exc.message if isinstance(exc, StatekeeperError) else repr(exc)
                log.error(
                    "an event subscriber failed (%s); the event: %s",
                    reason,
                    json.dumps(event.to_json(), separators=(",", ":")),
                    exc_info=not isinstance(exc, StatekeeperError),
                )

    @contextmanager
    def event(
        self,
        action: Action,
        caller: Caller,
        name: StateName | None = None,
        *,
        record_success: bool = True,
    ) -> Iterator[Draft]:
        """Record exactly one event for the enclosed operation, with the outcome it ended in.

        The block fills in the yielded :class:`Draft`. ``record_success=False``
        records only a failure (an admin check whose success the operation it
        guards records). Inside another open event of this stream, nothing is
        recorded: the outer event stands for the whole operation.
        """
        draft = Draft()
        open_streams = _OPEN.get()
        if id(self) in open_streams:
            yield draft
            return
        if len(self._scopes) == 1:
            # The usual case (the embedded database's one sync), without an ExitStack.
            with self._scopes[0](), self._recording(action, caller, name, draft, record_success):
                yield draft
            return
        with ExitStack() as scopes:
            for scope in self._scopes:
                scopes.enter_context(scope())
            with self._recording(action, caller, name, draft, record_success):
                yield draft

    @contextmanager
    def _recording(
        self,
        action: Action,
        caller: Caller,
        name: StateName | None,
        draft: Draft,
        record_success: bool,
    ) -> Iterator[None]:
        token = _OPEN.set(_OPEN.get() | {id(self)})
        outcome: tuple[str, str] | None = None

        def made(code: str, detail: str | None) -> Event:
            return Event(
                action=action,
                actor=caller.actor,
                outcome=code,
                state=str(name) if name is not None else None,
                version=draft.version,
                serial=draft.serial,
                remote_addr=caller.remote_addr,
                claims=dict(caller.claims),
                lock_id=draft.lock_id,
                who=draft.who,
                operation=draft.operation,
                detail=detail,
            )

        staged: list[Event] = []

        def early() -> None:
            if record_success and self._stagers and not staged:
                staged.append(made("ok", draft.detail))
                for stager in self._stagers:
                    stager(staged[0])

        draft._early = early
        try:
            yield
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            _OPEN.reset(token)
            draft._early = None
            if outcome is None and staged:
                self.emit(staged[0])  # the stagers skip it: they wrote it in the commit
            elif outcome is not None or (record_success and draft.changed):
                code, detail = outcome or ("ok", draft.detail)
                self.emit(made(code, detail))

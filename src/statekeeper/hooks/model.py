"""Subscriptions, the event types they choose from, and the CloudEvents a delivery carries.

A subscription names a URL, a secret, state globs (:mod:`statekeeper.state.globs`:
``team/**``) and event types. The types, and the stream events they come from:

==================== ===============================================
``state.written``     a write or push that stored a new version; a migration
``state.rolled_back`` a rollback
``state.deleted``     a delete
``lock.acquired``     a LOCK (Terraform's or an operator command's)
``lock.released``     an UNLOCK by the holder
``lock.forced``       a force-unlock or a reap
``lock.expired``      a lock removed because it outlived its time limit
``lock.stale``        a lock held longer than ``hooks_stale_after`` (once per lock)
==================== ===============================================

Only what succeeded is delivered; refusals stay in the audit trail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from statekeeper.errors import BadRequest, InvalidStateName
from statekeeper.events import Action, Event
from statekeeper.security.redaction import redacted
from statekeeper.state.globs import parse_glob, stored_glob
from statekeeper.terraform.names import StateName
from statekeeper.times import format_rfc3339, parse_rfc3339

if TYPE_CHECKING:
    from statekeeper.hooks.guard import IPNetwork
    from statekeeper.settings import HookSecret

__all__ = [
    "BY_ACTION",
    "EVENT_TYPES",
    "Subscription",
    "cloudevent",
    "hook_type",
    "recorded_cloudevent",
    "stored_nothing",
]

EVENT_TYPES = (
    "state.written",
    "state.rolled_back",
    "state.deleted",
    "state.restored",
    "state.purged",
    "history.compacted",
    "history.pruned",
    "lock.acquired",
    "lock.released",
    "lock.forced",
    "lock.expired",
    "lock.stale",
)
#: The webhook event type of each action's events (when they succeed, see ``hook_type``).
BY_ACTION = {
    Action.WRITE: "state.written",
    Action.PUSH: "state.written",
    Action.MIGRATE: "state.written",
    Action.ROLLBACK: "state.rolled_back",
    Action.DELETE: "state.deleted",
    Action.RESTORE: "state.restored",
    Action.PURGE: "state.purged",
    Action.COMPACT: "history.compacted",
    Action.PRUNE: "history.pruned",
    Action.LOCK: "lock.acquired",
    Action.UNLOCK: "lock.released",
    Action.FORCE_UNLOCK: "lock.forced",
    Action.REAP: "lock.forced",
    Action.EXPIRE: "lock.expired",
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: The CloudEvents ``type`` is the event type under this prefix.
TYPE_PREFIX = "io.statekeeper."


def hook_type(event: Event) -> str | None:
    """The webhook event type of a stream event, or None when none is delivered."""
    if event.outcome != "ok" or event.state is None:
        return None
    kind = BY_ACTION.get(event.action)
    return None if kind is None or stored_nothing(kind, event.detail) else kind


def stored_nothing(kind: str, detail: str | None) -> bool:
    """A ``state.written`` event of a write that stored nothing (an idempotent retry's:
    the bytes were current), which no subscription hears of."""
    return kind == "state.written" and detail is not None and detail.startswith("unchanged")


@dataclass(frozen=True)
class Subscription:
    name: str
    url: str
    #: The signing secret; a config file's hook has it only where it was read (:meth:`signing`).
    secret: str = field(repr=False)
    states: tuple[str, ...] = ("**",)
    events: tuple[str, ...] = EVENT_TYPES
    #: A config file's ``[[hooks]]``: where its secret is. Listed, never stored, not
    #: removable by command.
    secret_from: HookSecret | None = None
    #: False for one read back from the store (:meth:`from_json`): its globs were
    #: checked when it was added, by the rules of that time (see
    #: :func:`~statekeeper.state.globs.stored_glob`).
    written: InitVar[bool] = True

    @property
    def configured(self) -> bool:
        return self.secret_from is not None

    @property
    def shown_url(self) -> str:
        """The URL as listings and messages show it: a user name or password in it (a
        hook stored before they were refused) masked, as ``https://ci:***@host/``."""
        return redacted(self.url)

    @property
    def secret_source(self) -> str:
        """Where the secret is, for listings (never the secret): ``env VAR``, ``file PATH``
        or ``inline`` for a config file's hook, ``stored`` for one added by command."""
        return str(self.secret_from) if self.secret_from is not None else "stored"

    def signing(self, env: Mapping[str, str]) -> Subscription:
        """This subscription ready to sign: a config file's hook with its secret read now
        (from ``env`` or its file); a ConfigError naming where it is missing."""
        if self.secret_from is None:
            return self
        return replace(self, secret=self.secret_from.read(self.name, env))

    def __post_init__(self, written: bool) -> None:
        if (
            not self.name
            or len(self.name) > 64
            or not self.name.replace("-", "").replace("_", "").isalnum()
        ):
            raise BadRequest(f"{self.name!r} is not a hook name; use letters, digits, - and _")
        parts = urlsplit(self.url)
        if written and "@" in parts.netloc:
            # Deliveries send no Authorization, and listings show the URL: a password
            # there would authenticate nothing and be on every operator's screen.
            bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
            raise BadRequest(
                f"the hook URL {bare!r} carries a user name or password before its host "
                "(USER:PASSWORD@), which deliveries do not send; remove it: a receiver "
                "authenticates deliveries by their Statekeeper-Signature"
            )
        odd = _to_encode(self.url)
        if written and odd is not None:
            # The request line carries the URL as it is: a space or a line break would
            # break it, and a character past ASCII fails to be sent at all.
            raise BadRequest(
                f"the hook URL {self.url!r} holds {odd!r}, which a URL holds only "
                "percent-encoded (a space is %20, é is %C3%A9; a host name in its xn-- form)"
            )
        if not self.url.startswith(("https://", "http://")):
            raise BadRequest(f"the hook URL {self.shown_url!r} must be http:// or https://")
        unknown = sorted(set(self.events) - set(EVENT_TYPES))
        if unknown:
            raise BadRequest(
                f"unknown event type(s) {', '.join(unknown)}; choose from {', '.join(EVENT_TYPES)}"
            )
        for glob in self.states:
            (parse_glob if written else stored_glob)(glob)  # a malformed glob is a clear 400

    def check_sendable(self) -> None:
        """BadRequest naming the hook when its URL cannot be sent: one stored before a
        character to percent-encode was refused (it still loads, to be listed and removed)."""
        odd = _to_encode(self.url)
        if odd is not None:
            raise BadRequest(
                f"the hook {self.name!r} cannot be delivered to: its URL {self.shown_url!r} "
                f"holds {odd!r}, which a URL holds only percent-encoded (it was stored "
                "before such URLs were refused); re-add it with the URL percent-encoded: "
                f"statekeeper hooks add {self.name} --url URL --secret-file FILE "
                "(a space is %20, é is %C3%A9; a host name in its xn-- form)"
            )

    def wants(self, kind: str, state: str) -> bool:
        if kind not in self.events:
            return False
        try:
            name = StateName(state)
        except InvalidStateName:
            return False
        return any(stored_glob(g).covers(name) for g in self.states)

    def to_json(self, *, with_secret: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "url": self.url,
            "states": list(self.states),
            "events": list(self.events),
        }
        if with_secret:
            out["secret"] = self.secret
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Subscription:
        return cls(
            name=raw["name"],
            url=raw["url"],
            secret=raw["secret"],
            states=tuple(raw.get("states") or ("**",)),
            events=tuple(raw.get("events") or EVENT_TYPES),
            written=False,
        )


def _to_encode(url: str) -> str | None:
    """The first character of ``url`` that a URL holds only percent-encoded (a space, a
    control character, any past ASCII), or None."""
    return next((c for c in url if not "!" <= c <= "~"), None)


def cloudevent(kind: str, event: Event, source: str, extra: dict[str, Any] | None = None) -> bytes:
    """The CloudEvents 1.0 JSON (structured mode) of one event; ``id`` is the stream
    event's, so a redelivered duplicate carries the same ID."""
    return recorded_cloudevent(kind, event.json_view(), source, extra)


#: A time as :func:`statekeeper.times.format_rfc3339` writes it: UTC, a ``Z``, the
#: fraction of a second (if any) without trailing zeros.
_FORMATTED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{0,5}[1-9])?Z")


def recorded_cloudevent(
    kind: str, recorded: Mapping[str, Any], source: str, extra: dict[str, Any] | None = None
) -> bytes:
    """:func:`cloudevent` of an event as the audit trail and the outbox record it (its
    ``to_json``): the sender takes the fields as they were written, and the time as its
    text, instead of building an :class:`Event` and formatting its time again."""
    time = recorded["time"]
    if not _FORMATTED.fullmatch(time):  # written otherwise (by an older version): as now
        time = format_rfc3339(parse_rfc3339(time))
    data: dict[str, Any] = {
        "state": recorded.get("state"),
        "actor": recorded["actor"],
        "serial": recorded.get("serial"),
        "version": recorded.get("version"),
        "lock_id": recorded.get("lock_id"),
        "who": recorded.get("who"),
        "operation": recorded.get("operation"),
        "detail": recorded.get("detail"),
        **(extra or {}),
    }
    envelope = {
        "specversion": "1.0",
        "id": recorded["id"],
        "source": source,
        "type": TYPE_PREFIX + kind,
        "subject": recorded.get("state"),
        "time": time,
        "datacontenttype": "application/json",
        "data": data,
    }
    try:
        # orjson writes json.dumps' compact UTF-8 in a fraction of its time: the worker
        # encodes one payload per delivery.
        return orjson.dumps(envelope)
    except TypeError:  # orjson.JSONEncodeError: an integer past 64 bits
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


#: The longest wait between two attempts of one delivery.
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
        import random  # here: only a retry needs it (a CLI's start-up)

        return full / 2 + random.uniform(0, full / 2)

"""The webhook outbox as objects in the bucket, for stores without a database (S3).

Everything lives under ``statekeeper!/hooks/``, a prefix Terraform never reads
and no state name can take (:mod:`statekeeper.terraform.layout`):

- ``subscriptions/<name>.json`` — one subscription, with its secret (the
  bucket is as secret as the states it holds);
- ``outbox/<event_id>.<hook>.json`` — one event for one subscription, written
  with a conditional put (``If-None-Match``) on the request path, after the
  operation and **before the request is answered**: a server killed after
  answering leaves it for any replica to deliver;
- ``deliveries/<time>-<random>.<hook>.<outcome>.json`` — the delivery log, its
  keys in the order of the attempts' times (microseconds since the epoch);
- ``done/<event_id>.<hook>`` — for the one event offered more than once
  (``lock.stale``, by every replica's scan), so it is queued once;
- ``dead/<event_id>.<hook>.<time>.json`` — a dead letter's entry, kept (as the
  dead letters are, for ever) so that ``hooks redeliver`` can queue it again; a
  key of each death (its time, as the log's), so a redelivery that dies again
  before the redelivery has erased what it revived is kept, not erased with it.

What is removed for good (an entry delivered or dead, a subscription, the log's
attempts and the done markers older than ``hooks_deliveries_kept``) is *erased*:
on a versioned bucket a delete would leave every version of it (each claim and
retry is one) under a delete marker.

A sender claims an entry by rewriting it with its lease (owner and expiry)
conditionally on the ETag it read (``If-Match``): of several replicas one
wins, the others skip it, so each event is delivered once in the normal case.
A sender that dies leaves its lease to expire and another claims the entry.
A delivered or dead entry is erased from the outbox (a dead one kept under
``dead/``); a retry is rewritten with its next attempt time and the body
sent, so every retry sends the same bytes and the same event ID.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from statekeeper.errors import AccessDenied, NotFound, WriteRace
from statekeeper.events import Event
from statekeeper.hooks.model import Subscription
from statekeeper.hooks.outbox import Attempt, Entry, Wanted, not_dead, unknown_delivery
from statekeeper.storage.base import ObjectInfo, ObjectStore
from statekeeper.terraform.layout import WEBHOOKS_PREFIX
from statekeeper.times import format_rfc3339, utcnow

__all__ = ["HOOKS_PREFIX", "ObjectOutbox"]

log = logging.getLogger("statekeeper.hooks")

HOOKS_PREFIX = WEBHOOKS_PREFIX
_SUBS = HOOKS_PREFIX + "subscriptions/"
_OUTBOX = HOOKS_PREFIX + "outbox/"
_LOG = HOOKS_PREFIX + "deliveries/"
_DONE = HOOKS_PREFIX + "done/"
_DEAD = HOOKS_PREFIX + "dead/"
#: Event types whose events are offered again with the same ID (see the module doc).
_REOFFERED = frozenset({"lock.stale"})
_JSON = {"content-type": "application/json"}


def _micros(seconds: float) -> str:
    """A time as the delivery log's keys begin with it: microseconds, 17 digits."""
    return f"{round(seconds * 1_000_000):017d}"


def _dump(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


class ObjectOutbox:
    """Subscriptions, outbox and delivery log as objects in ``store`` (the raw store of
    the records, never an encrypting wrapper)."""

    #: Seconds between the sender's looks for entries of other replicas and retries due:
    #: each look is a listing of the outbox prefix.
    poll = 5.0
    more = False

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._subs: list[Subscription] | None = None
        #: What this process claimed: the entry as rewritten, to finish it conditionally.
        self._claimed: dict[str, ObjectInfo] = {}
        self._guard = threading.Lock()
        #: Entries the last look found (the metrics' queue depth, read without a request).
        self._waiting = 0
        #: Whether the log said that versions cannot be removed (it says so once).
        self._told = False

    # Subscriptions

    def subscriptions(self) -> list[Subscription]:
        """Every subscription. Read once, then re-read by each :meth:`claim` (the
        sender's poll) and :meth:`refresh`, so the request path never waits for a
        listing."""
        if self._subs is None:
            self._subs = self._read_subscriptions()
        return self._subs

    def refresh(self) -> None:
        """Read the subscriptions again, now (off the request path: the server's worker
        reported that they changed)."""
        self._subs = self._read_subscriptions()

    def _read_subscriptions(self) -> list[Subscription]:
        subs = []
        for info in self.store.scan(_SUBS):
            obj = self.store.get(info.key)
            if obj is not None:
                subs.append(Subscription.from_json(json.loads(obj.data)))
        return sorted(subs, key=lambda s: s.name)

    def add(self, sub: Subscription) -> None:
        self.store.put(f"{_SUBS}{sub.name}.json", _dump(sub.to_json(with_secret=True)), _JSON)
        self._subs = None

    def remove(self, name: str) -> None:
        key = f"{_SUBS}{name}.json"
        if self.store.head(key) is None:
            raise NotFound(f"there is no hook named {name!r}; see 'statekeeper hooks list'")
        self._erase(key)
        self._subs = None

    # The outbox

    def enqueue(self, kind: str, event: Event, hooks: Sequence[str]) -> None:
        """Queue ``event`` for each of ``hooks``: one object each, durable on return."""
        text = event.to_json()
        created = time.time()
        for hook in hooks:
            if kind in _REOFFERED and self.store.head(f"{_DONE}{event.id}.{hook}") is not None:
                continue
            record = {
                "event_id": event.id,
                "hook": hook,
                "kind": kind,
                "event": text,
                "attempts": 0,
                "next_attempt": created,
                "created": created,
            }
            # Already queued (the same event offered again): the first one stands.
            self.store.put_if_absent(f"{_OUTBOX}{event.id}.{hook}.json", _dump(record), _JSON)

    def claim(
        self,
        owner: str,
        lease: float,
        limit: int = 20,
        finished: Sequence[Attempt] = (),
        wanted: Wanted | None = None,
    ) -> list[Entry]:
        """Lease up to ``limit`` due entries to ``owner``, oldest first, after recording
        ``finished`` (objects: no transaction to share). ``wanted`` is not asked: the
        server put each event's objects when it happened."""
        self.finish(owner, finished)
        self._subs = self._read_subscriptions()
        now = time.time()
        due: list[tuple[float, ObjectInfo, dict[str, Any]]] = []
        listed = list(self.store.scan(_OUTBOX))
        self._waiting = len(listed)
        for info in listed:
            obj = self.store.get(info.key)
            if obj is None:
                continue  # delivered by another replica since the listing
            record = json.loads(obj.data)
            if record["next_attempt"] <= now and (record.get("lease_until") or 0) < now:
                due.append((record["created"], obj.info, record))
        entries: list[Entry] = []
        for _, info, record in sorted(due, key=lambda d: d[0]):
            if len(entries) >= limit:
                break
            record.update(lease_owner=owner, lease_until=now + lease)
            try:
                held = self.store.replace(info.key, _dump(record), _JSON, info)
            except WriteRace:
                continue  # another replica claimed it first
            with self._guard:
                self._claimed[info.key] = held
            payload = record.get("payload")
            entries.append(
                Entry(
                    id=info.key,
                    event_id=record["event_id"],
                    hook=record["hook"],
                    kind=record["kind"],
                    recorded=record["event"],
                    payload=None if payload is None else base64.b64decode(payload),
                    attempts=int(record["attempts"]),
                )
            )
        return entries

    def relax(self) -> None:
        """Nothing to relax: every object put is durable."""

    def finish(self, owner: str, attempts: Sequence[Attempt]) -> None:
        """Record attempts: retries rewritten (if still this sender's), the delivered
        and dead removed, each attempt added to the delivery log."""
        for a in attempts:
            key = str(a.entry.id)
            with self._guard:
                held = self._claimed.pop(key, None)
            number = a.entry.attempts + 1
            if a.outcome == "retry":
                obj = self.store.get(key)
                if obj is None or held is None or obj.info.etag != held.etag:
                    continue  # the lease ran out and another sender has it now
                record = json.loads(obj.data)
                record.update(
                    attempts=number,
                    next_attempt=a.next_attempt,
                    last_error=a.error,
                    lease_owner=None,
                    lease_until=None,
                )
                if a.payload is not None and "payload" not in record:
                    record["payload"] = base64.b64encode(a.payload).decode()
                try:
                    self.store.replace(key, _dump(record), _JSON, obj.info)
                except WriteRace:
                    continue
            else:
                if a.outcome == "dead":
                    self._bury(a.entry, number)
                if a.entry.kind in _REOFFERED:
                    # Before the erase: an offer between the two would find neither the
                    # entry nor the marker, and queue the event again. Not empty: a
                    # listing leaves zero-length objects out (no state is one), and
                    # :meth:`expire` finds the markers by listing.
                    done = format_rfc3339(utcnow()).encode()
                    self.store.put(f"{_DONE}{a.entry.event_id}.{a.entry.hook}", done, {})
                self._erase(key)
            self._log(a, number)

    def _bury(self, entry: Entry, attempts: int) -> None:
        """Keep a dead entry under ``dead/`` (put before its outbox object is erased: a
        sender stopped between the two leaves it in both, and the next one finds the
        outbox's again). A key of each death's own: a redelivery that dies again while
        the redelivery is still erasing what it sent leaves this death's entry alone."""
        died = time.time()
        record = {
            "event_id": entry.event_id,
            "hook": entry.hook,
            "kind": entry.kind,
            "event": entry.recorded,
            "attempts": attempts,
            "died": died,
        }
        if entry.payload is not None:
            record["payload"] = base64.b64encode(entry.payload).decode()
        key = f"{_DEAD}{entry.event_id}.{entry.hook}.{_micros(died)}.json"
        self.store.put(key, _dump(record), _JSON)

    def redeliver(
        self, hook: str, event_id: str | None = None, since: datetime | None = None
    ) -> list[str]:
        """Each dead letter's entry put back in the outbox (new: no attempt counted, due
        now, naming the ``dead/`` objects it revives), its dead attempts in the log
        rewritten as ``retry``, then those objects erased. A redelivery stopped midway is
        finished by running it again: the entry is put only where there is none.

        An entry already in the outbox that revives other objects is the dead one's own,
        its sender yet to erase it: the letter is left dead (not queued), as erasing its
        ``dead/`` object then would lose it from both."""
        if event_id is not None:
            keys = [i.key for i in self.store.scan(f"{_DEAD}{event_id}.{hook}.")]
            if not keys:
                raise self._not_dead(hook, event_id)
        else:
            ours = re.compile(rf"\.{re.escape(hook)}\.\d{{17}}\.json$")
            keys = [i.key for i in self.store.scan(_DEAD) if ours.search(i.key)]
        found: dict[str, tuple[list[str], dict[str, Any]]] = {}
        for key in keys:
            obj = self.store.get(key)
            if obj is None:
                continue  # redelivered by another run since the listing
            record = json.loads(obj.data)
            # The record decides: the key alone would take an event ID with a dot and
            # another hook's name after it for this hook's.
            if record["hook"] != hook:
                continue
            if since is None or record["died"] >= since.timestamp():
                # Several deaths of one event (a redelivery stopped before it erased
                # what it revived, which died again): one entry revives them all.
                read, _ = found.setdefault(record["event_id"], ([], record))
                read.append(key)
        if not found:
            return []
        # The log's dead attempts of these events, read before any is queued (a death of
        # the redelivery's own stays dead): the keys name the hook and the outcome.
        dead_log = []
        for info in self.store.scan(_LOG):
            if info.key.endswith(f".{hook}.dead.json"):
                logged = self.store.get(info.key)
                if logged is not None and json.loads(logged.data)["event_id"] in found:
                    dead_log.append((info.key, json.loads(logged.data)))
        now = time.time()
        queued: dict[str, list[str]] = {}
        for ev, (read, record) in found.items():
            entry = {
                **{k: v for k, v in record.items() if k not in ("attempts", "died")},
                "attempts": 0,
                "next_attempt": now,
                "created": now,
                "revives": read,
            }
            outbox = f"{_OUTBOX}{ev}.{hook}.json"
            if not self.store.put_if_absent(outbox, _dump(entry), _JSON):
                there = self.store.get(outbox)
                if there is None or json.loads(there.data).get("revives") != read:
                    continue  # its sender has yet to erase it (above)
            queued[ev] = read
        if not queued:
            return []
        for key, row in dead_log:
            if row["event_id"] not in queued:
                continue
            retried = key[: -len(".dead.json")] + ".retry.json"
            self.store.put(retried, _dump({**row, "outcome": "retry"}), _JSON)
            self._erase(key)
        for read in queued.values():
            for key in read:
                self._erase(key)
        return list(queued)

    def _not_dead(self, hook: str, event_id: str) -> Exception:
        """Why the event has no dead letter for ``hook``: still queued, delivered (the
        log says so), or no delivery of it at all."""
        if self.store.head(f"{_OUTBOX}{event_id}.{hook}.json") is not None:
            return not_dead(hook, event_id, "pending")
        ends = {f".{hook}.{outcome}.json": outcome for outcome in ("delivered", "dead")}
        for info in self.store.scan(_LOG):
            outcome = ends.get(info.key[info.key.index(".") :])
            if outcome is None:
                continue
            obj = self.store.get(info.key)
            if obj is None or json.loads(obj.data)["event_id"] != event_id:
                continue
            if outcome == "delivered":
                return not_dead(hook, event_id, "delivered")
            # Dead before the entries of the dead were kept: its event is not here.
            return NotFound(
                f"the dead letter of event {event_id} to the hook {hook!r} died before "
                "statekeeper kept the events of dead letters on S3: it cannot be redelivered"
            )
        return unknown_delivery(hook, event_id)

    def _log(self, a: Attempt, number: int) -> None:
        stamp = f"{_micros(time.time())}-{secrets.token_hex(4)}"
        row = {
            "event_id": a.entry.event_id,
            "hook": a.entry.hook,
            "type": a.entry.kind,
            "attempt": number,
            "time": format_rfc3339(utcnow()),
            "status": a.status,
            "error": a.error,
            "duration_ms": round(a.seconds * 1000, 2),
            "outcome": a.outcome,
        }
        key = f"{_LOG}{stamp}.{a.entry.hook}.{a.outcome}.json"
        self.store.put(key, _dump(row), _JSON)

    def backlog(self, wanted: Wanted | None = None) -> int:
        """Entries waiting to be delivered, as the sender's last look (at most ``poll``
        seconds ago) found them: a scrape of /metrics makes no request to the bucket, and
        does not fail while the bucket cannot be reached. (``wanted``: the server put
        each event's entries when it happened.)"""
        return self._waiting

    def deliveries(
        self, hook: str | None = None, outcome: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The delivery log, newest first; the hook and outcome are read from the keys,
        so only the rows shown are fetched. An attempt's ``seq`` is its time in
        microseconds, from its key: the log's order, and the same at every listing
        (a position in the listing would change as :meth:`expire` removes the older
        attempts)."""
        keys = [info.key for info in self.store.scan(_LOG)]  # oldest first: the time leads
        rows: list[dict[str, Any]] = []
        for key in reversed(keys):
            stamp, key_hook, key_outcome, _ = key[len(_LOG) :].rsplit(".", 3)
            if (hook is not None and key_hook != hook) or (
                outcome is not None and key_outcome != outcome
            ):
                continue
            obj = self.store.get(key)
            if obj is not None:
                rows.append({"seq": int(stamp.split("-", 1)[0]), **json.loads(obj.data)})
            if len(rows) >= limit:
                break
        return rows

    def expire(self, before: datetime) -> int:
        """Erase the log's attempts made before ``before`` but the dead letters (here
        the only record of a dead delivery, its entry erased when it died), and the done
        markers written before then. The log's keys lead with the time: it is listed up
        to ``before``, no further."""
        horizon = f"{_LOG}{_micros(before.timestamp())}"
        expired = []
        for info in self.store.scan(_LOG):
            if info.key >= horizon:
                break
            if not info.key.endswith(".dead.json"):
                expired.append(info.key)
        # The markers are few (one per lock.stale event) and their keys hold no time.
        expired += [i.key for i in self.store.scan(_DONE) if i.last_modified < before]
        for key in expired:
            self._erase(key)
        return len(expired)

    def _erase(self, key: str) -> None:
        """Remove ``key`` for good, with its versions; where the credentials may not
        remove versions (a policy from before erasing), deleted as before, and said."""
        try:
            self.store.erase(key)
        except AccessDenied as exc:
            self.store.delete(key)
            if not self._told:
                self._told = True
                log.warning("the webhook objects' versions stay in the bucket: %s", exc.message)

    def close(self) -> None:
        """Nothing of its own to let go of: the objects are the store's."""

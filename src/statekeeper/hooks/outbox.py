"""Subscriptions, the outbox and the delivery log on the embedded database.

The outbox holds one row per (event, subscription) still to deliver. The
audit trail is its log: an event's audit record commits with the operation it
records, synced before the request is answered, and the sender makes the
outbox rows of what the subscriptions want from the records it has not looked
at yet (:meth:`Outbox.claim`, after the last record looked at, ``hook_cursor``).
The request path writes nothing for a webhook, so a webhook adds no page to
the request's commit; a server killed after answering still has the record,
and its restart's sender makes the rows and delivers them. The rows and the
cursor commit together: a sender that dies first leaves both as they were, and
the next one makes the same rows again. A row names its audit record
(``audit_seq``) instead of holding a second copy of the event, and the sender
reads the event from it. A sender *claims* due rows with a lease (its ID and an
expiry) in one ``UPDATE … RETURNING``, so that several servers sharing the
database deliver each row once in the normal case; a sender that dies leaves
its lease to expire and another takes the row over. ``(event_id, hook)`` is
unique, so an event is queued once per subscription however often it is
offered.

The subscriptions are the store's (a table of its database, backed up with
it). The queue (the rows, the cursor, the delivery log) is a database file of
its own beside the store's (:func:`queue_path`): the sender writes it several
times a second while events flow, and there those writes never take the write
lock the requests commit under (a request would wait for a sender's commit,
SQLite's busy handler sleeping a millisecond or more at a time) nor add pages
to the log the requests' commits checkpoint. The sender only reads the store's
database: the audit records after its cursor, and the versions it diffs.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from statekeeper.errors import Conflict, NotFound
from statekeeper.events import Event
from statekeeper.hooks.model import BY_ACTION, Subscription, stored_nothing
from statekeeper.storage.base import RecordSpace
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.times import format_rfc3339, parse_rfc3339, utcnow

log = logging.getLogger("statekeeper.hooks")

__all__ = [
    "OUTCOMES",
    "Attempt",
    "Entry",
    "Outbox",
    "OutboxStore",
    "Outcome",
    "Wanted",
    "not_dead",
    "open_outbox",
    "queue_path",
    "unknown_delivery",
]

#: What came of a delivery attempt, as the delivery log records it.
Outcome = Literal["delivered", "retry", "dead"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)

_SUBSCRIPTIONS = """CREATE TABLE IF NOT EXISTS hook_subscriptions (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
) WITHOUT ROWID"""
_QUEUE = """
CREATE TABLE IF NOT EXISTS hook_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    hook TEXT NOT NULL,
    kind TEXT NOT NULL,
    event TEXT NOT NULL,
    payload BLOB,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    last_error TEXT,
    created TEXT NOT NULL,
    done TEXT,
    audit_seq INTEGER,
    UNIQUE (event_id, hook)
);
CREATE INDEX IF NOT EXISTS hook_outbox_due ON hook_outbox (status, next_attempt);
-- The last audit record the senders looked at (the ones after it may want rows), and
-- its time: a store restored from a backup has another record there, or none.
CREATE TABLE IF NOT EXISTS hook_cursor (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    time TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hook_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    hook TEXT NOT NULL,
    kind TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    time TEXT NOT NULL,
    status INTEGER,
    error TEXT,
    duration_ms REAL NOT NULL,
    outcome TEXT NOT NULL
);
-- What :meth:`Outbox.expire` removes, found without a scan: the attempts but the dead
-- letters, and the delivered rows (kept a while so that an event offered again is not
-- queued again); the dead rows wait for an operator.
CREATE INDEX IF NOT EXISTS hook_deliveries_expiring ON hook_deliveries (time)
    WHERE outcome <> 'dead';
CREATE INDEX IF NOT EXISTS hook_outbox_delivered ON hook_outbox (done)
    WHERE status = 'delivered';
"""
#: The queue's columns added since its first schema: ``audit_seq``, once rows named
#: their audit record; the cursor's record's ``time``, once the queue had a file.
_QUEUE_COLUMNS = (("hook_outbox", "audit_seq", "INTEGER"), ("hook_cursor", "time", "TEXT"))
#: The queue's tables, as the store's database held them before the queue had a file.
_MOVED = ("hook_outbox", "hook_deliveries", "hook_cursor")

_COLUMNS = "id, event_id, hook, kind, event, payload, attempts, audit_seq"
#: Audit records a claim looks at, at most: a sender catching up after a long stop
#: holds the queue's write lock (which other servers' senders wait for) a bounded time
#: each round, and goes on at once (``more``).
_SCAN = 2000
#: Rows of one INSERT (six values each: within SQLite's oldest limit of 999).
_ROWS = 150
#: The webhook event type of each action's audit records (when they succeed).
_KINDS = {action.value: kind for action, kind in BY_ACTION.items()}
#: The actions whose records a claim looks at.
_HOOKED = tuple(sorted(_KINDS))

#: The subscriptions that want events of a webhook event type on a state (none: an
#: empty list).
Wanted = Callable[[str, str], list[str]]


def queue_path(store: Path) -> Path:
    """The webhook queue's database file, beside the store's ``store``."""
    return store.with_name(store.name + "-hooks")


def _insert(db: sqlite3.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    """New outbox rows, each ``(event_id, hook, kind, event, audit_seq, next_attempt)``,
    a few statements for them all (one INSERT of many rows)."""
    # `created` is SQLite's clock, written by SQLite: nothing reads it but people.
    row = "(?, ?, ?, ?, ?, 'pending', ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
    for start in range(0, len(rows), _ROWS):
        chunk = rows[start : start + _ROWS]
        db.execute(
            "INSERT OR IGNORE INTO hook_outbox "
            "(event_id, hook, kind, event, audit_seq, status, next_attempt, created) VALUES "
            + ", ".join([row] * len(chunk)),
            [value for values in chunk for value in values],
        )


@dataclass(frozen=True)
class Entry:
    """One event for one subscription, claimed for a delivery attempt."""

    #: The row (SQLite) or the object's key (:mod:`statekeeper.hooks.objects`).
    id: int | str
    event_id: str
    hook: str
    kind: str
    #: The event as recorded (its ``to_json``): the CloudEvent is made of it as written.
    recorded: dict[str, Any]
    payload: bytes | None
    attempts: int

    @cached_property
    def event(self) -> Event:
        return Event.from_json(self.recorded)

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Entry:
        return cls(
            id=int(row[0]),
            event_id=str(row[1]),
            hook=str(row[2]),
            kind=str(row[3]),
            recorded=json.loads(row[4]),
            payload=None if row[5] is None else bytes(row[5]),
            attempts=int(row[6]),
        )


@dataclass(frozen=True)
class Attempt:
    """What came of one delivery attempt: ``delivered``, ``retry`` or ``dead``."""

    entry: Entry
    outcome: str
    status: int | None
    error: str | None
    seconds: float
    next_attempt: float | None = None
    #: The body sent, kept for the retries (None: already kept, or no retry).
    payload: bytes | None = None


class OutboxStore(Protocol):
    """What the sender and the management commands need of an outbox: this module's
    tables, or objects in the bucket (:class:`statekeeper.hooks.objects.ObjectOutbox`)."""

    #: Seconds between the sender's looks for rows of other servers and retries due.
    poll: float
    #: The last :meth:`claim` left events it has not looked at: the next one is due now.
    more: bool

    def subscriptions(self) -> list[Subscription]:
        """Every stored subscription."""
        ...

    def refresh(self) -> None:
        """Read the subscriptions afresh at the next :meth:`subscriptions`."""
        ...

    def add(self, sub: Subscription) -> None:
        """Add or replace a subscription."""
        ...

    def remove(self, name: str) -> None:
        """Remove a subscription (NotFound when there is none)."""
        ...

    def enqueue(self, kind: str, event: Event, hooks: Sequence[str]) -> None:
        """Queue ``event`` for each of ``hooks``, durably before returning."""
        ...

    def claim(
        self,
        owner: str,
        lease: float,
        limit: int = 20,
        finished: Sequence[Attempt] = (),
        wanted: Wanted | None = None,
    ) -> list[Entry]:
        """Lease up to ``limit`` due entries to ``owner`` for ``lease`` seconds, after
        recording ``finished`` (as :meth:`finish` does; in the same transaction where
        there is one) and queueing what ``wanted`` says of the events recorded since
        the last look, where the audit trail is the outbox's log."""
        ...

    def relax(self) -> None:
        """Called once on the sender's thread before it starts."""
        ...

    def finish(self, owner: str, attempts: Sequence[Attempt]) -> None:
        """Record attempts: in the entries and the delivery log."""
        ...

    def backlog(self, wanted: Wanted | None = None) -> int:
        """Entries waiting to be delivered, and where the audit trail is the log, what
        ``wanted`` says of the records the senders have not looked at yet."""
        ...

    def deliveries(
        self, hook: str | None = None, outcome: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The delivery log, newest first."""
        ...

    def expire(self, before: datetime) -> int:
        """Remove the delivery log's attempts made before ``before``, and what is kept
        of the entries finished then, but the dead letters; how many were removed."""
        ...

    def redeliver(
        self, hook: str, event_id: str | None = None, since: datetime | None = None
    ) -> list[str]:
        """Queue dead letters of ``hook`` again, as new (their attempts counted from
        none), keeping their events and IDs: the one of ``event_id`` (NotFound when
        there is none, Conflict when it is not dead), else every one that died at
        ``since`` or after (all: None). Their attempts in the delivery log are no
        longer dead but ``retry``. The event IDs queued."""
        ...

    def close(self) -> None:
        """Let go of what the outbox opened of its own."""
        ...


class Outbox:
    #: A look is one indexed query.
    poll = 1.0
    more = False

    def __init__(self, records: SqliteDatabase) -> None:
        #: The store's database: the subscriptions, and the audit records the rows are
        #: made of.
        self.records = records
        records.run(lambda db: db.execute(_SUBSCRIPTIONS), write=True)
        #: The queue's own database.
        self.db = SqliteDatabase(queue_path(records.path), _QUEUE, _QUEUE_COLUMNS)
        _adopt_queue(records, self.db)
        # Set to the newest record when the queue is made: events from before there was
        # an outbox had no subscription to want them.
        newest, seen = records.run(lambda db: (n := _newest(db), _time_at(db, n)))
        self.db.run(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO hook_cursor VALUES ('audit', ?, ?)", (newest, seen)
            ),
            write=True,
        )

    # Subscriptions

    def subscriptions(self) -> list[Subscription]:
        """Every subscription."""
        rows = self.records.run(
            lambda db: db.execute("SELECT body FROM hook_subscriptions ORDER BY name").fetchall()
        )
        return [Subscription.from_json(json.loads(body)) for (body,) in rows]

    def refresh(self) -> None:
        """Nothing kept: every :meth:`subscriptions` reads the table."""

    def add(self, sub: Subscription) -> None:
        body = json.dumps(sub.to_json(with_secret=True))
        self.records.run(
            lambda db: db.execute(
                "INSERT INTO hook_subscriptions (name, body) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                (sub.name, body),
            ),
            write=True,
        )

    def remove(self, name: str) -> None:
        cur = self.records.run(
            lambda db: db.execute("DELETE FROM hook_subscriptions WHERE name = ?", (name,)),
            write=True,
        )
        if cur.rowcount != 1:
            raise NotFound(f"there is no hook named {name!r}; see 'statekeeper hooks list'")

    # The outbox

    def enqueue(self, kind: str, event: Event, hooks: Sequence[str]) -> None:
        """Queue ``event`` for each of ``hooks``, durably, in a transaction of its own
        (an event with no audit record: the row holds the event itself)."""
        text = event.json_text()
        rows = [(event.id, hook, kind, text, None, time.time()) for hook in hooks]
        self.db.run(lambda db: _insert(db, rows), write=True)

    def claim(
        self,
        owner: str,
        lease: float,
        limit: int = 20,
        finished: Sequence[Attempt] = (),
        wanted: Wanted | None = None,
    ) -> list[Entry]:
        """Lease up to ``limit`` due rows to ``owner`` for ``lease`` seconds in the
        transaction recording ``finished`` and queueing what ``wanted`` says of the
        audit records since the last look: a round takes the write lock once."""
        now = time.time()
        record = _recorder(owner, finished)

        # The events of the records this claim queues, as it read them.
        read: dict[int, str] = {}

        def tx(db: sqlite3.Connection) -> list[Any]:
            record(db)
            if wanted is not None:
                self.more = _queue_recorded(db, self.records, wanted, now, read)
            return db.execute(
                f"UPDATE hook_outbox SET lease_owner = ?, lease_until = ? WHERE id IN ("
                "SELECT id FROM hook_outbox WHERE status = 'pending' AND next_attempt <= ? "
                "AND (lease_until IS NULL OR lease_until < ?) ORDER BY id LIMIT ?) "
                f"RETURNING {_COLUMNS}",
                (owner, now + lease, now, now, limit),
            ).fetchall()

        rows = self.db.run(tx, write=True)
        # The events of rows that name their audit record: read by the queueing above (the
        # usual case: rows are claimed in the round that makes them), else from the
        # record, after the commit (a record never changes).
        audited = dict(read)
        seqs = sorted({r[7] for r in rows if not r[4]} - audited.keys())
        if seqs:
            audited |= dict(
                self.records.run(
                    lambda db: db.execute(
                        f"SELECT seq, event FROM audit WHERE seq IN ({', '.join('?' * len(seqs))})",
                        seqs,
                    ).fetchall()
                )
            )
        entries, gone = [], []
        for r in rows:
            text = r[4] or audited.get(r[7])
            entry = Entry.from_row((*r[:4], text, *r[5:])) if text else None
            if entry is None or entry.recorded.get("id") != entry.event_id:
                gone.append(r[0])  # its record gone, or another in its place
            else:
                entries.append(entry)
        if gone:
            self._gone(gone)
        return sorted(entries, key=lambda e: e.id)

    def _gone(self, ids: list[int]) -> None:
        """Rows whose audit record the store no longer has (its database restored from a
        backup older than the queue's): dead, as there is no event to send."""
        log.warning(
            "%d webhook deliveries name audit records the store does not have (was its "
            "database restored from a backup?); they are marked dead",
            len(ids),
        )
        error = "the event's audit record is not in the store"
        self.db.run(
            lambda db: db.executemany(
                "UPDATE hook_outbox SET status = 'dead', last_error = ?, lease_owner = NULL, "
                "lease_until = NULL WHERE id = ?",
                [(error, i) for i in ids],
            ),
            write=True,
        )

    def relax(self) -> None:
        """For the sender's own connection: commits wait for the WAL, not the disk.

        The events are in the audit trail, fully synced with the operations they
        record. What the sender writes (rows, the cursor, leases, attempts) may be
        lost to a power cut and made or delivered again, which at-least-once
        allows; an fsync per round would make delivering cost more than the
        requests it reports.
        """
        self.db.relax()

    def finish(self, owner: str, attempts: Sequence[Attempt]) -> None:
        """Record attempts, in one transaction, in the rows and the delivery log."""
        if attempts:
            self.db.run(_recorder(owner, attempts), write=True)

    def backlog(self, wanted: Wanted | None = None) -> int:
        """Deliveries waiting (the metrics' webhook queue depth): the pending rows, and
        the rows the records after the cursor will make (usually none or a few: the
        sender looks a tenth of a second after each wanted event)."""

        def count(db: sqlite3.Connection) -> int:
            ((pending,),) = db.execute(
                "SELECT COUNT(*) FROM hook_outbox WHERE status = 'pending'"
            ).fetchall()
            if wanted is None:
                return int(pending)
            *_, chosen = _recorded(db, self.records, wanted)
            return int(pending) + sum(len(hooks) for _, _, hooks, *_ in chosen)

        return self.db.run(count)

    def deliveries(
        self, hook: str | None = None, outcome: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The delivery log, newest first: every attempt with its answer."""
        sql = (
            "SELECT seq, event_id, hook, kind AS type, attempt, time, status, error, duration_ms, "
            "outcome FROM hook_deliveries WHERE 1=1"
        )
        args: list[Any] = []
        if hook is not None:
            sql += " AND hook = ?"
            args.append(hook)
        if outcome is not None:
            sql += " AND outcome = ?"
            args.append(outcome)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)

        def read(db: sqlite3.Connection) -> list[dict[str, Any]]:
            cursor = db.execute(sql, args)
            keys = [column[0] for column in cursor.description]
            return [dict(zip(keys, row, strict=True)) for row in cursor.fetchall()]

        return self.db.run(read)

    def expire(self, before: datetime) -> int:
        """Two indexed DELETEs: the attempts before ``before`` but the dead ones (the
        dead letters ``hooks deliveries --outcome dead`` lists), and the rows delivered
        then. The dead rows stay, for an operator."""
        # The times are RFC 3339 text as the attempts were stamped, compared as text.
        horizon = format_rfc3339(before)

        def tx(db: sqlite3.Connection) -> int:
            attempts = db.execute(
                "DELETE FROM hook_deliveries WHERE time < ? AND outcome <> 'dead'", (horizon,)
            )
            # Named: the planner would rather take hook_outbox_due's status, and read every
            # delivered row kept.
            delivered = db.execute(
                "DELETE FROM hook_outbox INDEXED BY hook_outbox_delivered "
                "WHERE done < ? AND status = 'delivered'",
                (horizon,),
            )
            return attempts.rowcount + delivered.rowcount

        return self.db.run(tx, write=True)

    def redeliver(
        self, hook: str, event_id: str | None = None, since: datetime | None = None
    ) -> list[str]:
        """One transaction: the dead rows made pending again, their dead attempts in
        the log made ``retry`` (so ``hooks deliveries --outcome dead`` no longer lists
        them, and the log's expiry may remove them)."""

        def tx(db: sqlite3.Connection) -> list[str]:
            if event_id is not None:
                found = db.execute(
                    "SELECT id, event_id, status FROM hook_outbox WHERE event_id = ? AND hook = ?",
                    (event_id, hook),
                ).fetchall()
                if not found:
                    raise unknown_delivery(hook, event_id)
                if found[0][2] != "dead":
                    raise not_dead(hook, event_id, str(found[0][2]))
                rows = [(int(found[0][0]), str(found[0][1]))]
            else:
                rows = [
                    (int(i), str(e))
                    for i, e, done in db.execute(
                        "SELECT id, event_id, done FROM hook_outbox "
                        "WHERE hook = ? AND status = 'dead' ORDER BY id",
                        (hook,),
                    ).fetchall()
                    # Parsed, not compared as text: the stamps' fractions vary in length.
                    if since is None or (done is not None and parse_rfc3339(done) >= since)
                ]
            ids = [(i,) for i, _ in rows]
            db.executemany(
                "UPDATE hook_outbox SET status = 'pending', attempts = 0, next_attempt = ?, "
                "last_error = NULL, done = NULL, lease_owner = NULL, lease_until = NULL "
                "WHERE id = ?",
                [(time.time(), i) for (i,) in ids],
            )
            db.executemany(
                "UPDATE hook_deliveries SET outcome = 'retry' WHERE outbox_id = ? "
                "AND outcome = 'dead'",
                ids,
            )
            return [e for _, e in rows]

        return self.db.run(tx, write=True)

    def close(self) -> None:
        self.db.close()


def unknown_delivery(hook: str, event_id: str) -> NotFound:
    """The refusal of a redelivery of an event the outbox has no entry of."""
    return NotFound(
        f"there is no delivery of event {event_id} to the hook {hook!r}; see "
        f"'statekeeper hooks deliveries --hook {hook} --outcome dead' for its dead letters"
    )


def not_dead(hook: str, event_id: str, status: str) -> Conflict:
    """The refusal of a redelivery of an entry that is not dead (``status``)."""
    return Conflict(
        f"the delivery of event {event_id} to the hook {hook!r} is {status}, not dead: "
        "only dead letters are redelivered"
    )


#: An audit record some subscription wants: its event's ID, its webhook event type, the
#: subscriptions that want it, the record's ``seq`` and its event's JSON.
_Wanted = tuple[str, str, list[str], int, str]


#: Where the sender's look at the audit trail ends: the last record looked at (its seq
#: and time), the newest record, and the records after the cursor some subscription wants.
_Look = tuple[int, str | None, int, list[_Wanted]]


def _recorded(db: sqlite3.Connection, records: SqliteDatabase, wanted: Wanted) -> _Look:
    """The audit records of ``records`` after the queue's cursor (read on ``db``), at
    most ``_SCAN`` of them, and those some subscription wants (only those are read
    whole)."""
    ((cursor, seen),) = db.execute("SELECT seq, time FROM hook_cursor WHERE name = 'audit'")

    def read(main: sqlite3.Connection) -> tuple[int, str | None, int, list[Any]]:
        newest = _newest(main)
        start = cursor
        if seen is not None and _time_at(main, cursor) != seen:
            # Another record at the cursor, or none: the store's database was restored
            # from a backup older than the queue. What it holds of the records looked at
            # is no newer than the cursor's; what follows came after the restore.
            ((start,),) = main.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM audit WHERE seq <= ? AND time <= ?",
                (cursor, seen),
            )
            log.warning(
                "the audit trail has changed under the webhook queue's cursor (record %d; "
                "was the store's database restored from a backup?): the records after %d "
                "are looked at again",
                cursor,
                start,
            )
        end = min(newest, start + _SCAN)
        found = main.execute(
            "SELECT seq, action, state, event FROM audit WHERE seq > ? AND seq <= ? "
            "AND outcome = 'ok' AND state IS NOT NULL "
            f"AND action IN ({', '.join('?' * len(_HOOKED))}) ORDER BY seq",
            (start, end, *_HOOKED),
        ).fetchall()
        return end, _time_at(main, end), newest, found

    end, time_, newest, found = records.run(read)
    chosen: list[_Wanted] = []
    for seq, action, state, text in found:
        kind = _KINDS[action]
        hooks = wanted(kind, state)
        if not hooks:
            continue  # the usual record where few subscribe: its event is never parsed
        # The query kept the records hook_type delivers but for one rule: its JSON is
        # enough for that (an Event of it, its time parsed, would cost three times more).
        recorded = json.loads(text)
        if not stored_nothing(kind, recorded.get("detail")):
            chosen.append((recorded["id"], kind, hooks, seq, text))
    return end, time_, newest, chosen


def _time_at(db: sqlite3.Connection, seq: int) -> str | None:
    """The time of the audit record ``seq`` (None: there is none)."""
    found = db.execute("SELECT time FROM audit WHERE seq = ?", (seq,)).fetchall()
    return str(found[0][0]) if found else None


def _queue_recorded(
    db: sqlite3.Connection,
    records: SqliteDatabase,
    wanted: Wanted,
    now: float,
    read: dict[int, str],
) -> bool:
    """The outbox rows of the audit records after the cursor, and the cursor moved past
    them, on ``db`` (in the claim's transaction), their events' JSON put in ``read`` by
    ``seq``; True when records were left for the next claim. (A round with no new
    record changes no page: SQLite writes nothing for an ``UPDATE`` that sets what is
    there.)"""
    end, time_, newest, chosen = _recorded(db, records, wanted)
    read.update((seq, text) for *_, seq, text in chosen)
    rows = [(e, hook, kind, "", seq, now) for e, kind, hooks, seq, _ in chosen for hook in hooks]
    _insert(db, rows)
    db.execute("UPDATE hook_cursor SET seq = ?, time = ? WHERE name = 'audit'", (end, time_))
    return end < newest


def _newest(db: sqlite3.Connection) -> int:
    """The last audit record's ``seq`` (0: none)."""
    ((newest,),) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchall()
    return int(newest)


def _adopt_queue(records: SqliteDatabase, queue: SqliteDatabase) -> None:
    """The queue as the store's database held it before the queue had a file of its own,
    moved to ``queue``: copied (rows already there kept, the cursor taken), then dropped
    from the store's database. A process stopped between the two copies it again.

    The rows and the log entries take new numbers in ``queue``: it may hold rows of its
    own already (an older release run on the data directory after this one, which made
    its tables in the store's database again, numbered from 1), and a row copied with
    its old number would be dropped as a duplicate of an unrelated one. A row is the
    same row by ``(event_id, hook)``, a log entry by its attempt and time."""

    def read(db: sqlite3.Connection) -> dict[str, tuple[list[str], list[Any]]]:
        found = {}
        for (table,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN "
            f"({', '.join('?' * len(_MOVED))})",
            _MOVED,
        ).fetchall():
            columns = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
            found[table] = (columns, db.execute(f"SELECT * FROM {table}").fetchall())
        return found

    old = records.run(read)
    if not old:
        return

    def copy(db: sqlite3.Connection) -> None:
        moved: dict[int, int] = {}
        if "hook_outbox" in old:
            columns, rows = old["hook_outbox"]
            for row in rows:
                values = dict(zip(columns, row, strict=True))
                was = values.pop("id")
                db.execute(
                    f"INSERT OR IGNORE INTO hook_outbox ({', '.join(values)}) "
                    f"VALUES ({', '.join('?' * len(values))})",
                    list(values.values()),
                )
                ((moved[was],),) = db.execute(
                    "SELECT id FROM hook_outbox WHERE event_id = ? AND hook = ?",
                    (values["event_id"], values["hook"]),
                ).fetchall()
        if "hook_deliveries" in old:
            columns, rows = old["hook_deliveries"]
            for row in rows:
                values = dict(zip(columns, row, strict=True))
                del values["seq"]
                # A log entry whose row is gone (delivered and expired) keeps the number.
                values["outbox_id"] = moved.get(values["outbox_id"], values["outbox_id"])
                db.execute(
                    f"INSERT INTO hook_deliveries ({', '.join(values)}) "
                    f"SELECT {', '.join('?' * len(values))} WHERE NOT EXISTS ("
                    "SELECT 1 FROM hook_deliveries WHERE event_id = ? AND hook = ? "
                    "AND attempt = ? AND time = ?)",
                    [
                        *values.values(),
                        values["event_id"],
                        values["hook"],
                        values["attempt"],
                        values["time"],
                    ],
                )
        if "hook_cursor" in old:
            columns, rows = old["hook_cursor"]
            db.executemany(
                f"INSERT OR REPLACE INTO hook_cursor ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                rows,
            )

    queue.run(copy, write=True)

    def drop(db: sqlite3.Connection) -> None:
        for table in old:
            db.execute(f"DROP TABLE IF EXISTS {table}")

    records.run(drop, write=True)
    log.info("the webhook queue moved from %s to %s", records.path, queue.path)


def _recorder(owner: str, attempts: Sequence[Attempt]) -> Callable[[sqlite3.Connection], None]:
    """What records ``attempts`` in the rows and the delivery log, on a transaction's
    connection: a statement of each kind for them all, not two per attempt."""
    stamp = format_rfc3339(utcnow())
    retried: list[tuple[object, ...]] = []
    ended: list[tuple[object, ...]] = []
    logged: list[tuple[object, ...]] = []
    for a in attempts:
        number = a.entry.attempts + 1
        if a.outcome == "retry":
            retried.append((number, a.next_attempt, a.error, a.payload, a.entry.id, owner))
        else:
            ended.append((number, a.outcome, a.error, stamp, a.entry.id, owner))
        entry, ms = a.entry, round(a.seconds * 1000, 2)
        facts = (entry.id, entry.event_id, entry.hook, entry.kind, number, stamp)
        logged.append((*facts, a.status, a.error, ms, a.outcome))

    def tx(db: sqlite3.Connection) -> None:
        if not attempts:
            return
        db.executemany(
            "UPDATE hook_outbox SET attempts = ?, next_attempt = ?, last_error = ?, "
            "payload = COALESCE(payload, ?), lease_owner = NULL, lease_until = NULL "
            "WHERE id = ? AND lease_owner = ?",
            retried,
        )
        db.executemany(
            "UPDATE hook_outbox SET attempts = ?, status = ?, last_error = ?, "
            "done = ?, lease_owner = NULL, lease_until = NULL "
            "WHERE id = ? AND lease_owner = ?",
            ended,
        )
        db.executemany(
            "INSERT INTO hook_deliveries (outbox_id, event_id, hook, kind, attempt, "
            "time, status, error, duration_ms, outcome) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            logged,
        )

    return tx


def open_outbox(records: RecordSpace) -> OutboxStore:
    """The outbox in ``records``: tables of the embedded database where there is one,
    else objects beside the states (S3)."""
    if records.database is None:
        from statekeeper.hooks.objects import ObjectOutbox

        return ObjectOutbox(records.objects)
    return Outbox(records.database)

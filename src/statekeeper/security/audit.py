"""The audit trail: an append-only record of every state operation and every denial.

The trail is a subscriber of the services' event stream
(:mod:`statekeeper.events`): each :class:`~statekeeper.events.Event` says when,
who (token name or OIDC subject, with claims such as the repository and run
ID), from where, what, on which state and version, Terraform's Who/Operation
from the LockInfo, and the outcome (``ok`` or the error code, ``forbidden`` and
``unauthenticated`` included).

Two logs, one interface:

- :class:`SqliteAuditLog`: an ``audit`` table in the embedded database;
  triggers refuse UPDATE and DELETE, so it is insert-only.
- :class:`StoreAuditLog`: one JSON-lines object per event under
  ``statekeeper!/audit/YYYY/MM/DD/<time>-<uuid>.jsonl`` in any ObjectStore (S3
  for stateless replicas). ``!`` cannot appear in a state name (and is one of
  S3's safe key characters), so these keys never collide with a state.

Both are append-only; :meth:`AuditLog.record` is what ``Services.build``
subscribes to the event stream, so the server and the CLI leave the same trail.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from statekeeper.errors import AccessDenied, BadRequest, StatekeeperError
from statekeeper.events import OUTCOMES, Action, Event
from statekeeper.state.globs import parse_glob
from statekeeper.storage.base import ObjectStore, RecordSpace
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.terraform.layout import AUDIT_PREFIX
from statekeeper.terraform.names import StateName

__all__ = [
    "AuditFilter",
    "AuditLog",
    "SqliteAuditLog",
    "StoreAuditLog",
    "open_audit_log",
]

log = logging.getLogger("statekeeper.audit")

_ACTIONS = tuple(a.value for a in Action)


@dataclass(frozen=True)
class AuditFilter:
    """Which events to list: all given conditions must hold.

    A condition no event could meet (a malformed glob, an action or an outcome no
    event has, a limit under one) is refused when the filter is made, as a :class:`BadRequest`
    that says so: the CLI, the API and the UI build their queries here.
    """

    state: str | None = None  # a state glob: team/**, */prod.tfstate
    actor: str | None = None
    since: datetime | None = None
    action: str | None = None
    outcome: str | None = None  # ok, or an error code: forbidden, locked, …
    limit: int = 1000
    #: Events at or before this time only (the newest ``limit`` of those).
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.state is not None:
            parse_glob(self.state)
        if self.action is not None and self.action not in _ACTIONS:
            raise BadRequest(
                f"no event has the action {self.action!r}; choose from {', '.join(_ACTIONS)}"
            )
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise BadRequest(
                f"no event has the outcome {self.outcome!r}; choose from {', '.join(OUTCOMES)}"
            )
        if self.limit < 1:
            raise BadRequest(f"the limit is {self.limit}; ask for 1 event or more")

    def matches(self, e: Event) -> bool:
        if self.actor is not None and e.actor != self.actor:
            return False
        if self.action is not None and e.action != self.action:
            return False
        if self.outcome is not None and e.outcome != self.outcome:
            return False
        if self.since is not None and e.time < self.since:
            return False
        if self.until is not None and e.time > self.until:
            return False
        if self.state is not None:
            if e.state is None:
                return False
            if not parse_glob(self.state).covers(StateName(e.state)):
                return False
        return True


class AuditLog(Protocol):
    def record(self, event: Event) -> None:
        """Append one event; durable on return (a failure raises, never passes silently).

        This is the subscriber of the event stream, which logs such a failure
        with the event instead of failing the operation the event records.
        """
        ...

    def stage(self, event: Event) -> None:
        """Write ``event`` inside the operation's own transaction where the log can (the
        event stream's stager, see ``Draft.record_in_commit``); never raises."""
        ...

    def query(self, where: AuditFilter) -> list[Event]:
        """Matching events, oldest first, at most ``where.limit`` (the newest ones)."""
        ...

    def close(self) -> None:
        """Write whatever is pending; called once, when the services close."""
        ...

    def backlog(self) -> int:
        """Events recorded but not yet written (the metrics' audit queue depth)."""
        ...

    def failures(self) -> int:
        """Events that could not be written since the start (the metrics count them)."""
        ...

    def grouped(self) -> AbstractContextManager[object]:
        """A scope around one operation and the recording of its event, whose
        commits to the log's database share one sync at its end."""
        ...


_SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time TEXT NOT NULL,
        action TEXT NOT NULL,
        actor TEXT NOT NULL,
        state TEXT,
        outcome TEXT NOT NULL,
        event TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_by_time ON audit (time)",
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
       BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
       BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""",
)


class SqliteAuditLog:
    """The insert-only ``audit`` table of the embedded database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        self._failures = 0
        #: The event this thread wrote inside an operation's own transaction (stage).
        self._staged = threading.local()

        def create(conn: sqlite3.Connection) -> None:
            for statement in _SQLITE_SCHEMA:
                conn.execute(statement)

        db.run(create, write=True)

    def stage(self, event: Event) -> None:
        """Write ``event`` in the transaction this thread has open on the database (the
        operation's own, e.g. a new state version's), so that it commits and is synced
        with it; :meth:`record` then skips it. Outside a transaction of this database,
        or when the write fails, nothing is staged: :meth:`record` writes it as usual.
        """
        if not self.db.writing:
            return
        try:
            self._write(event)
        except Exception:  # noqa: BLE001 - SQLite undid the INSERT; record() tries again
            return  # and reports its failure with the event, as for any subscriber
        self._staged.id = event.id

    def record(self, event: Event) -> None:
        if getattr(self._staged, "id", None) == event.id:
            self._staged.id = None  # written in the operation's own commit
            return
        try:
            self._write(event)
        except StatekeeperError:
            self._failures += 1
            raise

    def _write(self, event: Event) -> None:
        row = (
            # Fixed-width UTC so that text order is time order (isoformat: a quarter of
            # strftime's cost, and each request's event is written on its path).
            event.time.astimezone(UTC).replace(tzinfo=None).isoformat("T", "microseconds") + "Z",
            event.action,
            event.actor,
            event.state,
            event.outcome,
            event.json_text(),
        )

        def tx(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO audit (time, action, actor, state, outcome, event) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )

        # No savepoint when joined to an operation's transaction: the INSERT is its one
        # statement, and SQLite undoes a statement that fails by itself.
        self.db.run(tx, write=True, atomic=False)

    def grouped(self) -> AbstractContextManager[object]:
        # The operation's own commits (a lock row, a digest) and this record are
        # synced together, before the operation returns: one fsync, not two or three.
        return self.db.syncing_once()

    def close(self) -> None:
        """Nothing pending: every event is committed when recorded."""

    def backlog(self) -> int:
        return 0

    def failures(self) -> int:
        return self._failures

    def query(self, where: AuditFilter) -> list[Event]:
        sql = "SELECT event FROM audit WHERE 1=1"
        args: list[str] = []
        if where.actor is not None:
            sql += " AND actor = ?"
            args.append(where.actor)
        if where.since is not None:
            sql += " AND time >= ?"
            args.append(where.since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        if where.until is not None:
            # Stored times drop a fraction's trailing zeros ("…05Z", "…05.1Z"), so text
            # order is time order only between whole seconds: the rows before the next
            # second, then ``matches`` to the microsecond.
            after = where.until.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
            sql += " AND time < ?"
            args.append(after.strftime("%Y-%m-%dT%H:%M:%S"))
        sql += " ORDER BY seq DESC"
        out: list[Event] = []
        with self.db.reading() as db:
            for (text,) in db.execute(sql, args):
                event = Event.from_json(json.loads(text))
                if where.matches(event):
                    out.append(event)
                    if len(out) >= where.limit:
                        break
        return out[::-1]


def _unwritten(exc: StatekeeperError, where: str) -> str:
    """Why a batch of events was not written, and what to do about it."""
    if isinstance(exc, AccessDenied):
        return (
            f"the audit trail could not be written: reads are audited too, by writing under "
            f"{where} in the store, and AWS denied these credentials s3:PutObject there; "
            "grant it on that prefix (`statekeeper iam-policy --read-only` includes it)"
        )
    return f"the audit trail could not be written under {where}: {exc.message}"


class StoreAuditLog:
    """JSON-lines objects in an ObjectStore (for stateless replicas), in small batches.

    On S3 an object per event would double the request bill of every read, so
    events are gathered for up to ``flush_every`` seconds (or ``max_batch``
    events) and written as one object by a background thread. :meth:`close`
    (called when the server stops) and :meth:`query` write what is pending;
    a replica killed with SIGKILL loses at most the last ``flush_every``
    seconds of events.
    """

    def __init__(
        self,
        store: ObjectStore,
        prefix: str = AUDIT_PREFIX,
        *,
        flush_every: float = 1.0,
        max_batch: int = 500,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.flush_every = flush_every
        self.max_batch = max_batch
        self._pending: list[Event] = []
        self._failures = 0
        self._cv = threading.Condition()
        self._writing = threading.Lock()  # one batch at a time, in order
        self._thread: threading.Thread | None = None
        self._closed = False

    def record(self, event: Event) -> None:
        with self._cv:
            if self._closed:
                self._write([event])
                return
            self._pending.append(event)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="statekeeper-audit", daemon=True
                )
                self._thread.start()
            if len(self._pending) >= self.max_batch:
                self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(
                    lambda: self._closed or len(self._pending) >= self.max_batch,
                    timeout=self.flush_every,
                )
                closed = self._closed
            self.flush()
            if closed:
                return

    def flush(self) -> None:
        """Write the pending events now (a failure goes to the log, one line, with the
        events in its JSON fields)."""
        with self._writing:
            with self._cv:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                self._write(batch)
            except StatekeeperError as exc:
                self._failures += len(batch)
                log.error(
                    "%s; %d event(s) not recorded",
                    _unwritten(exc, self.store.full_key(self.prefix)),
                    len(batch),
                    # The events ride on the JSON log line (a server's), not in its
                    # message: with read-only credentials every CLI read would print them.
                    extra={"fields": {"events": [e.to_json() for e in batch]}},
                )

    def _write(self, batch: list[Event]) -> None:
        t = batch[0].time.astimezone(UTC)
        key = f"{self.prefix}{t:%Y/%m/%d}/{t:%Y%m%dT%H%M%S%fZ}-{batch[0].id}.jsonl"
        lines = "".join(e.json_text() + "\n" for e in batch)
        self.store.put(key, lines.encode(), {})

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        self.flush()

    def backlog(self) -> int:
        return len(self._pending)

    def stage(self, event: Event) -> None:
        """Nothing: objects in batches share no transaction with the operation."""

    def grouped(self) -> AbstractContextManager[object]:
        return nullcontext()

    def failures(self) -> int:
        return self._failures

    def query(self, where: AuditFilter) -> list[Event]:
        self.flush()
        out: list[Event] = []
        for info in self.store.scan(self.prefix):
            if where.since is not None:
                day = info.key[len(self.prefix) : len(self.prefix) + 10]
                if day < f"{where.since.astimezone(UTC):%Y/%m/%d}":
                    continue
            if where.until is not None:
                day = info.key[len(self.prefix) : len(self.prefix) + 10]
                if day > f"{where.until.astimezone(UTC):%Y/%m/%d}":
                    continue
            obj = self.store.get(info.key)
            if obj is None:
                continue
            for line in obj.data.decode().splitlines():
                if line.strip():
                    event = Event.from_json(json.loads(line))
                    if where.matches(event):
                        out.append(event)
        out.sort(key=lambda e: e.time)
        return out[-where.limit :]


def open_audit_log(records: RecordSpace) -> AuditLog:
    """The audit log in ``records``: a table of the embedded database, else objects."""
    if records.database is not None:
        return SqliteAuditLog(records.database)
    return StoreAuditLog(records.objects)

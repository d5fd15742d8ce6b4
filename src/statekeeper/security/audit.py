"""The audit trail: an append-only record of every state operation and every denial.

Each event says when, who (token name or OIDC subject, with claims such as the
repository and run ID), from where, what (read, write, push, lock, unlock,
force-unlock, delete, rollback, token-create, token-revoke, authenticate), on
which state and version, Terraform's Who/Operation from the LockInfo, and the
outcome (``ok`` or the error code, ``forbidden`` and ``unauthenticated``
included).

Two logs, one interface:

- :class:`SqliteAuditLog`: an ``audit`` table in the embedded database;
  triggers refuse UPDATE and DELETE, so it is insert-only.
- :class:`StoreAuditLog`: one JSON-lines object per event under
  ``statekeeper!/audit/YYYY/MM/DD/<time>-<uuid>.jsonl`` in any ObjectStore (S3
  for stateless replicas). ``!`` cannot appear in a state name (and is one of
  S3's safe key characters), so these keys never collide with a state.

The state and lock services are audited by subclasses built in
``Services.build``, so the server and the CLI leave the same trail.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from statekeeper.errors import InvalidLockInfo, StatekeeperError
from statekeeper.security.caller import Caller
from statekeeper.security.grants import parse_grant
from statekeeper.state.locks import LockService
from statekeeper.state.service import CurrentState, StateService, WriteOutcome
from statekeeper.state.version import Provenance
from statekeeper.storage.base import ObjectStore
from statekeeper.storage.sqlite import SqliteDatabase
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.times import format_rfc3339, parse_rfc3339, utcnow

__all__ = [
    "AUDIT_PREFIX",
    "AuditEvent",
    "AuditFilter",
    "AuditLog",
    "AuditedLockService",
    "AuditedStateService",
    "LoggedFailures",
    "SqliteAuditLog",
    "StoreAuditLog",
    "open_audit_log",
]

AUDIT_PREFIX = "statekeeper!/audit/"

log = logging.getLogger("statekeeper.audit")


@dataclass(frozen=True)
class AuditEvent:
    action: str
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
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["time"] = format_rfc3339(self.time)
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> AuditEvent:
        raw = dict(raw)
        raw["time"] = parse_rfc3339(raw["time"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class AuditFilter:
    """Which events to list: all given conditions must hold."""

    state: str | None = None  # a grant-style glob: team/**, */prod.tfstate
    actor: str | None = None
    since: datetime | None = None
    action: str | None = None
    limit: int = 1000

    def matches(self, e: AuditEvent) -> bool:
        if self.actor is not None and e.actor != self.actor:
            return False
        if self.action is not None and e.action != self.action:
            return False
        if self.since is not None and e.time < self.since:
            return False
        if self.state is not None:
            if e.state is None:
                return False
            if not parse_grant(self.state + ":outputs").covers(StateName(e.state)):
                return False
        return True


class AuditLog(Protocol):
    def record(self, event: AuditEvent) -> None:
        """Append one event; durable on return (a failure raises, never passes silently)."""
        ...

    def query(self, where: AuditFilter) -> list[AuditEvent]:
        """Matching events, oldest first, at most ``where.limit`` (the newest ones)."""
        ...

    def close(self) -> None:
        """Write whatever is pending; called once, when the services close."""
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

        def create(conn: sqlite3.Connection) -> None:
            for statement in _SQLITE_SCHEMA:
                conn.execute(statement)

        db.run(create, write=True)

    def record(self, event: AuditEvent) -> None:
        row = (
            # Fixed-width UTC so that text order is time order.
            event.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            event.action,
            event.actor,
            event.state,
            event.outcome,
            json.dumps(event.to_json()),
        )
        self.db.run(
            lambda db: db.execute(
                "INSERT INTO audit (time, action, actor, state, outcome, event) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                row,
            ),
            write=True,
        )

    def close(self) -> None:
        """Nothing pending: every event is committed when recorded."""

    def query(self, where: AuditFilter) -> list[AuditEvent]:
        sql = "SELECT event FROM audit WHERE 1=1"
        args: list[str] = []
        if where.actor is not None:
            sql += " AND actor = ?"
            args.append(where.actor)
        if where.since is not None:
            sql += " AND time >= ?"
            args.append(where.since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        sql += " ORDER BY seq DESC"
        out: list[AuditEvent] = []
        with self.db.reading() as db:
            for (text,) in db.execute(sql, args):
                event = AuditEvent.from_json(json.loads(text))
                if where.matches(event):
                    out.append(event)
                    if len(out) >= where.limit:
                        break
        return out[::-1]


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
        self._pending: list[AuditEvent] = []
        self._cv = threading.Condition()
        self._writing = threading.Lock()  # one batch at a time, in order
        self._thread: threading.Thread | None = None
        self._closed = False

    def record(self, event: AuditEvent) -> None:
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
        """Write the pending events now (failures go to the log, events included)."""
        with self._writing:
            with self._cv:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                self._write(batch)
            except StatekeeperError as exc:
                log.error(
                    "the audit trail could not be written (%s); %d events: %s",
                    exc.message,
                    len(batch),
                    "\n".join(json.dumps(e.to_json(), separators=(",", ":")) for e in batch),
                )

    def _write(self, batch: list[AuditEvent]) -> None:
        t = batch[0].time.astimezone(UTC)
        key = f"{self.prefix}{t:%Y/%m/%d}/{t:%Y%m%dT%H%M%S%fZ}-{batch[0].id}.jsonl"
        lines = "".join(json.dumps(e.to_json(), separators=(",", ":")) + "\n" for e in batch)
        self.store.put(key, lines.encode(), {})

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        self.flush()

    def query(self, where: AuditFilter) -> list[AuditEvent]:
        self.flush()
        out: list[AuditEvent] = []
        for info in self.store.scan(self.prefix):
            if where.since is not None:
                day = info.key[len(self.prefix) : len(self.prefix) + 10]
                if day < f"{where.since.astimezone(UTC):%Y/%m/%d}":
                    continue
            obj = self.store.get(info.key)
            if obj is None:
                continue
            for line in obj.data.decode().splitlines():
                if line.strip():
                    event = AuditEvent.from_json(json.loads(line))
                    if where.matches(event):
                        out.append(event)
        out.sort(key=lambda e: e.time)
        return out[-where.limit :]


def _outcome(exc: BaseException) -> str:
    return exc.code if isinstance(exc, StatekeeperError) else "internal"


class _Recorder:
    """Records one event per call, with the outcome the call ended in."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    @contextmanager
    def event(
        self, action: str, caller: Caller, name: StateName | None, **facts: Any
    ) -> Iterator[dict[str, Any]]:
        facts = dict(facts)
        outcome, detail = "ok", None
        try:
            yield facts
        except BaseException as exc:
            outcome = _outcome(exc)
            detail = exc.message if isinstance(exc, StatekeeperError) else type(exc).__name__
            raise
        finally:
            if detail is not None:
                facts["detail"] = detail
            self.log.record(
                AuditEvent(
                    action=action,
                    actor=caller.actor,
                    outcome=outcome,
                    state=str(name) if name is not None else None,
                    remote_addr=caller.remote_addr,
                    claims=dict(caller.claims),
                    **facts,
                )
            )


def _lock_facts(body: bytes) -> dict[str, Any]:
    try:
        info = LockInfo.parse(body)
    except InvalidLockInfo:
        return {}
    return {"lock_id": info.id, "who": info.who or None, "operation": info.operation or None}


class AuditedStateService(StateService):
    """The state service, with an audit event for every read, write, push and delete."""

    def __init__(self, *args: Any, audit: AuditLog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.audit = audit
        self._rec = _Recorder(audit)

    def read(
        self, name: StateName, caller: Caller, version_id: str | None = None
    ) -> CurrentState | None:
        with self._rec.event("read", caller, name, version=version_id) as facts:
            current = super().read(name, caller, version_id)
            if current is not None:
                facts.update(version=current.version.version_id, serial=current.version.serial)
            else:
                facts["detail"] = "no state"
            return current

    def write(
        self,
        name: StateName,
        data: bytes,
        caller: Caller,
        *,
        lock_id: str | None = None,
        content_md5: str | None = None,
        force: bool = False,
        provenance: Provenance | None = None,
    ) -> WriteOutcome:
        with self._rec.event("push" if force else "write", caller, name, lock_id=lock_id) as facts:
            if lock_id:
                holder = self.locks.locks.read(str(name))
                if holder is not None and holder.id == lock_id:
                    facts.update(who=holder.who or None, operation=holder.operation or None)
            outcome = super().write(
                name,
                data,
                caller,
                lock_id=lock_id,
                content_md5=content_md5,
                force=force,
                provenance=provenance,
            )
            facts.update(version=outcome.version.version_id, serial=outcome.version.serial)
            if not outcome.created:
                facts["detail"] = "unchanged (the bytes were already current)"
            return outcome

    def delete(self, name: StateName, caller: Caller, *, lock_id: str | None = None) -> None:
        with self._rec.event("delete", caller, name, lock_id=lock_id):
            super().delete(name, caller, lock_id=lock_id)


class AuditedLockService(LockService):
    """The lock service, with an audit event for every lock, unlock and force-unlock."""

    def __init__(self, *args: Any, audit: AuditLog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rec = _Recorder(audit)

    def lock(self, name: StateName, body: bytes, caller: Caller) -> LockInfo:
        with self._rec.event("lock", caller, name, **_lock_facts(body)):
            return super().lock(name, body, caller)

    def unlock(self, name: StateName, body: bytes, caller: Caller) -> LockInfo:
        facts = _lock_facts(body) if body.strip() else {}
        forced = not body.strip()
        if facts:
            forced = LockInfo.parse(body).is_zero_valued
        if forced:  # force_unlock records the event
            return super().unlock(name, body, caller)
        with self._rec.event("unlock", caller, name, **facts):
            return super().unlock(name, body, caller)

    def force_unlock(self, name: StateName, caller: Caller, lock_id: str | None) -> LockInfo:
        with self._rec.event("force-unlock", caller, name, lock_id=lock_id) as facts:
            removed = super().force_unlock(name, caller, lock_id)
            facts.update(
                lock_id=removed.id, who=removed.who or None, operation=removed.operation or None
            )
            return removed


class LoggedFailures:
    """An audit log whose failed writes go to the server log, event included.

    The operation an event records has already happened when the event is
    written (a lock taken, a state stored), so failing the request would not
    undo it; it would only make Terraform believe it failed. A store that
    refuses the audit object (a read-only IAM policy, an outage) is reported
    loudly instead, and the event is kept in the log.
    """

    def __init__(self, inner: AuditLog) -> None:
        self.inner = inner

    def record(self, event: AuditEvent) -> None:
        try:
            self.inner.record(event)
        except StatekeeperError as exc:
            log.error(
                "the audit trail could not be written (%s); the event: %s",
                exc.message,
                json.dumps(event.to_json(), separators=(",", ":")),
            )

    def query(self, where: AuditFilter) -> list[AuditEvent]:
        return self.inner.query(where)

    def close(self) -> None:
        self.inner.close()


def open_audit_log(store: ObjectStore) -> AuditLog:
    """The audit log beside ``store``: a table of the embedded database, else objects."""
    from statekeeper.storage.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        return LoggedFailures(SqliteAuditLog(store.db))
    return LoggedFailures(StoreAuditLog(store))

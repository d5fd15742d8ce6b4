"""LOCK and UNLOCK on the embedded database: the lock row and its audit record in one
transaction, synced once before the answer; the webhook outbox rows are made of the
records that committed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.storage.test_sqlite_sync import FsyncSpy

from statekeeper.app import Services
from statekeeper.errors import LockConflict, StorageError
from statekeeper.events import Event
from statekeeper.hooks.model import Subscription
from statekeeper.security.audit import AuditFilter
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import output_before_sigkill

NAME, CALLER = StateName("team/app.tfstate"), Caller("ci", "127.0.0.1")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = Services.build(
        load_settings({"data_dir": tmp_path}, env={"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"})
    )
    assert built.hooks is not None
    built.hooks.add(Subscription("ci", "http://127.0.0.1:9/hook", "s3cret", ("team/**",)))
    yield built
    built.close()


def _db(services: Services) -> SqliteDatabase:
    db = services.store.records.database
    assert db is not None
    return db


def _traced(services: Services, operation: Callable[[], object]) -> list[str]:
    """The SQL statements ``operation`` ran on this thread's connection."""
    db = _db(services)
    statements: list[str] = []
    db.run(lambda conn: conn.set_trace_callback(statements.append))
    try:
        operation()
    finally:
        db.run(lambda conn: conn.set_trace_callback(None))
    return statements


def _events(services: Services) -> list[tuple[str, str]]:
    return [(e.action, e.outcome) for e in services.audit.query(AuditFilter(state=str(NAME)))]


def _outbox(services: Services) -> list[str]:
    """The outbox rows, once a sender has made those of the audit records."""
    hooks = services.hooks
    assert hooks is not None
    hooks.outbox.claim("test", lease=60, wanted=hooks.wanting)
    rows = hooks.outbox.db.run(  # type: ignore[attr-defined]
        lambda conn: conn.execute("SELECT kind FROM hook_outbox ORDER BY id").fetchall()
    )
    return [str(kind) for (kind,) in rows]


def test_lock_and_unlock_each_commit_once_with_their_audit_and_outbox_rows_and_sync_once(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write transaction (was two: the lock row, then its audit record) and the
    request's one fsync of the log, for each of LOCK and UNLOCK."""
    lock = LockInfo.new("OperationTypeApply", "ci@runner")
    spy = FsyncSpy(monkeypatch, Path(f"{_db(services).path}-wal"))
    locked = _traced(services, lambda: services.locks.lock(NAME, lock.body, CALLER))
    assert locked.count("BEGIN IMMEDIATE") == 1
    assert spy.calls == 1
    unlocked = _traced(services, lambda: services.locks.unlock(NAME, lock.body, CALLER))
    assert unlocked.count("BEGIN IMMEDIATE") == 1
    assert spy.calls == 2
    assert _events(services) == [("lock", "ok"), ("unlock", "ok")]
    assert _outbox(services) == ["lock.acquired", "lock.released"]


def _failing_stager(services: Services, action: str) -> None:
    """A failure inside the lock's transaction, after its audit row was written there."""

    def stage(event: Event) -> None:
        if event.action == action:
            raise StorageError("the disk said no")

    services.events.stage(stage)


def test_a_failure_inside_the_locks_commit_undoes_lock_and_record_and_records_the_failure(
    services: Services,
) -> None:
    _failing_stager(services, "lock")
    lock = LockInfo.new("OperationTypeApply", "ci@runner")
    with pytest.raises(StorageError, match="the disk said no"):
        services.locks.lock(NAME, lock.body, CALLER)
    assert services.locks.read(NAME) is None
    # Only the failure: the staged "ok" row went with the lock it stood for.
    assert _events(services) == [("lock", "storage_unavailable")]
    assert _outbox(services) == []


def test_a_failure_inside_the_releases_commit_keeps_the_lock(services: Services) -> None:
    lock = LockInfo.new("OperationTypeApply", "ci@runner")
    services.locks.lock(NAME, lock.body, CALLER)
    _failing_stager(services, "unlock")
    with pytest.raises(StorageError, match="the disk said no"):
        services.locks.unlock(NAME, lock.body, CALLER)
    held = services.locks.read(NAME)
    assert held is not None and held.id == lock.id
    assert _events(services) == [("lock", "ok"), ("unlock", "storage_unavailable")]
    assert _outbox(services) == ["lock.acquired"]


def test_an_audit_record_refused_in_the_locks_commit_never_fails_the_lock(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """Tried again after the commit and reported with the event, as for any subscriber."""
    _db(services).run(
        lambda conn: conn.execute(
            "CREATE TRIGGER no_lock_records BEFORE INSERT ON audit WHEN NEW.action = 'lock' "
            "BEGIN SELECT RAISE(ABORT, 'audit full'); END"
        ),
        write=True,
    )
    lock = LockInfo.new("OperationTypeApply", "ci@runner")
    services.locks.lock(NAME, lock.body, CALLER)
    held = services.locks.read(NAME)
    assert held is not None and held.id == lock.id
    assert "audit full" in caplog.text and lock.id in caplog.text
    assert services.audit.failures() == 1
    services.locks.unlock(NAME, lock.body, CALLER)
    assert _events(services) == [("unlock", "ok")]


def test_a_lock_table_in_another_file_records_after_its_commit(tmp_path: Path) -> None:
    """The audit trail cannot join a transaction of another database: the row is
    written after the lock's commit, as before."""
    settings = load_settings(
        {"data_dir": tmp_path, "locks": f"sqlite:///{tmp_path / 'locks.db'}"}, env={}
    )
    services = Services.build(settings)
    try:
        lock = LockInfo.new("OperationTypeApply", "ci@runner")
        services.locks.lock(NAME, lock.body, CALLER)
        services.locks.unlock(NAME, lock.body, CALLER)
        assert _events(services) == [("lock", "ok"), ("unlock", "ok")]
    finally:
        services.close()


def test_an_acknowledged_lock_and_its_audit_record_survive_sigkill(tmp_path: Path) -> None:
    output = output_before_sigkill(
        f"""
        import sys
        from statekeeper.app import Services
        from statekeeper.settings import load_settings
        from statekeeper.security.caller import Caller
        from statekeeper.terraform.lockinfo import LockInfo
        from statekeeper.terraform.names import StateName
        services = Services.build(load_settings({{"data_dir": {str(tmp_path)!r}}}, env={{}}))
        lock = LockInfo.new("OperationTypeApply", "ci@runner")
        granted = services.locks.lock(StateName("a"), lock.body, Caller("ci", None))
        sys.stdout.write(granted.id + "\\n")
        """
    )
    lock_id = output.strip()
    assert lock_id
    services = Services.build(load_settings({"data_dir": tmp_path}, env={}))
    try:
        held = services.locks.read(StateName("a"))
        assert held is not None and held.id == lock_id
        events = services.audit.query(AuditFilter(state="a", action="lock"))
        assert [(e.outcome, e.lock_id) for e in events] == [("ok", lock_id)]
    finally:
        services.close()


def test_a_lock_on_a_free_state_reads_no_lock_row_and_a_taken_one_names_its_holder(
    services: Services,
) -> None:
    """The lock row is inserted by one conditional statement; the holder is read only
    to refuse a second LOCK (with the holder's LockInfo, as before)."""
    first = LockInfo.new("OperationTypeApply", "ci@runner")
    locked = _traced(services, lambda: services.locks.lock(NAME, first.body, CALLER))
    assert not [s for s in locked if s.startswith("SELECT") and "FROM locks" in s]
    second = LockInfo.new("OperationTypePlan", "other@runner")
    with pytest.raises(LockConflict) as refused:
        services.locks.lock(NAME, second.body, Caller("other", "127.0.0.1"))
    assert refused.value.holder.id == first.id
    assert services.locks.locks.read(str(NAME)).id == first.id  # type: ignore[union-attr]
    assert _events(services) == [("lock", "ok"), ("lock", "locked")]

"""A state write on the embedded database: the version, its digest and its audit
record in one transaction, synced once at its commit."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.storage.test_sqlite_sync import FsyncSpy

from statekeeper.app import Services
from statekeeper.errors import StorageError
from statekeeper.events import Action
from statekeeper.security.audit import AuditFilter
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import output_before_sigkill

NAME, CALLER = StateName("team/app.tfstate"), Caller("ci", "127.0.0.1")


def _state(serial: int) -> bytes:
    return json.dumps({"version": 4, "serial": serial, "lineage": "l-1", "outputs": {}}).encode()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = Services.build(load_settings({"data_dir": tmp_path}, env={}))
    yield built
    built.close()


def _db(services: Services) -> SqliteDatabase:
    db = services.store.records.database
    assert db is not None
    return db


def _trigger(services: Services, sql: str) -> None:
    """A fault made by SQLite itself: a trigger that refuses a row."""
    _db(services).run(lambda conn: conn.execute(sql), write=True)


def _events(services: Services) -> list[tuple[str, str, str | None]]:
    return [
        (e.action, e.outcome, e.version)
        for e in services.audit.query(AuditFilter(state=str(NAME)))
        if e.action == Action.WRITE
    ]


def test_a_write_commits_once_with_its_digest_and_audit_record_and_syncs_once(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version's own commit (synchronous=FULL, SQLite's fsync) holds the digest and
    the audit record too: the request is left nothing to sync at its end (it was one
    fsync of its own, after two more commits)."""
    db = _db(services)
    lock = LockInfo.new("OperationTypeApply", "ci@runner")
    services.locks.lock(NAME, lock.body, CALLER)
    spy = FsyncSpy(monkeypatch, Path(f"{db.path}-wal"))
    statements: list[str] = []
    db.run(lambda conn: conn.set_trace_callback(statements.append))
    try:
        outcome = services.states.write(NAME, _state(1), CALLER, lock_id=lock.id)
    finally:
        db.run(lambda conn: conn.set_trace_callback(None))
    assert spy.calls == 0
    assert statements.count("BEGIN IMMEDIATE") == 1  # one write transaction
    # The digest and the audit record join it as one statement each: no savepoints.
    assert not [s for s in statements if s.startswith(("SAVEPOINT", "RELEASE"))]
    assert _events(services) == [(Action.WRITE, "ok", outcome.version.version_id)]
    assert services.lock_table.get_digest(str(NAME)) == outcome.version.md5


def test_a_failure_inside_the_commit_undoes_the_version_and_records_the_failure(
    services: Services,
) -> None:
    services.states.write(NAME, _state(1), CALLER)
    _trigger(
        services,
        "CREATE TRIGGER no_digest BEFORE UPDATE ON digests "
        "BEGIN SELECT RAISE(ABORT, 'the disk said no'); END",
    )
    with pytest.raises(StorageError, match="the disk said no"):
        services.states.write(NAME, _state(2), CALLER)
    current = services.states.read(NAME, CALLER)
    assert current is not None and current.version.serial == 1
    first, failed = _events(services)
    assert first[1] == "ok"
    # Only the failure: the staged "ok" record went with the version it stood for.
    assert failed[1] == "storage_unavailable"
    assert len(services.store.versions(str(NAME))) == 1


def test_an_audit_record_refused_in_the_commit_never_undoes_the_write(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """The record is tried again after the commit, and its failure reported with the
    event, as for any subscriber: the version stands."""
    _trigger(
        services,
        "CREATE TRIGGER no_write_records BEFORE INSERT ON audit WHEN NEW.action = 'write' "
        "BEGIN SELECT RAISE(ABORT, 'audit full'); END",
    )
    outcome = services.states.write(NAME, _state(1), CALLER)
    current = services.states.read(NAME, CALLER)
    assert current is not None and current.version.version_id == outcome.version.version_id
    assert _events(services) == []
    assert "audit full" in caplog.text and outcome.version.version_id in caplog.text
    assert services.audit.failures() == 1


def test_a_joined_run_commits_with_the_enclosing_transaction_or_not_at_all(
    tmp_path: Path,
) -> None:
    db = SqliteDatabase(tmp_path / "s.db")

    def put(key: str) -> None:
        db.run(lambda c: c.execute("INSERT INTO digests VALUES (?, 'd')", (key,)), write=True)

    def outer(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO digests VALUES ('outer', 'd')")
        put("joined")
        with pytest.raises(StorageError):
            put("joined")  # a duplicate key: undone alone, the transaction goes on
        raise RuntimeError("the enclosing transaction fails")

    with pytest.raises(RuntimeError):
        db.run(outer, write=True)
    keys = db.run(lambda c: c.execute("SELECT key FROM digests").fetchall())
    assert keys == []

    def kept(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO digests VALUES ('outer', 'd')")
        put("joined")

    db.run(kept, write=True)
    keys = db.run(lambda c: c.execute("SELECT key FROM digests ORDER BY key").fetchall())
    assert keys == [("joined",), ("outer",)]


def test_a_joined_write_of_one_statement_is_undone_alone_without_a_savepoint(
    tmp_path: Path,
) -> None:
    db = SqliteDatabase(tmp_path / "s.db")

    def put(key: str) -> None:
        db.run(
            lambda c: c.execute("INSERT INTO digests VALUES (?, 'd')", (key,)),
            write=True,
            atomic=False,
        )

    def outer(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO digests VALUES ('outer', 'd')")
        put("joined")
        with pytest.raises(StorageError):
            put("joined")  # a duplicate key: SQLite undoes the statement, the rest stays

    statements: list[str] = []
    db.run(lambda c: c.set_trace_callback(statements.append))
    db.run(outer, write=True)
    db.run(lambda c: c.set_trace_callback(None))
    assert not [s for s in statements if s.startswith(("SAVEPOINT", "RELEASE"))]
    keys = db.run(lambda c: c.execute("SELECT key FROM digests ORDER BY key").fetchall())
    assert keys == [("joined",), ("outer",)]


def test_a_write_cannot_join_a_read_transaction(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "s.db")

    def read(conn: sqlite3.Connection) -> None:
        db.run(lambda c: c.execute("INSERT INTO digests VALUES ('k', 'd')"), write=True)

    with pytest.raises(AssertionError, match="read transaction"):
        db.run(read)


def test_an_acknowledged_write_and_its_audit_record_survive_sigkill(tmp_path: Path) -> None:
    output = output_before_sigkill(
        f"""
        import sys
        from statekeeper.app import Services
        from statekeeper.settings import load_settings
        from statekeeper.security.caller import Caller
        from statekeeper.terraform.names import StateName
        services = Services.build(load_settings({{"data_dir": {str(tmp_path)!r}}}, env={{}}))
        data = b'{{"version": 4, "serial": 7, "lineage": "l-1", "outputs": {{}}}}'
        outcome = services.states.write(StateName("a"), data, Caller("ci", None))
        sys.stdout.write(outcome.version.version_id + "\\n")
        """
    )
    version = output.strip()
    assert version
    services = Services.build(load_settings({"data_dir": tmp_path}, env={}))
    try:
        current = services.states.read(StateName("a"), Caller("ci", None))
        assert current is not None
        assert (current.version.version_id, current.version.serial) == (version, 7)
        events = services.audit.query(AuditFilter(state="a", action="write"))
        assert [(e.outcome, e.version, e.serial) for e in events] == [("ok", version, 7)]
    finally:
        services.close()

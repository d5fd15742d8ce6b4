"""One fsync per request on the embedded database: what is deferred, and when it is synced."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from statekeeper.app import Services
from statekeeper.errors import StorageError
from statekeeper.events import Action
from statekeeper.security.audit import AuditFilter
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.storage.base import ObjectInfo
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.storage.sqlite.locks import SqliteLocks
from statekeeper.storage.sqlite.store import SqliteStore
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import output_before_sigkill

FULL, NORMAL = 2, 1


def _insert_and_report(db: SqliteDatabase, *, durable: bool = False) -> int:
    """Insert a row; the synchronous mode its transaction commits under."""

    def tx(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO digests (key, digest) VALUES (hex(randomblob(8)), 'd')")
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    return db.run(tx, write=True, durable=durable)


def _upload(store: SqliteStore, key: str, data: bytes, over: ObjectInfo | None = None) -> None:
    """A version written as the server writes a request body: through an upload."""
    with store.upload(key) as upload:
        upload.write(data)
        if over is None:
            upload.put({})
        else:
            upload.replace({}, over)


class FsyncSpy:
    """Counts the syncs of ``wal`` by this process (``fdatasync``, as SQLite syncs it;
    ``fsync`` counted apart)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, wal: Path) -> None:
        self.wal = wal
        self.calls = 0
        self.full = 0
        real_fdatasync, real_fsync = os.fdatasync, os.fsync

        def fdatasync(fd: int) -> None:
            if os.path.samefile(f"/proc/self/fd/{fd}", wal):
                self.calls += 1
            real_fdatasync(fd)

        def fsync(fd: int) -> None:
            if os.path.samefile(f"/proc/self/fd/{fd}", wal):
                self.full += 1
            real_fsync(fd)

        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "fsync", fsync)


def test_outside_a_group_every_write_commits_synced(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "s.db")
    assert _insert_and_report(db) == FULL


def test_a_group_defers_its_commits_and_syncs_the_log_once_at_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = SqliteDatabase(tmp_path / "s.db")
    spy = FsyncSpy(monkeypatch, tmp_path / "s.db-wal")
    with db.syncing_once():
        assert _insert_and_report(db) == NORMAL
        with db.syncing_once():  # nested: the outer block syncs
            assert _insert_and_report(db) == NORMAL
        assert spy.calls == 0
    assert spy.calls == 1
    # After the block, writes are synced at their commit again.
    assert _insert_and_report(db) == FULL


def test_the_log_is_synced_as_sqlite_syncs_it_at_a_full_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fdatasync, SQLite's own call for the log (its bytes and size, not its times)."""
    db = SqliteDatabase(tmp_path / "s.db")
    spy = FsyncSpy(monkeypatch, tmp_path / "s.db-wal")
    with db.syncing_once():
        _insert_and_report(db)
    assert (spy.calls, spy.full) == (1, 0)


def test_a_durable_write_in_a_group_is_synced_at_its_own_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = SqliteDatabase(tmp_path / "s.db")
    spy = FsyncSpy(monkeypatch, tmp_path / "s.db-wal")
    with db.syncing_once():
        assert _insert_and_report(db) == NORMAL
        # A state version: synced before anyone can read it, with what came before it.
        assert _insert_and_report(db, durable=True) == FULL
    assert spy.calls == 0  # the durable commit synced the whole log: nothing left to sync


def test_a_failed_group_still_syncs_what_it_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = SqliteDatabase(tmp_path / "s.db")
    spy = FsyncSpy(monkeypatch, tmp_path / "s.db-wal")

    def failing_operation() -> None:
        with db.syncing_once():
            _insert_and_report(db)
            raise RuntimeError("the operation failed after a commit")

    with pytest.raises(RuntimeError):
        failing_operation()
    assert spy.calls == 1


def test_state_versions_commit_synced_inside_a_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write of a version syncs at its commit (SQLite's own fsync), so the
    group is left nothing to sync: a deferred one would leave it one."""
    db = SqliteDatabase(tmp_path / "s.db")
    store = SqliteStore(db)
    store.put("warm", b"{}", {})  # the log exists before the spy looks for it
    spy = FsyncSpy(monkeypatch, tmp_path / "s.db-wal")
    for write in (
        lambda: store.put("a", b"{}", {}),
        lambda: store.replace("a", b"{ }", {}, store.head("a")),
        lambda: store.put_if_absent("b", b"{}", {}),
        lambda: store.delete("a"),
        lambda: _upload(store, "c", b"{}"),
        lambda: _upload(store, "c", b"{  }", over=store.head("c")),
        lambda: _upload(store, "d", b" " * (3 << 20) + b"{}"),  # kept in pieces
        # The history edits: which version is current, or whether a version exists.
        lambda: store.delete("d"),
        lambda: store.undelete("d"),
        lambda: store.delete_version("c", store.versions("c")[-1].version_id),
        lambda: store.delete("c"),
        lambda: store.purge("c"),
    ):
        with db.syncing_once():
            write()
        assert spy.calls == 0


def test_one_lock_request_costs_one_sync_with_its_audit_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = Services.build(load_settings({"data_dir": tmp_path}, env={}))
    try:
        db = services.store.records.database
        assert db is not None
        spy = FsyncSpy(monkeypatch, Path(f"{db.path}-wal"))
        name, caller = StateName("team/app.tfstate"), Caller("ci", "127.0.0.1")
        lock = LockInfo.new("OperationTypeApply", "ci@runner")
        services.locks.lock(name, lock.body, caller)
        assert spy.calls == 1
        services.locks.unlock(name, lock.body, caller)
        assert spy.calls == 2
        actions = [e.action for e in services.audit.query(AuditFilter(state=str(name)))]
        assert actions == [Action.LOCK, Action.UNLOCK]
        assert isinstance(services.lock_table, SqliteLocks)
    finally:
        services.close()


def test_an_acknowledged_lock_and_its_audit_record_survive_sigkill(tmp_path: Path) -> None:
    """The deferred commits are on disk once the call returns: a child process takes a
    lock, says so, and is killed at once; the lock and its event are there after."""
    output = output_before_sigkill(
        f"""
        import sys
        from statekeeper.app import Services
        from statekeeper.settings import load_settings
        from statekeeper.security.caller import Caller
        from statekeeper.terraform.lockinfo import LockInfo
        from statekeeper.terraform.names import StateName
        services = Services.build(load_settings({{"data_dir": {str(tmp_path)!r}}}, env={{}}))
        lock = LockInfo.new("OperationTypeApply", "ci@runner", lock_id="kept")
        services.locks.lock(StateName("a"), lock.body, Caller("ci", None))
        sys.stdout.write("locked\\n")
        """
    )
    assert output == "locked\n"
    services = Services.build(load_settings({"data_dir": tmp_path}, env={}))
    try:
        held = services.locks.read(StateName("a"))
        assert held is not None and held.id == "kept"
        events = services.audit.query(AuditFilter(state="a"))
        assert [(e.action, e.lock_id) for e in events] == [(Action.LOCK, "kept")]
    finally:
        services.close()


def test_a_relaxed_thread_commits_unsynced_and_others_stay_synced(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "s.db")
    modes: list[int] = []

    def sender() -> None:
        db.relax()
        modes.append(_insert_and_report(db))
        with db.syncing_once():
            modes.append(_insert_and_report(db))

    thread = threading.Thread(target=sender)
    thread.start()
    thread.join()
    assert modes == [NORMAL, NORMAL]
    assert _insert_and_report(db) == FULL


def _commit_in_group(db: SqliteDatabase, committed: threading.Barrier, go: threading.Event) -> None:
    """One request: a deferred commit, then (once told to) the end of its group."""
    with db.syncing_once():
        assert _insert_and_report(db) == NORMAL
        committed.wait(10)
        assert go.wait(10)


def test_concurrent_groups_share_one_fsync_of_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = SqliteDatabase(tmp_path / "s.db")
    _insert_and_report(db)  # the log exists before the spy looks for it
    spy = FsyncSpy(monkeypatch, tmp_path / "s.db-wal")
    committed, go = threading.Barrier(5), threading.Event()
    threads = [
        threading.Thread(target=_commit_in_group, args=(db, committed, go)) for _ in range(4)
    ]
    for t in threads:
        t.start()
    committed.wait(10)  # all four committed, none synced yet
    go.set()
    for t in threads:
        t.join(10)
    # The first to end its group synced the log for all four commits.
    assert spy.calls == 1
    with db.syncing_once():  # a later commit is not covered by that fsync
        _insert_and_report(db)
    assert spy.calls == 2


def test_a_group_covered_by_an_fsync_in_progress_waits_for_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request never returns before the fsync covering its commits has ended."""
    db = SqliteDatabase(tmp_path / "s.db")
    _insert_and_report(db)
    wal = tmp_path / "s.db-wal"
    in_fsync, release = threading.Event(), threading.Event()
    real = os.fdatasync
    calls: list[int] = []

    def slow_fsync(fd: int) -> None:
        if os.path.samefile(f"/proc/self/fd/{fd}", wal):
            calls.append(fd)
            in_fsync.set()
            assert release.wait(10)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow_fsync)
    committed, go = threading.Barrier(3), threading.Event()
    leader = threading.Thread(target=_commit_in_group, args=(db, committed, go))
    follower_done = threading.Event()

    def follower() -> None:
        with db.syncing_once():
            _insert_and_report(db)
            committed.wait(10)
            assert in_fsync.wait(10)  # ends its group while the leader's fsync runs
        follower_done.set()

    others = threading.Thread(target=follower)
    leader.start()
    others.start()
    committed.wait(10)
    go.set()  # the leader ends its group and starts the fsync, which blocks
    assert in_fsync.wait(10)
    assert not follower_done.wait(0.3)  # covered, and waiting: not answered yet
    release.set()
    leader.join(10)
    others.join(10)
    assert follower_done.is_set()
    assert len(calls) == 1  # the follower's commit came before the fsync began


def test_when_the_leaders_fsync_fails_a_waiting_group_syncs_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = SqliteDatabase(tmp_path / "s.db")
    _insert_and_report(db)
    wal = tmp_path / "s.db-wal"
    real = os.fdatasync
    in_fsync, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def failing_once(fd: int) -> None:
        if os.path.samefile(f"/proc/self/fd/{fd}", wal):
            calls.append(threading.current_thread().name)
            if len(calls) == 1:
                in_fsync.set()
                assert release.wait(10)
                raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", failing_once)
    errors: dict[str, StorageError | AssertionError] = {}
    committed, leader_ends = threading.Barrier(2), threading.Event()

    def request(name: str) -> None:
        try:
            with db.syncing_once():
                _insert_and_report(db)
                committed.wait(10)  # both committed before any fsync: one covers both
                if name == "follower":
                    assert in_fsync.wait(10)  # ends its group during the leader's fsync
                else:
                    assert leader_ends.wait(10)
        except (StorageError, AssertionError) as exc:  # looked at below
            errors[name] = exc

    leader = threading.Thread(target=request, args=("leader",), name="leader")
    follower = threading.Thread(target=request, args=("follower",), name="follower")
    leader.start()
    follower.start()
    leader_ends.set()
    assert in_fsync.wait(10)
    time.sleep(0.2)  # the follower is waiting for the leader's fsync now
    release.set()
    leader.join(10)
    follower.join(10)
    assert isinstance(errors.pop("leader"), StorageError)
    assert errors == {}  # the follower's own fsync succeeded
    assert calls == ["leader", "follower"]

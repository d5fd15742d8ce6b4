"""Reads of one statement on the embedded store: no transaction of their own, no snapshot
left open, and inside a write's transaction no savepoint."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from statekeeper.storage.base import ObjectInfo, ObjectStore
from statekeeper.storage.memory import MemoryStore
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.storage.sqlite.locks import SqliteLocks
from statekeeper.storage.sqlite.store import SqliteStore
from statekeeper.terraform.lockinfo import LockInfo

KEY = "team/app.tfstate"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "states.db")
    yield database
    database.close()


def _put(store: ObjectStore, data: bytes) -> ObjectInfo:
    with store.upload(KEY) as upload:
        upload.write(data)
        return upload.put({})


def _traced(db: SqliteDatabase, call: Callable[[], object]) -> list[str]:
    """The statements ``call`` makes on this thread's connection."""
    made: list[str] = []
    conn = db.read_one(lambda c: c)
    conn.set_trace_callback(made.append)
    try:
        call()
    finally:
        conn.set_trace_callback(None)
    return made


def test_reads_of_one_statement_open_no_transaction(db: SqliteDatabase) -> None:
    store, locks = SqliteStore(db), SqliteLocks(db)
    first = _put(store, b'{"serial": 1}')
    second = _put(store, b'{"serial": 2}')
    locks.acquire(KEY, LockInfo.new("OperationTypeApply", "ci"))
    reads: dict[str, Callable[[], object]] = {
        "head": lambda: store.head(KEY),
        "get": lambda: store.get(KEY),
        "open": lambda: b"".join(store.open(KEY).chunks),  # type: ignore[union-attr]
        "version_before": lambda: store.version_before(KEY, second.version_id),
        "count_newer": lambda: store.count_newer(KEY, first.version_id, 5),
        "lock": lambda: locks.read(KEY),
    }
    for name, read in reads.items():
        made = _traced(db, read)
        assert len(made) == 1, (name, made)
        assert made[0].startswith("SELECT"), (name, made)
    assert store.get(KEY).data == b'{"serial": 2}'  # type: ignore[union-attr]
    assert store.version_before(KEY, second.version_id) == first.version_id


def test_a_version_kept_in_pieces_is_read_whole_in_one_transaction(db: SqliteDatabase) -> None:
    store = SqliteStore(db, compression=None)
    data = os.urandom(3 * 1024 * 1024)  # over a piece: its bytes are not in its row
    _put(store, data)
    got: list[bytes] = []
    made = _traced(db, lambda: got.append(store.get(KEY).data))  # type: ignore[union-attr]
    assert got == [data]
    # Its row read alone first, then again with its pieces in one transaction.
    assert made[1] == "BEGIN" and made[-1] == "COMMIT"
    assert b"".join(store.open(KEY).chunks) == data  # type: ignore[union-attr]


def test_reads_of_one_statement_leave_no_snapshot_open(db: SqliteDatabase) -> None:
    store, locks = SqliteStore(db), SqliteLocks(db)
    first = _put(store, b'{"serial": 1}')
    _put(store, b'{"serial": 2}')
    other = db.connect()
    try:
        for read in (
            lambda: store.head(KEY),
            lambda: store.get(KEY),
            lambda: store.count_newer(KEY, first.version_id, 5),
            lambda: locks.read(KEY),
        ):
            read()
            other.execute("INSERT INTO digests (key, digest) VALUES (hex(randomblob(8)), 'd')")
            # A reader still in the log would keep a TRUNCATE checkpoint from emptying it.
            busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0
            assert os.path.getsize(f"{db.path}-wal") == 0
    finally:
        other.close()


def test_a_read_inside_a_write_sees_it_and_makes_no_savepoint(db: SqliteDatabase) -> None:
    store, locks = SqliteStore(db), SqliteLocks(db)
    lock = LockInfo.new("OperationTypeApply", "ci")

    def write(conn: sqlite3.Connection) -> LockInfo | None:
        conn.execute(
            "INSERT INTO locks (key, lock_id, body, acquired) VALUES (?, ?, ?, ?)",
            (KEY, lock.id, lock.body, "2026-12-06T00:00:00Z"),
        )
        return locks.read(KEY)  # joins the write's transaction

    made: list[str] = []

    def traced() -> None:
        made.append(str(db.run(write, write=True)))

    statements = _traced(db, traced)
    assert lock.id in made[0]
    assert not [s for s in statements if "SAVEPOINT" in s or "RELEASE" in s]
    assert store.head(KEY) is None


def test_count_newer_counts_the_versions_after_one_up_to_a_bound(db: SqliteDatabase) -> None:
    sqlite, memory = SqliteStore(db), MemoryStore()
    for store in (sqlite, memory):
        ids = [_put(store, b'{"serial": %d}' % n).version_id for n in range(4)]
        assert store.count_newer(KEY, ids[1], 10) == 2
        assert store.count_newer(KEY, ids[3], 10) == 0
        assert store.count_newer(KEY, None, 10) == 4
        assert store.count_newer(KEY, None, 2) == 2
        assert store.count_newer(KEY, ids[0], 1) == 1
    # A pruned start: the versions written after it are still told apart.
    sqlite_ids = [v.version_id for v in sqlite.versions(KEY)][::-1]
    sqlite.delete_version(KEY, sqlite_ids[1])
    assert sqlite.count_newer(KEY, sqlite_ids[1], 10) == 2

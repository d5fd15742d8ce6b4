"""The embedded database's log is checkpointed by a thread of its own, never by a commit."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from statekeeper.storage.sqlite.checkpoints import BACKSTOP, Checkpointer
from statekeeper.storage.sqlite.database import SqliteDatabase

ROW = 100 * 1024  # a lock cycle's state


def _write(db: SqliteDatabase, n: int) -> None:
    def tx(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO objects (key, data, size, metadata, created) VALUES (?, ?, ?, '{}', '')",
            (f"s/{n}", os.urandom(ROW), ROW),
        )

    db.run(tx, write=True, durable=True)


def test_commits_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = SqliteDatabase(path)
    # A checkpointer that waits an hour: whatever reaches the database file meanwhile
    # was copied there by a commit.
    db.checkpoints = Checkpointer(db.connect, db._writer, every=3600)
    empty = path.stat().st_size
    for n in range(100):  # 10 MB: SQLite's default copies at every 4 MB (1000 pages)
        _write(db, n)
    assert path.stat().st_size == empty
    assert (tmp_path / "s.db-wal").stat().st_size > 100 * ROW
    # A graceful stop: the last connection's close copies the log in and removes it.
    db.close()
    assert not (tmp_path / "s.db-wal").exists()
    assert path.stat().st_size > 100 * ROW
    again = SqliteDatabase(path)
    assert again.run(lambda c: c.execute("SELECT count(*) FROM objects").fetchone()[0]) == 100
    again.close()


def test_the_log_stays_bounded_under_sustained_writes_and_reads(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = SqliteDatabase(path)
    wal = tmp_path / "s.db-wal"
    done = threading.Event()

    def reader() -> None:  # a reader holds a snapshot of the log while it reads
        while not done.wait(0.001):
            db.run(lambda c: c.execute("SELECT count(*), sum(size) FROM objects").fetchone())

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in readers:
        thread.start()
    largest = 0
    try:
        for n in range(800):  # 80 MB written, 20 times the bound below
            _write(db, n)
            largest = max(largest, wal.stat().st_size)
    finally:
        done.set()
        for thread in readers:
            thread.join()
    assert db.checkpoints.count >= 1
    # The backstop's pages, and what a reader's snapshot kept from being reused.
    assert largest < 1.5 * BACKSTOP * 4096, f"the log grew to {largest} bytes"
    db.close()

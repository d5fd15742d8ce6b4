"""The embedded database's write-ahead log stays small, and a close folds it in."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from statekeeper.storage.sqlite.database import SqliteDatabase

ROW = 100 * 1024  # a lock cycle's state
MIB = 1024 * 1024


def _write(db: SqliteDatabase, n: int) -> None:
    def tx(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO objects (key, data, size, metadata, created) VALUES (?, ?, ?, '{}', '')",
            (f"s/{n}", os.urandom(ROW), ROW),
        )

    db.run(tx, write=True, durable=True)


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
        for n in range(600):  # 60 MB written
            _write(db, n)
            largest = max(largest, wal.stat().st_size)
    finally:
        done.set()
        for thread in readers:
            thread.join()
    # Checkpoints copy the log into the database every 1000 pages (4 MiB), and it
    # starts again from its beginning; a reader's snapshot may hold it a little longer.
    assert largest < 16 * MIB, f"the log grew to {largest} bytes"
    # A graceful stop: the last connection's close copies the log in and removes it.
    db.close()
    assert not wal.exists()
    assert path.stat().st_size > 600 * ROW

"""The durable floor: the least a lock cycle whose every answer waits for the disk costs.

statekeeper answers a request only once its event is on disk (docs/security.md,
"An event is on disk before its request is answered"), and a new version only once
it is synced. At one client the four requests of a cycle follow each other, so a
cycle makes four syncs one after the other, whatever the server does besides. This
is that cycle with nothing else: Python's ``sqlite3`` in this process, a WAL
database with ``synchronous = FULL`` in the bench's data directory, one small
transaction per request (the lock row or the version, and an audit row), and the
write's MD5 and SHA-256 of the state (Content-MD5 and the version's digest). No
HTTP, no check of the document, no service layer.

A request over HTTP cannot start before the previous one's answer, and that answer
waits for its sync, so at one client a cycle takes at least the HTTP floor's cycle
plus this one: ``floor * durable / (floor + durable)`` cycles a second is the
most any server keeping that promise can do here, and its ratio to the floor is
the ceiling of the 1-client figure.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

from statedocs import make_state, set_serial

__all__ = ["durable_cycles"]

_SCHEMA = (
    "CREATE TABLE locks (name TEXT PRIMARY KEY, info BLOB NOT NULL)",
    "CREATE TABLE versions (id INTEGER PRIMARY KEY, name TEXT NOT NULL, serial INTEGER,"
    " body BLOB NOT NULL, md5 TEXT NOT NULL, sha256 TEXT NOT NULL)",
    "CREATE INDEX versions_by_name ON versions (name, id)",
    "CREATE TABLE audit (id INTEGER PRIMARY KEY, at REAL NOT NULL, action TEXT NOT NULL)",
)


def _synced(db: sqlite3.Connection, *statements: tuple[str, tuple[object, ...]]) -> None:
    """One transaction, committed with its sync (``synchronous = FULL``)."""
    db.execute("BEGIN IMMEDIATE")
    for sql, args in statements:
        db.execute(sql, args)
    db.execute("COMMIT")


def durable_cycles(directory: Path, seconds: float, state_bytes: int) -> float:
    """Durable lock cycles a second, one after the other, for ``seconds``."""
    directory.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(directory / "durable.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        for sql in _SCHEMA:
            db.execute(sql)
        doc = make_state(state_bytes)
        audit = "INSERT INTO audit (at, action) VALUES (?, ?)"
        cycles = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            _synced(
                db,
                ("INSERT INTO locks VALUES ('s', x'7b7d')", ()),
                (audit, (time.time(), "lock")),
            )
            db.execute("SELECT body FROM versions WHERE name = 's' ORDER BY id DESC LIMIT 1")
            _synced(db, (audit, (time.time(), "read")))
            set_serial(doc, cycles + 2)
            body = bytes(doc)
            _synced(
                db,
                (
                    "INSERT INTO versions (name, serial, body, md5, sha256)"
                    " VALUES ('s', ?, ?, ?, ?)",
                    (
                        cycles + 2,
                        body,
                        hashlib.md5(body).hexdigest(),
                        hashlib.sha256(body).hexdigest(),
                    ),
                ),
                (audit, (time.time(), "write")),
            )
            _synced(
                db, ("DELETE FROM locks WHERE name = 's'", ()), (audit, (time.time(), "unlock"))
            )
            cycles += 1
        return cycles / (time.perf_counter() - start)
    finally:
        db.close()

"""The lock table and the digests on the SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace

from statekeeper.errors import LockConflict, LockMismatch, LockNotFound, StatekeeperError
from statekeeper.storage.base import Changed, LockTable, ObjectStore
from statekeeper.storage.registry import DriverURL
from statekeeper.storage.sqlite.database import SqliteDatabase, database_path, like_prefix
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.times import format_rfc3339, parse_rfc3339, utcnow

__all__ = ["SqliteLocks", "open_locks"]


class SqliteLocks(LockTable):
    scheme = "sqlite"
    keeps_digests = True
    then_in_transaction = True

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    @staticmethod
    def _lock(row: tuple[object, ...]) -> LockInfo:
        body, actor, remote_addr, acquired = row
        lock = LockInfo.parse(bytes(body))  # type: ignore[call-overload]
        return replace(
            lock,
            actor=None if actor is None else str(actor),
            remote_addr=None if remote_addr is None else str(remote_addr),
            acquired=parse_rfc3339(str(acquired)),
        )

    def _read(self, db: sqlite3.Connection, key: str) -> LockInfo | None:
        row = db.execute(
            "SELECT body, actor, remote_addr, acquired FROM locks WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else self._lock(row)

    def _insert(self, db: sqlite3.Connection, key: str, lock: LockInfo) -> None:
        # One statement when the state is free; the holder is read only to refuse.
        inserted = db.execute(
            "INSERT INTO locks (key, lock_id, body, actor, remote_addr, acquired) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
            (
                key,
                lock.id,
                lock.body,
                lock.actor,
                lock.remote_addr,
                format_rfc3339(lock.acquired or utcnow()),
            ),
        ).rowcount
        if inserted != 1:
            holder = self._read(db, key)
            assert holder is not None  # the row the INSERT met, in this write transaction
            raise LockConflict(holder)

    def acquire(self, key: str, lock: LockInfo) -> None:
        self.db.run(lambda db: self._insert(db, key, lock), write=True)

    def acquire_then(self, key: str, lock: LockInfo, then: Changed) -> None:
        def tx(db: sqlite3.Connection) -> None:
            self._insert(db, key, lock)
            then()  # its writes to this database join the transaction (a savepoint)

        self.db.run(tx, write=True)

    def read(self, key: str) -> LockInfo | None:
        return self.db.read_one(lambda db: self._read(db, key))

    def delete_if_held_by(self, key: str, lock_id: str) -> bool:
        return self._delete(key, lock_id, None)

    def delete_if_held_by_then(self, key: str, lock_id: str, then: Changed) -> bool:
        return self._delete(key, lock_id, then)

    def _delete(self, key: str, lock_id: str, then: Changed | None) -> bool:
        def tx(db: sqlite3.Connection) -> bool:
            deleted = db.execute(
                "DELETE FROM locks WHERE key = ? AND lock_id = ?", (key, lock_id)
            ).rowcount
            if deleted == 1 and then is not None:
                then()  # its writes to this database join the transaction (a savepoint)
            return deleted == 1

        return self.db.run(tx, write=True)

    def release(self, key: str, lock_id: str, *, read: LockInfo | None = None) -> LockInfo:
        return self._release(key, lock_id, read, None)

    def release_then(
        self, key: str, lock_id: str, then: Changed, *, read: LockInfo | None = None
    ) -> LockInfo:
        return self._release(key, lock_id, read, then)

    def _release(
        self, key: str, lock_id: str, read: LockInfo | None, then: Changed | None
    ) -> LockInfo:
        """The base class's release as one write transaction (the read, when the caller
        has not just made it, and the delete), with ``then`` inside it."""

        def tx(db: sqlite3.Connection) -> LockInfo:
            holder = read if read is not None else self._read(db, key)
            if holder is not None and holder.id == lock_id:
                deleted = db.execute(
                    "DELETE FROM locks WHERE key = ? AND lock_id = ?", (key, lock_id)
                ).rowcount
                if deleted == 1:
                    if then is not None:
                        then()
                    return holder
                holder = self._read(db, key)  # released or replaced since it was read
            if holder is None:
                raise LockNotFound(f"no lock is held on {key!r}; nothing to unlock")
            raise LockMismatch(holder, lock_id)

        return self.db.run(tx, write=True)

    def scan(self, prefix: str = "") -> Iterator[tuple[str, LockInfo]]:
        with self.db.reading() as db:
            rows = db.execute(
                "SELECT key, body, actor, remote_addr, acquired FROM locks "
                "WHERE key LIKE ? ESCAPE '\\' ORDER BY key",
                (like_prefix(prefix),),
            ).fetchall()
        for row in rows:
            try:
                lock = self._lock(row[1:])
            except (StatekeeperError, ValueError) as exc:
                # Only a hand-edited database holds one; list it rather than fail.
                body = row[1] if isinstance(row[1], bytes) else str(row[1]).encode()
                lock = LockInfo.unreadable(body, f"the stored lock is damaged: {exc}")
            yield str(row[0]), lock

    def get_digest(self, key: str) -> str | None:
        row = self.db.run(
            lambda db: db.execute("SELECT digest FROM digests WHERE key = ?", (key,)).fetchone()
        )
        return None if row is None else str(row[0])

    def put_digest(self, key: str, md5_hex: str) -> None:
        self.db.run(
            lambda db: db.execute(
                "INSERT INTO digests (key, digest) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET digest = excluded.digest",
                (key, md5_hex),
            ),
            write=True,
            atomic=False,  # one statement (joined to the version's transaction)
        )

    def delete_digest(self, key: str) -> None:
        self.db.run(lambda db: db.execute("DELETE FROM digests WHERE key = ?", (key,)), write=True)

    def probe(self) -> None:
        self.db.probe()

    def close(self) -> None:
        self.db.close()


def open_locks(url: DriverURL, store: ObjectStore, *, create: bool = True) -> SqliteLocks:
    # The store's URL is the default lock URL: its compression option is the store's.
    url.reject_unknown_options({"compression"})
    path = database_path(url)
    # Locks in the store's own database share its connections (also behind encryption).
    db = store.records.database
    if db is not None and db.path.resolve() == path.resolve():
        return SqliteLocks(db)
    return SqliteLocks(SqliteDatabase(path, create=create))

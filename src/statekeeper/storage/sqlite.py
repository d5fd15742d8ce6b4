"""The embedded default: objects, versions, locks and digests in one SQLite file.

WAL mode with ``synchronous=FULL``: each write is one transaction, committed
and synced before the call returns, so an acknowledged write survives
``kill -9`` of the server (and a power cut). Several processes may share the
file; ``BEGIN IMMEDIATE`` serialises writers and ``busy_timeout`` makes them
wait for each other instead of failing.

One request may commit several small transactions (a lock, then its audit
record). Inside :meth:`SqliteDatabase.syncing_once` those commits skip their
own fsync and the block ends with one fsync of the write-ahead log, before the
caller answers anyone. WAL frames are appended in commit order and recovery
replays a prefix of them, so after a crash the database holds a prefix of the
commits and every commit of an answered request is in it. A commit whose
visibility must wait for its durability (a new state version, which another
client may read at once) passes ``durable=True`` and is synced on its own.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import IO, TypeVar

from statekeeper.errors import (
    ConfigError,
    LockConflict,
    StatekeeperError,
    StateNotFound,
    StorageError,
    VersionNotFound,
    WriteRace,
)
from statekeeper.storage import codec
from statekeeper.storage.base import (
    DeletedState,
    LockTable,
    ObjectInfo,
    ObjectStore,
    ObjectStream,
    RecordSpace,
    StoredObject,
    Upload,
)
from statekeeper.storage.registry import DriverURL
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.times import format_rfc3339, parse_rfc3339, utcnow

__all__ = ["SqliteDatabase", "SqliteLocks", "SqliteStore"]

T = TypeVar("T")

#: Blobs are written and read this many bytes at a time (incremental blob I/O):
#: binding a whole state as a parameter makes SQLite copy it, and reading it
#: back as one value holds it twice.
PIECE = 1 << 20
#: An upload is kept in memory up to this size, then in a file beside the database;
#: a version up to this size is read whole. Below it a file and a connection of its
#: own cost more than the bytes they save (a 1 MB GET took 9 ms instead of 2).
IN_MEMORY = 8 << 20

#: The largest SQLite row ID (a signed 64-bit integer); version IDs are row IDs.
_MAX_ROWID = 2**63 - 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    data BLOB,
    size INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_by_key ON objects (key, id);
-- Listings read these columns only: from this index, never past the data blob that
-- precedes them in the row (a 10,000-state listing went from 1 s to well under).
CREATE INDEX IF NOT EXISTS objects_listing ON objects (id, key, size, metadata, created);
-- The bytes of a version larger than PIECE, in pieces of PIECE bytes (objects.data is
-- then empty); compressed, the pieces cut one zstd stream (objects.codec, codec.py).
-- SQLite builds each row whole in memory before writing it: one row of a 500 MB state
-- costs twice its size while written, a piece costs 1 MB.
CREATE TABLE IF NOT EXISTS object_pieces (
    id INTEGER NOT NULL REFERENCES objects (id),
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (id, seq)
);
CREATE TABLE IF NOT EXISTS current (
    key TEXT PRIMARY KEY,
    object_id INTEGER NOT NULL REFERENCES objects (id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS locks (
    key TEXT PRIMARY KEY,
    lock_id TEXT NOT NULL,
    body BLOB NOT NULL,
    actor TEXT,
    remote_addr TEXT,
    acquired TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS digests (
    key TEXT PRIMARY KEY,
    digest TEXT NOT NULL
) WITHOUT ROWID;
-- Deleted states (the trash): the version current before the delete, and when.
CREATE TABLE IF NOT EXISTS trash (
    key TEXT PRIMARY KEY,
    object_id INTEGER NOT NULL,
    deleted TEXT NOT NULL
) WITHOUT ROWID;
"""

#: Columns added since the first schema, each with its definition: added in place
#: (``ALTER TABLE … ADD COLUMN``) when a database from before them is opened.
#: ``codec``: how the row's blob is encoded (NULL: the bytes as written), see codec.py.
_ADDED_COLUMNS = (("objects", "codec", "TEXT"),)


def _race_message(key: str) -> str:
    return (
        f"another write to {key!r} landed while this one was being checked; nothing "
        "was written: read the state again and retry"
    )


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class SqliteDatabase:
    """One database file; a connection per thread, opened on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the directory for {path}: {exc}") from exc
        try:
            # executescript manages its own transaction.
            self._connection().executescript(SCHEMA)
            self._add_columns()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite database {path}: {exc}") from exc

    def _add_columns(self) -> None:
        conn = self._connection()
        for table, column, definition in _ADDED_COLUMNS:
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column in have:
                continue
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            except sqlite3.OperationalError as exc:
                # Another process opening the same file added it first.
                if "duplicate column" not in str(exc):
                    raise

    def connect(self) -> sqlite3.Connection:
        """A new connection of this database's settings; the caller closes it."""
        conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.connect()
            self._local.conn = conn
            self._local.synchronous = "FULL"
            with self._guard:
                self._all.append(conn)
        return conn

    def _synchronous(self, conn: sqlite3.Connection, mode: str) -> None:
        if self._local.synchronous != mode:
            conn.execute(f"PRAGMA synchronous={mode}")
            self._local.synchronous = mode

    def run(
        self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False, durable: bool = False
    ) -> T:
        """Run ``fn`` in one transaction (``BEGIN IMMEDIATE`` for writes).

        A write is synced when it commits, unless it runs inside
        :meth:`syncing_once` without ``durable``: then the block's end syncs it.
        """
        conn = self._connection()
        deferred = write and not durable and getattr(self._local, "deferring", 0) > 0
        try:
            if write and not getattr(self._local, "relaxed", False):
                self._synchronous(conn, "NORMAL" if deferred else "FULL")
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"the SQLite database {self.path} failed: {exc}") from exc
        if write:
            # A synced commit syncs the whole log, the deferred commits before it included.
            self._local.unsynced = deferred
        return result

    def relax(self) -> None:
        """Commits on this thread's connection from now on wait for the log, not the
        disk: for writes that may be lost to a power cut (webhook delivery leases)."""
        self._synchronous(self._connection(), "NORMAL")
        self._local.relaxed = True

    @contextmanager
    def syncing_once(self) -> Iterator[None]:
        """Commits on this thread inside the block share one fsync, at its end.

        The block is one request's work: it ends before the request is answered,
        so what it committed is durable when the caller learns of it.
        """
        self._connection()
        self._local.deferring = getattr(self._local, "deferring", 0) + 1
        try:
            yield
        finally:
            self._local.deferring -= 1
            if self._local.deferring == 0 and getattr(self._local, "unsynced", False):
                self.sync()

    def sync(self) -> None:
        """Make every commit so far durable: fsync the write-ahead log.

        What SQLite itself does at a ``synchronous=FULL`` commit; the log may
        have been checkpointed and removed meanwhile (then it was synced first).
        """
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            self._local.unsynced = False
            return
        except OSError as exc:
            raise StorageError(f"cannot sync the SQLite log of {self.path}: {exc}") from exc
        try:
            os.fsync(fd)
        except OSError as exc:
            raise StorageError(f"cannot sync the SQLite log of {self.path}: {exc}") from exc
        finally:
            os.close(fd)
        self._local.unsynced = False

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise StorageError(f"the SQLite database {self.path} failed: {exc}") from exc

    def probe(self) -> None:
        """``SELECT 1`` on this thread's connection: the file is open and readable."""
        self.run(lambda db: db.execute("SELECT 1").fetchone())

    def close(self) -> None:
        with self._guard:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def _pieces(db: sqlite3.Connection, object_id: int) -> Iterator[bytes]:
    """The bytes of a version kept in object_pieces, in order (none: they are in its row)."""
    cursor = db.execute("SELECT data FROM object_pieces WHERE id = ? ORDER BY seq", (object_id,))
    while (row := cursor.fetchone()) is not None:
        yield bytes(row[0])


def _info(row: sqlite3.Row | tuple[object, ...], *, is_latest: bool) -> ObjectInfo:
    object_id, key, size, metadata, created = row[:5]
    return ObjectInfo(
        key=str(key),
        version_id=str(object_id),
        size=int(str(size)),
        last_modified=datetime.fromisoformat(str(created)),
        metadata=json.loads(str(metadata)),
        is_latest=is_latest,
    )


class SqliteStore(ObjectStore):
    """States in one SQLite file; blobs compressed with ``codec`` (None: plain) when it pays."""

    scheme = "sqlite"
    supports_versions = True
    supports_conditional_put = True
    supports_compare_and_swap = True
    supports_history_edits = True

    def __init__(self, db: SqliteDatabase, compression: str | None = codec.ZSTD) -> None:
        self.db = db
        self.compression = compression

    @property
    def lock_namespace(self) -> str:
        return str(self.db.path)

    @property
    def records(self) -> RecordSpace:
        return RecordSpace(self, self.db)

    def _insert(
        self,
        db: sqlite3.Connection,
        key: str,
        data: bytes | IO[bytes],
        metadata: Mapping[str, str],
        size: int | None = None,
    ) -> ObjectInfo:
        """A new current version; ``data`` is bytes, or a file of ``size`` bytes."""
        created = utcnow()
        if isinstance(data, bytes):
            size = len(data)
        assert size is not None  # a file comes with its size
        row = (key, size, json.dumps(dict(metadata)), created.isoformat())
        if isinstance(data, bytes) and size <= PIECE:
            blob, marker = codec.encode(data, self.compression)
            cur = db.execute(
                "INSERT INTO objects (key, data, size, metadata, created, codec) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, blob, *row[1:], marker),
            )
        else:
            # The bytes in pieces (see object_pieces in SCHEMA): no copy of the whole
            # state in SQLite's memory, nor in ours when they come from an upload's file.
            if isinstance(data, bytes):
                view = memoryview(data)
                chunks: Iterator[bytes | memoryview] = (
                    view[at : at + PIECE] for at in range(0, size, PIECE)
                )
            else:
                data.seek(0)
                chunks = iter(lambda: data.read(PIECE), b"")
            pieces, marker = codec.encode_stream(chunks, self.compression, size, PIECE)
            cur = db.execute(
                "INSERT INTO objects (key, data, size, metadata, created, codec) "
                "VALUES (?, X'', ?, ?, ?, ?)",
                (*row, marker),
            )
            db.executemany(
                "INSERT INTO object_pieces (id, seq, data) VALUES (?, ?, ?)",
                ((cur.lastrowid, seq, piece) for seq, piece in enumerate(pieces)),
            )
        object_id = cur.lastrowid
        db.execute(
            "INSERT INTO current (key, object_id) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET object_id = excluded.object_id",
            (key, object_id),
        )
        # A state written again under a deleted name is no longer in the trash.
        db.execute("DELETE FROM trash WHERE key = ?", (key,))
        return ObjectInfo(
            key=key,
            version_id=str(object_id),
            size=size,
            last_modified=created,
            metadata=dict(metadata),
        )

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> ObjectInfo:
        return self.db.run(
            lambda db: self._insert(db, key, data, metadata), write=True, durable=True
        )

    def put_if_absent(self, key: str, data: bytes, metadata: Mapping[str, str]) -> bool:
        def tx(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM current WHERE key = ?", (key,)).fetchone():
                return False
            self._insert(db, key, data, metadata)
            return True

        return self.db.run(tx, write=True, durable=True)

    def replace(
        self, key: str, data: bytes, metadata: Mapping[str, str], expected: ObjectInfo | None
    ) -> ObjectInfo:
        def tx(db: sqlite3.Connection) -> ObjectInfo:
            self._check_current(db, key, expected)
            return self._insert(db, key, data, metadata)

        return self.db.run(tx, write=True, durable=True)

    @staticmethod
    def _check_current(db: sqlite3.Connection, key: str, expected: ObjectInfo | None) -> None:
        row = db.execute("SELECT object_id FROM current WHERE key = ?", (key,)).fetchone()
        current = None if row is None else str(row[0])
        if current != (None if expected is None else expected.version_id):
            raise WriteRace(_race_message(key))

    def upload(self, key: str) -> Upload:
        return _SpooledUpload(self, key)

    def open(self, key: str, version_id: str | None = None) -> ObjectStream | None:
        info = self.head(key, version_id)
        if info is None or info.size <= IN_MEMORY:
            return super().open(key, version_id)
        # Its own connection and read transaction: the chunks are read on whichever
        # threads serve the response, and all from the snapshot the facts came from.
        conn = self._open_reader()
        try:
            conn.execute("BEGIN")
            row = self._row(
                conn, key, version_id, "o.id, o.key, o.size, o.metadata, o.created, o.codec"
            )
            if row is None:
                conn.close()
                return None
            latest = version_id is None or self._is_latest(conn, key, row[0])
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(f"the SQLite database {self.db.path} failed: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        info = _info(row, is_latest=latest)
        marker = None if row[5] is None else str(row[5])
        chunks = codec.decode_stream(self._chunks(conn, int(str(row[0]))), marker, info.size)
        return ObjectStream(info, chunks)

    def _open_reader(self) -> sqlite3.Connection:
        try:
            return self.db.connect()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite database {self.db.path}: {exc}") from exc

    def _chunks(self, conn: sqlite3.Connection, object_id: int) -> Iterator[bytes]:
        try:
            pieces = 0
            for piece in _pieces(conn, object_id):
                pieces += 1
                yield piece
            if not pieces:
                # Kept in its row (written before object_pieces): a piece at a time.
                with conn.blobopen("objects", "data", object_id, readonly=True) as blob:
                    while piece := blob.read(PIECE):
                        yield piece
        except sqlite3.Error as exc:
            raise StorageError(f"the SQLite database {self.db.path} failed: {exc}") from exc
        finally:
            conn.close()  # ends the read transaction

    def _row(
        self, db: sqlite3.Connection, key: str, version_id: str | None, columns: str
    ) -> tuple[object, ...] | None:
        if version_id is None:
            row: tuple[object, ...] | None = db.execute(
                f"SELECT {columns} FROM current c JOIN objects o ON o.id = c.object_id "
                "WHERE c.key = ?",
                (key,),
            ).fetchone()
            return row
        # Version IDs are row IDs: ASCII digits within SQLite's 64-bit signed range.
        if not (version_id.isascii() and version_id.isdigit()) or int(version_id) > _MAX_ROWID:
            raise VersionNotFound(f"state {key!r} has no version {version_id!r}")
        row = db.execute(
            f"SELECT {columns} FROM objects o WHERE o.key = ? AND o.id = ? AND o.data IS NOT NULL",
            (key, int(version_id)),
        ).fetchone()
        if row is None:
            raise VersionNotFound(f"state {key!r} has no version {version_id!r}")
        return row

    def _is_latest(self, db: sqlite3.Connection, key: str, object_id: object) -> bool:
        row = db.execute("SELECT object_id FROM current WHERE key = ?", (key,)).fetchone()
        return row is not None and row[0] == object_id

    def get(self, key: str, version_id: str | None = None) -> StoredObject | None:
        cols = "o.id, o.key, o.size, o.metadata, o.created, o.data, o.codec"

        def tx(db: sqlite3.Connection) -> StoredObject | None:
            row = self._row(db, key, version_id, cols)
            if row is None:
                return None
            latest = version_id is None or self._is_latest(db, key, row[0])
            info = _info(row, is_latest=latest)
            blob = bytes(row[5])  # type: ignore[call-overload]
            if not blob:
                blob = b"".join(_pieces(db, int(str(row[0]))))
            marker = None if row[6] is None else str(row[6])
            return StoredObject(info, codec.decode(blob, marker, info.size))

        return self.db.run(tx)

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        cols = "o.id, o.key, o.size, o.metadata, o.created"

        def tx(db: sqlite3.Connection) -> ObjectInfo | None:
            row = self._row(db, key, version_id, cols)
            if row is None:
                return None
            latest = version_id is None or self._is_latest(db, key, row[0])
            return _info(row, is_latest=latest)

        return self.db.run(tx)

    def delete(self, key: str) -> None:
        # The versions stay, like a delete marker on a versioned bucket: the trash
        # row remembers which one was current, and when it was deleted.
        def tx(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT object_id FROM current WHERE key = ?", (key,)).fetchone()
            if row is None:
                return
            db.execute(
                "INSERT INTO trash (key, object_id, deleted) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET object_id = excluded.object_id, "
                "deleted = excluded.deleted",
                (key, row[0], utcnow().isoformat()),
            )
            db.execute("DELETE FROM current WHERE key = ?", (key,))

        self.db.run(tx, write=True, durable=True)

    def delete_version(self, key: str, version_id: str) -> None:
        if not (version_id.isascii() and version_id.isdigit()) or int(version_id) > _MAX_ROWID:
            raise VersionNotFound(f"state {key!r} has no version {version_id!r}")

        def tx(db: sqlite3.Connection) -> None:
            held = db.execute(
                "SELECT 1 FROM current WHERE key = ? AND object_id = ? UNION ALL "
                "SELECT 1 FROM trash WHERE key = ? AND object_id = ?",
                (key, int(version_id), key, int(version_id)),
            ).fetchone()
            if held:
                raise StorageError(
                    f"version {version_id} of {key!r} is its current (or deleted) state; "
                    "it is never removed on its own"
                )
            cur = db.execute("DELETE FROM objects WHERE key = ? AND id = ?", (key, int(version_id)))
            if cur.rowcount != 1:
                raise VersionNotFound(f"state {key!r} has no version {version_id!r}")
            db.execute("DELETE FROM object_pieces WHERE id = ?", (int(version_id),))

        self.db.run(tx, write=True, durable=True)

    def deleted(self, prefix: str = "") -> Iterator[DeletedState]:
        with self.db.reading() as db:
            rows = db.execute(
                "SELECT t.key, t.deleted, t.object_id, o.size FROM trash t "
                "JOIN objects o ON o.id = t.object_id "
                "WHERE t.key LIKE ? ESCAPE '\\' ORDER BY t.key",
                (_like_prefix(prefix),),
            ).fetchall()
        for key, deleted, object_id, size in rows:
            yield DeletedState(str(key), datetime.fromisoformat(str(deleted)), str(object_id), size)

    def _trashed(self, db: sqlite3.Connection, key: str) -> int:
        row = db.execute("SELECT object_id FROM trash WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise StateNotFound(f"{key!r} is not in the trash ('statekeeper trash list')")
        return int(row[0])

    def undelete(self, key: str) -> ObjectInfo:
        def tx(db: sqlite3.Connection) -> ObjectInfo:
            object_id = self._trashed(db, key)
            db.execute("INSERT INTO current (key, object_id) VALUES (?, ?)", (key, object_id))
            db.execute("DELETE FROM trash WHERE key = ?", (key,))
            row = db.execute(
                "SELECT id, key, size, metadata, created FROM objects WHERE id = ?", (object_id,)
            ).fetchone()
            return _info(row, is_latest=True)

        return self.db.run(tx, write=True, durable=True)

    def purge(self, key: str) -> int:
        def tx(db: sqlite3.Connection) -> int:
            self._trashed(db, key)
            db.execute("DELETE FROM trash WHERE key = ?", (key,))
            db.execute(
                "DELETE FROM object_pieces WHERE id IN (SELECT id FROM objects WHERE key = ?)",
                (key,),
            )
            return int(db.execute("DELETE FROM objects WHERE key = ?", (key,)).rowcount)

        return self.db.run(tx, write=True, durable=True)

    def scan(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self.db.reading() as db:
            rows = db.execute(
                # The covering index, not the row: see objects_listing in SCHEMA.
                "SELECT o.id, o.key, o.size, o.metadata, o.created FROM current c "
                "JOIN objects o INDEXED BY objects_listing ON o.id = c.object_id "
                "WHERE c.key LIKE ? ESCAPE '\\' "
                "ORDER BY c.key",
                (_like_prefix(prefix),),
            ).fetchall()
        for row in rows:
            yield _info(row, is_latest=True)

    def version_before(self, key: str, version_id: str) -> str | None:
        if not version_id.isdigit():
            raise VersionNotFound(f"state {key!r} has no version {version_id!r}")

        def tx(db: sqlite3.Connection) -> str | None:
            if not db.execute(
                "SELECT 1 FROM objects WHERE key = ? AND id = ?", (key, int(version_id))
            ).fetchone():
                raise VersionNotFound(f"state {key!r} has no version {version_id!r}")
            row = db.execute(
                "SELECT MAX(id) FROM objects WHERE key = ? AND id < ?", (key, int(version_id))
            ).fetchone()
            return None if row is None or row[0] is None else str(row[0])

        return self.db.run(tx)

    def versions(self, key: str) -> list[ObjectInfo]:
        def tx(db: sqlite3.Connection) -> list[ObjectInfo]:
            current = db.execute("SELECT object_id FROM current WHERE key = ?", (key,)).fetchone()
            rows = db.execute(
                "SELECT id, key, size, metadata, created FROM objects WHERE key = ? "
                "ORDER BY id DESC",
                (key,),
            ).fetchall()
            return [_info(r, is_latest=current is not None and r[0] == current[0]) for r in rows]

        return self.db.run(tx)

    def probe(self) -> None:
        self.db.probe()

    def close(self) -> None:
        self.db.close()


class _SpooledUpload(Upload):
    """An upload kept in a temporary file beside the database (in memory while small),
    copied into the new version's blob in the transaction that stores it.

    The bytes arrive at the client's pace; a SQLite write transaction held that
    long would stop every other write to the file, so the transaction starts
    only when all of them are there and checked.
    """

    def __init__(self, store: SqliteStore, key: str) -> None:
        super().__init__(key)
        self.store = store
        import tempfile  # here: it costs a CLI's start-up, and only writes need it

        self._spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by abort()
            max_size=IN_MEMORY, dir=str(store.db.path.parent), prefix=".upload-"
        )

    def write(self, chunk: bytes) -> None:
        try:
            self._spool.write(chunk)
        except OSError as exc:
            raise StorageError(f"cannot keep an upload beside {self.store.db.path}: {exc}") from exc
        self.size += len(chunk)

    def _data(self) -> bytes | IO[bytes]:
        """The bytes themselves when they fit in a row (most states), else the file."""
        if self.size > PIECE:
            return self._spool
        self._spool.seek(0)
        return self._spool.read()

    def put(self, metadata: Mapping[str, str]) -> ObjectInfo:
        data = self._data()
        return self.store.db.run(
            lambda db: self.store._insert(db, self.key, data, metadata, self.size),
            write=True,
            durable=True,
        )

    def replace(self, metadata: Mapping[str, str], expected: ObjectInfo | None) -> ObjectInfo:
        data = self._data()

        def tx(db: sqlite3.Connection) -> ObjectInfo:
            self.store._check_current(db, self.key, expected)
            return self.store._insert(db, self.key, data, metadata, self.size)

        return self.store.db.run(tx, write=True, durable=True)

    def abort(self) -> None:
        self._spool.close()


class SqliteLocks(LockTable):
    scheme = "sqlite"
    keeps_digests = True

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

    def acquire(self, key: str, lock: LockInfo) -> None:
        def tx(db: sqlite3.Connection) -> None:
            holder = self._read(db, key)
            if holder is not None:
                raise LockConflict(holder)
            db.execute(
                "INSERT INTO locks (key, lock_id, body, actor, remote_addr, acquired) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    lock.id,
                    lock.body,
                    lock.actor,
                    lock.remote_addr,
                    format_rfc3339(lock.acquired or utcnow()),
                ),
            )

        self.db.run(tx, write=True)

    def read(self, key: str) -> LockInfo | None:
        return self.db.run(lambda db: self._read(db, key))

    def delete_if_held_by(self, key: str, lock_id: str) -> bool:
        cur = self.db.run(
            lambda db: db.execute(
                "DELETE FROM locks WHERE key = ? AND lock_id = ?", (key, lock_id)
            ),
            write=True,
        )
        return cur.rowcount == 1

    def scan(self, prefix: str = "") -> Iterator[tuple[str, LockInfo]]:
        with self.db.reading() as db:
            rows = db.execute(
                "SELECT key, body, actor, remote_addr, acquired FROM locks "
                "WHERE key LIKE ? ESCAPE '\\' ORDER BY key",
                (_like_prefix(prefix),),
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
        )

    def delete_digest(self, key: str) -> None:
        self.db.run(lambda db: db.execute("DELETE FROM digests WHERE key = ?", (key,)), write=True)

    def probe(self) -> None:
        self.db.probe()

    def close(self) -> None:
        self.db.close()


def database_path(url: DriverURL) -> Path:
    """``sqlite:///relative.db`` and ``sqlite:////abs.db``, SQLAlchemy's convention."""
    if url.netloc:
        raise ConfigError(
            f"{url.raw!r}: a SQLite URL has no host; use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path = url.path[1:] if url.path.startswith("/") else url.path
    if not path:
        raise ConfigError(f"{url.raw!r}: the SQLite URL names no database file")
    return Path(path)


def open_store(url: DriverURL) -> SqliteStore:
    """``?compression=zstd`` (the default) or ``none``: how new versions are written."""
    url.reject_unknown_options({"compression"})
    try:
        marker = codec.parse_codec(url.options.get("compression", codec.ZSTD))
    except ValueError as exc:
        raise ConfigError(f"{url.raw!r}: {exc}") from exc
    return SqliteStore(SqliteDatabase(database_path(url)), marker)


def open_locks(url: DriverURL, store: ObjectStore) -> SqliteLocks:
    # The store's URL is the default lock URL: its compression option is the store's.
    url.reject_unknown_options({"compression"})
    path = database_path(url)
    # Locks in the store's own database share its connections (also behind encryption).
    db = store.records.database
    if db is not None and db.path.resolve() == path.resolve():
        return SqliteLocks(db)
    return SqliteLocks(SqliteDatabase(path))

"""The object store on the SQLite file: versions, the current one per key, and the trash.

A version's bytes are in its row, or in pieces when larger (``pieces.py``);
compressed with ``codec`` when it pays.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from statekeeper.errors import (
    ConfigError,
    StateNotFound,
    StorageError,
    VersionNotFound,
    WriteRace,
)
from statekeeper.storage import codec
from statekeeper.storage.base import (
    DeletedState,
    ObjectInfo,
    ObjectStore,
    ObjectStream,
    RecordSpace,
    StoredObject,
    Upload,
    WithPrevious,
    deleted_again,
    written_since,
)
from statekeeper.storage.registry import DriverURL
from statekeeper.storage.sqlite.database import (
    SqliteDatabase,
    database_path,
    failure,
    like_prefix,
)
from statekeeper.storage.sqlite.pieces import (
    IN_MEMORY,
    PIECE,
    SpooledUpload,
    read_pieces,
    stream_pieces,
)
from statekeeper.times import utcnow

__all__ = ["Row", "SqliteStore", "open_store"]

#: The largest SQLite row ID (a signed 64-bit integer); version IDs are row IDs.
_MAX_ROWID = 2**63 - 1


def _row_id(key: str, version_id: str) -> int:
    """The row ID a version ID names: ASCII digits within SQLite's 64-bit signed range
    (anything else names no version, rather than failing the query)."""
    if not (version_id.isascii() and version_id.isdigit()) or int(version_id) > _MAX_ROWID:
        raise VersionNotFound(f"state {key!r} has no version {version_id!r}")
    return int(version_id)


def _race_message(key: str) -> str:
    return (
        f"another write to {key!r} landed while this one was being checked; nothing "
        "was written: read the state again and retry"
    )


@dataclass(frozen=True)
class Row:
    """A small version's blob as its row keeps it: encoded before the write transaction
    begins, so that other writers do not wait for the compression."""

    size: int
    blob: bytes
    codec: str | None


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


def _read_columns(whole_up_to: int | None) -> str:
    """A version's facts, whether it is read whole (no larger than ``whole_up_to``;
    None: always), and then its row's blob (a large version's is never fetched)."""
    small = "1" if whole_up_to is None else f"o.size <= {int(whole_up_to)}"
    blob = f"CASE WHEN {small} THEN o.data END"
    return f"o.id, o.key, o.size, o.metadata, o.created, o.codec, {small}, {blob}"


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

    def row(self, data: bytes) -> Row:
        """``data`` (at most PIECE bytes) as its row keeps it."""
        blob, marker = codec.encode(data, self.compression)
        return Row(len(data), blob, marker)

    def _insert(
        self,
        db: sqlite3.Connection,
        key: str,
        data: bytes | Row | IO[bytes],
        metadata: Mapping[str, str],
        size: int | None = None,
        packed: str | None = None,
    ) -> ObjectInfo:
        """A new current version; ``data`` is bytes, a row's blob, or a file of ``size``
        bytes (already encoded with the codec ``packed`` when that is given)."""
        created = utcnow()
        if isinstance(data, bytes | Row):
            size = data.size if isinstance(data, Row) else len(data)
        assert size is not None  # a file comes with its size
        row = (key, size, json.dumps(dict(metadata)), created.isoformat())
        if isinstance(data, Row):
            cur = db.execute(
                "INSERT INTO objects (key, data, size, metadata, created, codec) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, data.blob, *row[1:], data.codec),
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
            if packed is None:
                pieces, marker = codec.encode_stream(chunks, self.compression, size, PIECE)
            else:
                pieces, marker = chunks, packed
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

    def _prepared(self, data: bytes) -> bytes | Row:
        return self.row(data) if len(data) <= PIECE else data

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> ObjectInfo:
        prepared = self._prepared(data)
        return self.db.run(
            lambda db: self._insert(db, key, prepared, metadata), write=True, durable=True
        )

    def put_if_absent(self, key: str, data: bytes, metadata: Mapping[str, str]) -> bool:
        prepared = self._prepared(data)

        def tx(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM current WHERE key = ?", (key,)).fetchone():
                return False
            self._insert(db, key, prepared, metadata)
            return True

        return self.db.run(tx, write=True, durable=True)

    def replace(
        self, key: str, data: bytes, metadata: Mapping[str, str], expected: ObjectInfo | None
    ) -> ObjectInfo:
        prepared = self._prepared(data)

        def tx(db: sqlite3.Connection) -> ObjectInfo:
            self._check_current(db, key, expected)
            return self._insert(db, key, prepared, metadata)

        return self.db.run(tx, write=True, durable=True)

    @staticmethod
    def _check_current(db: sqlite3.Connection, key: str, expected: ObjectInfo | None) -> None:
        row = db.execute("SELECT object_id FROM current WHERE key = ?", (key,)).fetchone()
        current = None if row is None else str(row[0])
        if current != (None if expected is None else expected.version_id):
            raise WriteRace(_race_message(key))

    def upload(self, key: str) -> Upload:
        return SpooledUpload(self, key)

    def open(self, key: str, version_id: str | None = None) -> ObjectStream | None:
        # A version up to IN_MEMORY (most states) is read whole, with its facts, in one
        # read transaction; a larger one's facts come alone, its bytes below.
        found = self._found(key, version_id, IN_MEMORY)
        if found is None:
            return None
        if isinstance(found, StoredObject):
            return ObjectStream(found.info, iter((found.data,)))
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
            raise failure(self.db.path, exc) from exc
        except BaseException:
            conn.close()
            raise
        info = _info(row, is_latest=latest)
        marker = None if row[5] is None else str(row[5])
        pieces = stream_pieces(self.db, conn, int(str(row[0])))
        chunks = codec.decode_stream(pieces, marker, info.size)
        return ObjectStream(info, chunks)

    def _open_reader(self) -> sqlite3.Connection:
        try:
            return self.db.connect()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite database {self.db.path}: {exc}") from exc

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
        row = db.execute(
            f"SELECT {columns} FROM objects o WHERE o.key = ? AND o.id = ? AND o.data IS NOT NULL",
            (key, _row_id(key, version_id)),
        ).fetchone()
        if row is None:
            raise VersionNotFound(f"state {key!r} has no version {version_id!r}")
        return row

    def _is_latest(self, db: sqlite3.Connection, key: str, object_id: object) -> bool:
        row = db.execute("SELECT object_id FROM current WHERE key = ?", (key,)).fetchone()
        return row is not None and row[0] == object_id

    def get(self, key: str, version_id: str | None = None) -> StoredObject | None:
        found = self._found(key, version_id, None)
        # Without a size limit it is never the facts alone; the test is for the type.
        return None if isinstance(found, ObjectInfo) else found

    def _found(
        self, key: str, version_id: str | None, whole_up_to: int | None
    ) -> StoredObject | ObjectInfo | None:
        """The version with its bytes, or only its facts when larger than ``whole_up_to``."""
        cols = _read_columns(whole_up_to)
        if version_id is None:
            # The current version is one statement when its bytes are in its row (most
            # states): read without a transaction around it. In pieces, read again in one.
            row = self.db.read_one(lambda db: self._row(db, key, None, cols))
            if row is None:
                return None
            if not row[6] or row[-1]:
                return self._object(None, row, _info(row, is_latest=True))
        return self.db.run(lambda db: self._read(db, key, version_id, cols))

    def _read(
        self, db: sqlite3.Connection, key: str, version_id: str | None, cols: str
    ) -> StoredObject | ObjectInfo | None:
        row = self._row(db, key, version_id, cols)
        if row is None:
            return None
        latest = version_id is None or self._is_latest(db, key, row[0])
        return self._object(db, row, _info(row, is_latest=latest))

    def _object(
        self, db: sqlite3.Connection | None, row: tuple[object, ...], info: ObjectInfo
    ) -> StoredObject | ObjectInfo:
        """``row`` (of :func:`_read_columns`) as its facts alone or with its bytes; ``db``
        reads the pieces of bytes not kept in the row (None: they are)."""
        if not row[6]:
            return info
        return StoredObject(info, self._bytes(db, row[0], row[-1], row[5], info.size))

    @staticmethod
    def _bytes(
        db: sqlite3.Connection | None, object_id: object, blob: object, marker: object, size: int
    ) -> bytes:
        """A version's bytes as written, from its row's blob (empty: in pieces) and codec."""
        data = bytes(blob)  # type: ignore[call-overload]
        if not data:
            assert db is not None, "a version in pieces is read in a transaction"
            data = b"".join(read_pieces(db, int(str(object_id))))
        return codec.decode(data, None if marker is None else str(marker), size)

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        cols = "o.id, o.key, o.size, o.metadata, o.created"

        def tx(db: sqlite3.Connection) -> ObjectInfo | None:
            row = self._row(db, key, version_id, cols)
            if row is None:
                return None
            latest = version_id is None or self._is_latest(db, key, row[0])
            return _info(row, is_latest=latest)

        # The current version is one statement; another's, a second (is it the latest?).
        return self.db.read_one(tx) if version_id is None else self.db.run(tx)

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

    def delete_version(self, key: str, version_id: str, current: str | None = None) -> None:
        row_id = _row_id(key, version_id)
        expected = None if current is None else _row_id(key, current)

        def tx(db: sqlite3.Connection) -> None:
            if expected is not None:
                now = db.execute("SELECT object_id FROM current WHERE key = ?", (key,)).fetchone()
                if now is None or now[0] != expected:
                    raise written_since(key, version_id, str(current))
            held = db.execute(
                "SELECT 1 FROM current WHERE key = ? AND object_id = ? UNION ALL "
                "SELECT 1 FROM trash WHERE key = ? AND object_id = ?",
                (key, row_id, key, row_id),
            ).fetchone()
            if held:
                raise StorageError(
                    f"version {version_id} of {key!r} is its current (or deleted) state; "
                    "it is never removed on its own"
                )
            cur = db.execute("DELETE FROM objects WHERE key = ? AND id = ?", (key, row_id))
            if cur.rowcount != 1:
                raise VersionNotFound(f"state {key!r} has no version {version_id!r}")
            db.execute("DELETE FROM object_pieces WHERE id = ?", (row_id,))

        self.db.run(tx, write=True, durable=True)

    def deleted(self, prefix: str = "") -> Iterator[DeletedState]:
        with self.db.reading() as db:
            rows = db.execute(
                "SELECT t.key, t.deleted, t.object_id, o.size FROM trash t "
                "JOIN objects o ON o.id = t.object_id "
                "WHERE t.key LIKE ? ESCAPE '\\' ORDER BY t.key",
                (like_prefix(prefix),),
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

    def purge(self, key: str, deleted: datetime | None = None) -> int:
        def tx(db: sqlite3.Connection) -> int:
            self._trashed(db, key)
            if deleted is not None:
                (when,) = db.execute("SELECT deleted FROM trash WHERE key = ?", (key,)).fetchone()
                if datetime.fromisoformat(str(when)) > deleted:
                    raise deleted_again(key, deleted)
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
                (like_prefix(prefix),),
            ).fetchall()
        for row in rows:
            yield _info(row, is_latest=True)

    def version_before(self, key: str, version_id: str) -> str | None:
        row_id = _row_id(key, version_id)

        def tx(db: sqlite3.Connection) -> str | None:
            exists, before = db.execute(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE key = ?1 AND id = ?2), "
                "(SELECT MAX(id) FROM objects WHERE key = ?1 AND id < ?2)",
                (key, row_id),
            ).fetchone()
            if not exists:
                raise VersionNotFound(f"state {key!r} has no version {version_id!r}")
            return None if before is None else str(before)

        return self.db.read_one(tx)

    def count_newer(self, key: str, version_id: str | None, up_to: int) -> int:
        # Row IDs grow with every version written: the newer ones are those above it.
        after = 0 if version_id is None else _row_id(key, version_id)

        def tx(db: sqlite3.Connection) -> int:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM objects WHERE key = ? AND id > ? LIMIT ?)",
                (key, after, up_to),
            ).fetchone()
            return int(count)

        return self.db.read_one(tx)

    def with_previous(self, key: str, version_id: str, known: str | None = None) -> WithPrevious:
        # One read transaction, the bytes alone: no metadata parsed, no "is it the
        # latest" query (the webhook worker calls this for every state.written).
        row_id = _row_id(key, version_id)

        def tx(db: sqlite3.Connection) -> WithPrevious:
            row = db.execute(
                "SELECT o.size, o.codec, o.data, "
                "(SELECT MAX(id) FROM objects WHERE key = ?1 AND id < ?2) "
                "FROM objects o WHERE o.key = ?1 AND o.id = ?2 AND o.data IS NOT NULL",
                (key, row_id),
            ).fetchone()
            if row is None:
                raise VersionNotFound(f"state {key!r} has no version {version_id!r}")
            size, marker, blob, before = row
            data = self._bytes(db, row_id, blob, marker, int(size))
            previous = None if before is None else str(before)
            if previous is None or previous == known:
                return WithPrevious(data, previous, None)
            old = db.execute(
                "SELECT size, codec, data FROM objects WHERE id = ? AND data IS NOT NULL",
                (before,),
            ).fetchone()
            if old is None:
                raise VersionNotFound(f"state {key!r} has no version {previous!r}")
            return WithPrevious(
                data, previous, self._bytes(db, before, old[2], old[1], int(old[0]))
            )

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


def open_store(url: DriverURL, *, create: bool = True) -> SqliteStore:
    """``?compression=zstd`` (the default) or ``none``: how new versions are written.
    A missing file is made, unless ``create`` is False (StoreNotFound)."""
    url.reject_unknown_options({"compression"})
    try:
        marker = codec.parse_codec(url.options.get("compression", codec.ZSTD))
    except ValueError as exc:
        raise ConfigError(f"{url.raw!r}: {exc}") from exc
    return SqliteStore(SqliteDatabase(database_path(url), create=create), marker)

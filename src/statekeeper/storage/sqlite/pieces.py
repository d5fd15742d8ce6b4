"""Large states on the SQLite file: uploads spooled beside it, versions kept in pieces."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from typing import IO, TYPE_CHECKING

from statekeeper.storage import codec
from statekeeper.storage.base import ObjectInfo, Stored, Upload, notify_stored
from statekeeper.storage.sqlite.database import failure

if TYPE_CHECKING:
    import zstandard

    from statekeeper.storage.sqlite.database import SqliteDatabase
    from statekeeper.storage.sqlite.store import Row, SqliteStore

__all__ = ["IN_MEMORY", "PIECE", "SpooledUpload", "read_pieces", "stream_pieces"]

#: Blobs are written and read this many bytes at a time (incremental blob I/O):
#: binding a whole state as a parameter makes SQLite copy it, and reading it
#: back as one value holds it twice.
PIECE = 1 << 20
#: An upload is kept in memory up to this size, then in a file beside the database;
#: a version up to this size is read whole. Below it a file and a connection of its
#: own cost more than the bytes they save (a 1 MB GET took 9 ms instead of 2).
IN_MEMORY = 8 << 20


def read_pieces(db: sqlite3.Connection, object_id: int) -> Iterator[bytes]:
    """The bytes of a version kept in object_pieces, in order (none: they are in its row)."""
    cursor = db.execute("SELECT data FROM object_pieces WHERE id = ? ORDER BY seq", (object_id,))
    while (row := cursor.fetchone()) is not None:
        yield bytes(row[0])


def stream_pieces(db: SqliteDatabase, conn: sqlite3.Connection, object_id: int) -> Iterator[bytes]:
    """The bytes of a version a piece at a time, on ``conn`` (its own), which it closes."""
    try:
        pieces = 0
        for piece in read_pieces(conn, object_id):
            pieces += 1
            yield piece
        if not pieces:
            # Kept in its row (written before object_pieces): a piece at a time.
            with conn.blobopen("objects", "data", object_id, readonly=True) as blob:
                while piece := blob.read(PIECE):
                    yield piece
    except sqlite3.Error as exc:
        raise failure(db.path, exc) from exc
    finally:
        conn.close()  # ends the read transaction


class SpooledUpload(Upload):
    """An upload kept in a temporary file beside the database (in memory while small),
    copied into the new version's blob in the transaction that stores it.

    The bytes arrive at the client's pace; a SQLite write transaction held that
    long would stop every other write to the file, so the transaction starts
    only when all of them are there and checked.

    An upload over a piece is compressed as it arrives (the stream
    :func:`~statekeeper.storage.codec.encode_stream` would write, decided on the
    bytes so far): the file then holds the pieces as they are stored, and the
    transaction only copies them, instead of writing the state to the file,
    reading it back and compressing it there.
    """

    def __init__(self, store: SqliteStore, key: str) -> None:
        super().__init__(key)
        self.store = store
        #: The bytes so far while they fit in one piece (most states): a list, not yet
        #: a spool (a SpooledTemporaryFile costs more than the copy it would save).
        self._small: list[bytes] = []
        self._spool: IO[bytes] | None = None
        self._stream: zstandard.ZstdCompressionObj | None = None
        # Whether the bytes in the file are encoded (the stream ended): the codec.
        self._packed: str | None = None

    def write(self, chunk: bytes) -> None:
        try:
            if self._spool is None:
                if self.size + len(chunk) <= PIECE:
                    self._small.append(chunk)
                else:
                    self._start_stream(chunk)
            elif self._stream is not None:
                self._spool.write(self._stream.compress(chunk))
            else:
                self._spool.write(chunk)
        except OSError as exc:
            raise failure(self.store.db.path, exc) from exc
        self.size += len(chunk)

    def _start_stream(self, chunk: bytes) -> None:
        """Past a piece: its first piece decides whether the stream is compressed."""
        import tempfile  # here: it costs a CLI's start-up, and only large writes need it

        self._spool = spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by abort()
            max_size=IN_MEMORY, dir=str(self.store.db.path.parent), prefix=".upload-"
        )
        so_far, self._small = b"".join(self._small), []
        started = codec.start_stream(so_far + chunk[:PIECE], self.store.compression)
        if started is None:
            spool.write(so_far)  # stored plain, as it comes
            spool.write(chunk)
            return
        self._stream, head = started
        spool.write(head)
        if len(chunk) > PIECE:
            spool.write(self._stream.compress(memoryview(chunk)[PIECE:]))

    def _data(self) -> Row | IO[bytes]:
        """The row's blob when the bytes fit in a row (most states), else the file."""
        if self._spool is None:
            return self.store.row(b"".join(self._small))
        if self._stream is not None:
            # Ended once: a write retried after a race stores the same file.
            self._spool.write(self._stream.flush())
            self._stream, self._packed = None, self.store.compression
        return self._spool

    def put(self, metadata: Mapping[str, str], then: Stored | None = None) -> ObjectInfo:
        data = self._data()

        def tx(db: sqlite3.Connection) -> ObjectInfo:
            info = self.store._insert(db, self.key, data, metadata, self.size, self._packed)
            return notify_stored(info, then)

        return self.store.db.run(tx, write=True, durable=True)

    def replace(
        self, metadata: Mapping[str, str], expected: ObjectInfo | None, then: Stored | None = None
    ) -> ObjectInfo:
        data = self._data()

        def tx(db: sqlite3.Connection) -> ObjectInfo:
            self.store._check_current(db, self.key, expected)
            info = self.store._insert(db, self.key, data, metadata, self.size, self._packed)
            return notify_stored(info, then)

        return self.store.db.run(tx, write=True, durable=True)

    def abort(self) -> None:
        if self._spool is not None:
            self._spool.close()

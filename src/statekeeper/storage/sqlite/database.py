"""The SQLite file under the embedded store: its schema, connections, and sync discipline.

WAL mode with ``synchronous=FULL``: each write is one transaction, committed
and synced before the call returns, so an acknowledged write survives
``kill -9`` of the server (and a power cut). Several processes may share the
file; ``BEGIN IMMEDIATE`` serialises writers and ``busy_timeout`` makes them
wait for each other instead of failing.

One request may commit several small transactions (an expired lock removed,
then the new lock with its audit record). Inside
:meth:`SqliteDatabase.syncing_once` those commits skip their own fsync and the
block ends with one fsync of the write-ahead log (``fdatasync``, as SQLite's own
commits sync it; "fsync" below is either), before the caller answers
anyone. WAL frames are appended in commit order and recovery
replays a prefix of them, so after a crash the database holds a prefix of the
commits and every commit of an answered request is in it. A commit whose
visibility must wait for its durability (a new state version, which another
client may read at once) passes ``durable=True`` and is synced on its own.
A ``run`` called from inside another's function on the same thread joins its
transaction (a savepoint): a state version's digest and audit record commit,
and are synced, with the version; a lock row's audit record with the lock.

Concurrent requests share those fsyncs (group commit). Every write commit of
this process gets a sequence number, in commit order (writes are serialised
by a lock of this process, so its threads queue on it in order instead of
polling SQLite's lock in ``busy_timeout``'s growing sleeps). An fsync of the
log covers every commit numbered before it began, so a request whose commits
are already covered by a finished fsync returns without one, and one whose
commits came before an fsync in progress waits for it; otherwise it syncs,
covering the others that wait.

A request whose work runs on the event loop's thread hands its block's fsync to
another (:func:`syncs_owed`): the block ends owing it, and the caller settles it on
a thread before it answers, so the loop never waits for the disk on its behalf.
"""

from __future__ import annotations

import errno
import os
import resource
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from pathlib import Path
from typing import TypeVar

from statekeeper.errors import BadRequest, ConfigError, StorageError, StorageFull, StoreNotFound
from statekeeper.storage.registry import DriverURL

__all__ = [
    "FORMAT",
    "SCHEMA",
    "WAL_SIZE_LIMIT",
    "Column",
    "OwedSyncs",
    "SqliteDatabase",
    "database_path",
    "failure",
    "like_literal",
    "like_prefix",
    "not_text",
    "syncs_owed",
    "wal_mode",
]

T = TypeVar("T")

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

#: Columns added to the store's tables since its first schema.
#: ``codec``: how the row's blob is encoded (NULL: the bytes as written), see codec.py.
_ADDED_COLUMNS = (("objects", "codec", "TEXT"),)


#: The data format this statekeeper writes, stamped in each database file it opens
#: (``PRAGMA user_version``; 0 in the files of releases before the stamp). A release
#: whose files an older one would misread raises it: the older one, opening a file
#: stamped past what it knows, refuses to start instead of serving what it cannot read
#: (a release from before zstd compression served a compressed version's bytes as the
#: state). Columns and tables an older release ignores need no new number.
FORMAT = 1


#: The size a write-ahead log is cut back to once a write took it past it
#: (``PRAGMA journal_size_limit``). Without it the ``-wal`` file keeps the size of the
#: largest transaction for ever (SQLite reuses the space but never gives it back), and
#: one large state leaves that much less room to the other files on the disk. SQLite
#: checkpoints the log at 1000 pages, so lock cycles and ordinary states keep it about
#: 4 MB: far below this, never cut and grown again. A version is one transaction, so
#: the log reaches its stored (compressed) size: states up to some 60 MB stored, a few
#: hundred MB of Terraform's JSON, reuse the space; a larger one gives the rest back.
WAL_SIZE_LIMIT = 64 << 20


def wal_mode(conn: sqlite3.Connection) -> None:
    """Put ``conn`` in WAL mode, its log cut back to :data:`WAL_SIZE_LIMIT` by the first
    commit after a checkpoint that copied it whole (SQLite cuts it only there, when the
    log starts again from its beginning; the limit is the connection's own, so every
    connection that writes sets it)."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")


#: The errnos of an ``OSError`` that mean there is no room for the bytes.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _no_room(cause: str, remedy: str) -> StorageFull:
    return StorageFull(
        f"{cause}: this change was not stored, and the states stored before it are intact "
        f"and can still be read. {remedy}, then retry; nothing needs repairing "
        "(docs/operations.md, 'Disk full')"
    )


def _file_size_limit() -> int | None:
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY else limit


def failure(path: Path, exc: sqlite3.Error | OSError) -> StorageError:
    """``exc`` from the database at ``path`` (or an upload's file beside it) as our
    error: no room for the bytes is StorageFull, which says what to do; the rest
    StorageError.

    SQLite reports ENOSPC as SQLITE_FULL, but EFBIG (a file past the process's
    ``ulimit -f``) only as a failed write: that is told apart by a limit being set.
    """
    free = f"Free space on the disk holding {path.parent}"
    if isinstance(exc, OSError):
        if exc.errno in _NO_ROOM:
            return _no_room(f"no room for an upload beside {path} ({exc.strerror})", free)
        return StorageError(f"cannot keep an upload beside {path}: {exc}")
    code = getattr(exc, "sqlite_errorcode", None)
    # SQLITE_FULL is ENOSPC; SQLITE_IOERR_WRITE any other errno of a write (EFBIG past
    # the file size limit, EDQUOT, EIO).
    if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
        return _no_room(f"the disk holding the SQLite database {path} is full ({exc})", free)
    limit = _file_size_limit()
    if code == sqlite3.SQLITE_IOERR_WRITE and limit is not None:
        return _no_room(
            f"a write to the SQLite database {path} failed ({exc}) with the server's file "
            f"size limit set (ulimit -f: {limit} bytes): a file reached it, or the disk is full",
            f"{free}, or restart the server with a higher limit (systemd: LimitFSIZE=)",
        )
    return StorageError(f"the SQLite database {path} failed: {exc}")


def not_text(exc: UnicodeEncodeError) -> BadRequest:
    """A value bound to a statement that UTF-8 cannot carry: a command line's bytes
    that are no UTF-8 arrive as lone surrogates, and only a caller's input holds them
    (what the database and JSON give back is text)."""
    return BadRequest(
        f"{exc.object!r} holds {exc.object[exc.start]!r}, bytes that are no UTF-8 text; "
        "type it as text"
    )


def like_literal(value: str) -> str:
    """``value`` in a LIKE pattern (``ESCAPE '\\'``) matching it as written: its ``%``
    and ``_`` are characters to find, not LIKE's wildcards."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_prefix(prefix: str) -> str:
    return like_literal(prefix) + "%"


#: A column added to a table since its first schema: (table, column, definition).
Column = tuple[str, str, str]


class SqliteDatabase:
    """One database file; a connection per thread, opened on first use. ``schema`` is
    made when missing, and ``columns`` added to its tables in place (``ALTER TABLE …
    ADD COLUMN``) when a database from before them is opened: by default the store's.
    With ``create=False`` a missing file is StoreNotFound, not a new empty database."""

    def __init__(
        self,
        path: Path,
        schema: str = SCHEMA,
        columns: tuple[Column, ...] = _ADDED_COLUMNS,
        *,
        create: bool = True,
    ) -> None:
        if not create and not path.is_file():
            raise StoreNotFound(f"there is no store at {path} (no such file)")
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        #: Held through each write transaction of this process (re-entrant: a write may
        #: be made inside another's function).
        self._writer = threading.RLock()
        #: The last write commit's number; every commit up to ``_synced`` is on disk; an
        #: fsync of the log is under way while ``_syncing``.
        self._committed = 0
        self._synced = 0
        self._syncing = False
        self._sync_done = threading.Condition(threading.Lock())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the directory for {path}: {exc}") from exc
        try:
            # Checked before anything is created or added: a newer file is left as it is.
            stamped = self._format()
            # executescript manages its own transaction.
            self._connection().executescript(schema)
            self._add_columns(columns)
            if stamped < FORMAT:
                self._connection().execute(f"PRAGMA user_version = {FORMAT}")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the SQLite database {path}: {exc}") from exc

    def _format(self) -> int:
        """The data format stamped in the file (0: none); a newer one than
        :data:`FORMAT` is a ConfigError naming what to do. Read on a connection of its
        own: this database's connections put the file in WAL mode as they open."""
        with closing(sqlite3.connect(self.path)) as conn:
            ((stamped,),) = conn.execute("PRAGMA user_version").fetchall()
        if stamped > FORMAT:
            raise ConfigError(
                f"the SQLite database {self.path} was written by a newer statekeeper "
                f"(data format {stamped}; this version reads format {FORMAT} and older): "
                "run that release or a later one, or restore the backup taken before the "
                "upgrade (docs/operations.md, 'Upgrades')"
            )
        return int(stamped)

    def _add_columns(self, columns: tuple[Column, ...]) -> None:
        conn = self._connection()
        for table, column, definition in columns:
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
        wal_mode(conn)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _thread(self) -> _Thread:
        """This thread's connection and transaction state, opened on first use."""
        mine: _Thread | None = getattr(self._local, "state", None)
        if mine is None:
            mine = _Thread(self.connect())
            self._local.state = mine
            with self._guard:
                self._all.append(mine.conn)
        return mine

    def _connection(self) -> sqlite3.Connection:
        return self._thread().conn

    @staticmethod
    def _synchronous(mine: _Thread, mode: str) -> None:
        if mine.synchronous != mode:
            mine.conn.execute(f"PRAGMA synchronous={mode}")
            mine.synchronous = mode

    def run(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        write: bool = False,
        durable: bool = False,
        atomic: bool = True,
    ) -> T:
        """Run ``fn`` in one transaction (``BEGIN IMMEDIATE`` for writes).

        A write is synced when it commits, unless it runs inside
        :meth:`syncing_once` without ``durable``: then the block's end syncs it.
        Called from inside another ``run``'s ``fn`` on this thread, it joins that
        transaction (see :meth:`_joined`). ``atomic=False``: joined, ``fn`` needs no
        savepoint of its own, as it makes one statement (SQLite undoes a statement
        that fails by itself) or catches its later statements' failures itself.
        """
        mine = self._thread()
        if mine.open is not None:
            return self._joined(mine, fn, write=write, savepoint=write and atomic)
        try:
            if not write:
                return _transaction(mine, "read", fn)
            deferred = not durable and mine.deferring > 0
            if not mine.relaxed:
                self._synchronous(mine, "NORMAL" if deferred else "FULL")
            with self._writer:
                result = _transaction(mine, "write", fn)
                self._committed += 1
                number = self._committed
        except sqlite3.Error as exc:
            raise failure(self.path, exc) from exc
        except UnicodeEncodeError as exc:
            raise not_text(exc) from exc
        if deferred:
            mine.unsynced = number
        elif not mine.relaxed:
            # A synced commit syncs the whole log, every commit before it included.
            with self._sync_done:
                self._synced = max(self._synced, number)
        return result

    def read_one(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn``'s one ``SELECT``, without a transaction of its own: SQLite reads a
        statement from one snapshot, so a ``BEGIN`` and ``COMMIT`` around it add
        nothing but two statements (each lets go of the GIL, a hand-over between
        busy threads). Inside a transaction open on this thread it reads in it.

        ``fn`` must make a single statement and read all of its rows (a statement
        left unfinished would hold its snapshot, and the log's checkpoint, open).
        """
        with self.reading() as conn:
            return fn(conn)

    def _joined(
        self,
        mine: _Thread,
        fn: Callable[[sqlite3.Connection], T],
        *,
        write: bool,
        savepoint: bool,
    ) -> T:
        """``fn`` inside the transaction this thread has open: committed (and synced) with
        it, or not at all. A savepoint around it undoes only its own writes when it
        raises, so the enclosing transaction can go on (a new state version and the
        audit record of its write commit together, see ``StateService.write``).
        """
        if write and mine.open != "write":
            raise AssertionError("a write joined a read transaction (it holds no write lock)")
        if not savepoint:
            # Nothing to undo as a whole (a read; a write of one statement): two
            # statements fewer.
            with self.reading() as conn:
                return fn(conn)
        conn = mine.conn
        try:
            conn.execute("SAVEPOINT joined")
            try:
                result = fn(conn)
            except BaseException:
                # An I/O error may have ended the whole transaction: then there is no
                # savepoint to return to, and the enclosing COMMIT fails in turn.
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO joined")
                    conn.execute("RELEASE joined")
                raise
            conn.execute("RELEASE joined")
        except sqlite3.Error as exc:
            raise failure(self.path, exc) from exc
        return result

    @property
    def writing(self) -> bool:
        """True inside a write ``run``'s ``fn`` on this thread (a further write joins it)."""
        mine: _Thread | None = getattr(self._local, "state", None)
        return mine is not None and mine.open == "write"

    def relax(self) -> None:
        """Commits on this thread's connection from now on wait for the log, not the
        disk: for writes that may be lost to a power cut (webhook delivery leases)."""
        mine = self._thread()
        self._synchronous(mine, "NORMAL")
        mine.relaxed = True

    def syncing_once(self) -> AbstractContextManager[None]:
        """Commits on this thread inside the block share one fsync, at its end.

        The block is one request's work: it ends before the request is answered,
        so what it committed is durable when the caller learns of it.
        """
        return _SyncingOnce(self, self._thread())

    def sync(self) -> None:
        """Make every commit so far durable (one fsync of the write-ahead log, or none
        when another thread's covers them)."""
        self._sync_through(self._committed)

    def _sync_through(self, number: int) -> None:
        """Return once the commits up to ``number`` are on disk: at once if an fsync
        that began after them has ended, after the one in progress if it began after
        them, else after an fsync of this thread's (which covers the waiting ones)."""
        with self._sync_done:
            while self._synced < number and self._syncing:
                self._sync_done.wait()
            if self._synced >= number:
                return
            # No fsync under way covers these commits: this thread makes one.
            self._syncing = True
            # Every commit numbered so far has written its frames: the fsync covers them.
            covered = self._committed
        synced = False
        try:
            self._fsync_log()
            synced = True
        finally:
            with self._sync_done:
                self._syncing = False
                if synced:
                    self._synced = max(self._synced, covered)
                # On failure a waiting thread makes its own attempt (and raises its own).
                self._sync_done.notify_all()

    def _fsync_log(self) -> None:
        """Sync the write-ahead log as SQLite itself does at a ``synchronous=FULL``
        commit: ``fdatasync`` (its bytes and its size, not its times, which no
        recovery reads; a little cheaper than ``fsync``); the log may have been
        checkpointed and removed meanwhile (then it was synced first)."""
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"cannot sync the SQLite log of {self.path}: {exc}") from exc
        try:
            if hasattr(os, "fdatasync"):
                os.fdatasync(fd)
            else:  # macOS has none; its fsync is the same promise
                os.fsync(fd)
        except OSError as exc:
            raise StorageError(f"cannot sync the SQLite log of {self.path}: {exc}") from exc
        finally:
            os.close(fd)

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise failure(self.path, exc) from exc
        except UnicodeEncodeError as exc:
            raise not_text(exc) from exc

    def probe(self) -> None:
        """``SELECT 1`` on this thread's connection: the file is open and readable."""
        self.run(lambda db: db.execute("SELECT 1").fetchone())

    def close(self) -> None:
        with self._guard:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


class _Thread:
    """One thread's connection to the database, and where its transactions stand."""

    __slots__ = ("conn", "deferring", "open", "relaxed", "synchronous", "unsynced")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        #: ``synchronous`` as last set on the connection.
        self.synchronous = "FULL"
        #: "read" or "write" inside a ``run``'s function (a further ``run`` joins it).
        self.open: str | None = None
        #: How many :meth:`SqliteDatabase.syncing_once` blocks are open on this thread.
        self.deferring = 0
        #: The last commit of those blocks not yet synced (0: none).
        self.unsynced = 0
        #: See :meth:`SqliteDatabase.relax`.
        self.relaxed = False


def _transaction(mine: _Thread, kind: str, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn`` in a new transaction on ``mine``'s connection (``kind``: read or write),
    committed, or rolled back if it raises."""
    conn = mine.conn
    conn.execute("BEGIN" if kind == "read" else "BEGIN IMMEDIATE")
    mine.open = kind
    try:
        result = fn(conn)
    except BaseException:
        # SQLite ends the transaction itself on some errors (a full disk, a file past
        # the size limit); a ROLLBACK then fails, and its error ("no transaction is
        # active") would hide the one that says what happened.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        mine.open = None
    conn.execute("COMMIT")
    return result


class OwedSyncs:
    """What the ``syncing_once`` blocks that ended inside :func:`syncs_owed` did not
    sync: each database's log, through the last commit of those blocks."""

    __slots__ = ("_through",)

    def __init__(self) -> None:
        self._through: dict[SqliteDatabase, int] = {}

    def __bool__(self) -> bool:
        return bool(self._through)

    def owe(self, db: SqliteDatabase, number: int) -> None:
        self._through[db] = max(self._through.get(db, 0), number)

    def settle(self) -> None:
        """Return once all of it is on disk (it blocks: call it off the event loop)."""
        for db, number in self._through.items():
            db._sync_through(number)


#: This thread's open :func:`syncs_owed` block, if any.
_owing = threading.local()


@contextmanager
def syncs_owed() -> Iterator[OwedSyncs]:
    """Inside the block, a ``syncing_once`` block ending on this thread owes its fsync
    to the one yielded instead of making it. For work on the event loop's thread: its
    caller settles what is owed on another thread before it answers anyone, so that
    what the work committed is durable when its caller learns of it, as before.
    """
    owed = OwedSyncs()
    _owing.syncs = owed
    try:
        yield owed
    finally:
        _owing.syncs = None


class _SyncingOnce:
    """:meth:`SqliteDatabase.syncing_once`'s block (a class: entered on every request)."""

    __slots__ = ("db", "mine")

    def __init__(self, db: SqliteDatabase, mine: _Thread) -> None:
        self.db = db
        self.mine = mine

    def __enter__(self) -> None:
        self.mine.deferring += 1

    def __exit__(self, *exc: object) -> None:
        mine = self.mine
        mine.deferring -= 1
        if mine.deferring == 0 and mine.unsynced:
            owed: OwedSyncs | None = getattr(_owing, "syncs", None)
            if owed is not None:
                owed.owe(self.db, mine.unsynced)
            else:
                self.db._sync_through(mine.unsynced)
            mine.unsynced = 0


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

"""Checkpoints of the SQLite write-ahead log, made by a thread of their own.

A commit appends its pages to the log (``statekeeper.db-wal``); a checkpoint
copies them into the database file, syncs it, and lets the next writer start
the log again from its beginning, so the log stays small. SQLite makes the
checkpoint itself by default: the commit that takes the log past 1000 pages
copies them all before it returns, so the request making it waits (some 3 ms
for a lock cycle's 100 KB states, with this process's write lock held and every
other writer of the process waiting behind it), a few times a second under
load, and those requests made up most of the latency tail.

Here the request connections turn that off (``wal_autocheckpoint=0``) and a
:class:`Checkpointer`, woken by the first commit after its last checkpoint,
waits :data:`EVERY` seconds for more to gather, then checkpoints on a connection
of its own (``PRAGMA wal_checkpoint(PASSIVE)``), which takes no write lock: the
process's writers go on committing meanwhile. The log stays bounded by what
is written in that while (plus the checkpoint's own time), as it was by
SQLite's 1000 pages.

Durability is untouched: a commit is durable once the log holds it and is
synced (as before); a checkpoint first syncs the log, copies, then syncs the
database before SQLite marks the pages copied, so the log is only reused once
what it held is safely in the database. Other processes on the same file (the
CLI, other servers) checkpoint the same way, or by SQLite's default if they
are older; SQLite lets one checkpoint run at a time and a ``PASSIVE`` one
gives way (``busy``) rather than wait. When the last connection to the file
closes (a graceful stop), SQLite checkpoints the log and removes it, as before.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

__all__ = ["BACKSTOP", "EVERY", "Checkpointer"]

log = logging.getLogger("statekeeper.storage")

#: Seconds a checkpoint waits after the first commit it will copy. A lock cycle's
#: writes (100 KB a cycle) bring about 4 MB to the log in that while, SQLite's own
#: 1000 pages.
EVERY = 0.2

#: Pages (of 4 KiB) in the log past which a commit checkpoints it itself, as SQLite
#: does by default past 1000: the bound on the log when writes come faster than the
#: thread copies them (or readers keep it from starting again), and the brake on
#: those writes. A lock cycle's log stays well under it.
BACKSTOP = 4000


class Checkpointer:
    """Checkpoints a database's log, off the path of the commits that fill it.

    Started by the first :meth:`nudge`; :meth:`stop` ends it (after the
    checkpoint under way, if any).
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        writers: AbstractContextManager[object],
        every: float = EVERY,
    ) -> None:
        self._connect = connect
        #: Held by this process's write transactions (see :meth:`_checkpoint`).
        self._writers = writers
        self._every = every
        #: Set by a commit since the last checkpoint began.
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        #: Checkpoints made (for tests and the curious).
        self.count = 0

    def nudge(self) -> None:
        """A commit was made: checkpoint within :data:`EVERY` seconds. Called after
        every write commit, so the common case (already nudged) is one attribute read."""
        if self._dirty.is_set():
            return
        self._dirty.set()
        if self._thread is None:
            with self._guard:
                if self._thread is None and not self._stopping.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="sqlite-checkpoints", daemon=True
                    )
                    self._thread.start()

    def stop(self) -> None:
        """End the thread (a later commit starts another: the database may be reopened)."""
        with self._guard:
            self._stopping.set()
            self._dirty.set()  # wakes the thread if it waits for a commit
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._guard:
            self._thread = None
            self._dirty.clear()
            self._stopping.clear()

    def _run(self) -> None:
        conn = self._connect()
        try:
            while True:
                self._dirty.wait()
                # Let the log gather a while's commits; stopping cuts the wait short.
                if self._stopping.wait(self._every):
                    return
                # Cleared before the checkpoint: a commit made during it wakes the next.
                self._dirty.clear()
                self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            busy, in_log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not busy and copied < in_log:
                # Commits went on while it copied. Under a steady stream of them the log
                # would never be copied whole, so never start again from its beginning,
                # and grow without bound: copy the rest (a few commits' pages, about a
                # millisecond) with this process's writers held back.
                with self._writers:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            # Nothing committed is lost: the log keeps it, and the next checkpoint (or
            # the last connection's close) copies it. A failing disk fails the writes
            # themselves, where it is reported to the client.
            log.warning("a checkpoint of the SQLite log failed (the next one retries): %s", exc)
            return
        self.count += 1

"""The inventory index: SQLite with FTS5, derived from the store and rebuildable.

It lives in its own SQLite file (``inventory.db`` in the data directory) for
every kind of store: the embedded store's database holds only what cannot be
rebuilt, and a replica on S3 keeps a local copy it can throw away. It is kept
current two ways:

- every accepted write, rollback, push, migration or delete is an event of the
  service layer; :meth:`Inventory.on_event` names that state to the index's queue
  (:mod:`statekeeper.inventory.queue`), whose thread re-reads it in the background,
  once for a burst of writes; every answer from the index waits for the states
  named before it, so a server's searches see its own writes;
- :meth:`Inventory.catch_up` lists the store and re-reads the states whose
  version ID or ETag changed (written by another replica, or by Terraform's own
  ``backend "s3"``) and drops the deleted ones. Every search and count first
  catches up when the last catch-up is older than ``inventory_refresh`` seconds,
  so an answer is never older than that bound.

A server calls :meth:`Inventory.start_build` when it opens the index: the first catch-up
(on a new replica, the whole build) then runs in the background, and until it
ends searches answer from what is indexed so far with :meth:`building`'s
progress, and listings come from the store.

Permissions are applied when answering: a search shows resources only of the
states the caller may ``read``.

A search holds the index (one connection behind a lock) while SQLite runs it, and a
few hundred characters of distinct prefix words (``a* al* alp* …``) each cost a
pass over what they match: its time is bounded (``time_limit``, the
``search_time_limit`` setting) by SQLite's progress handler, which stops the search
and lets go of the index; the caller is told to narrow it (:class:`SearchTooCostly`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statekeeper.errors import BadRequest, SearchTooCostly, StatekeeperError
from statekeeper.events import Action, Event
from statekeeper.inventory.extract import IndexedState, extract, marker
from statekeeper.inventory.query import parse_query
from statekeeper.inventory.queue import IndexQueue
from statekeeper.state.globs import parse_glob
from statekeeper.state.listing import StateSummary, Unaddressable, is_state_key
from statekeeper.state.version import StateVersion, version_from_info
from statekeeper.storage.base import ObjectInfo, ObjectStore
from statekeeper.storage.sqlite.database import like_literal, wal_mode
from statekeeper.terraform.names import StateName
from statekeeper.times import format_rfc3339, parse_rfc3339

__all__ = ["Building", "Hit", "Inventory", "StateFacts", "SyncReport"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS inv_states (
        name TEXT PRIMARY KEY, marker TEXT NOT NULL, version_id TEXT NOT NULL,
        serial INTEGER, terraform_version TEXT, encrypted INTEGER NOT NULL,
        resources INTEGER NOT NULL, size INTEGER NOT NULL, modified TEXT NOT NULL,
        actor TEXT)""",
    """CREATE TABLE IF NOT EXISTS inv_resources (
        id INTEGER PRIMARY KEY, state TEXT NOT NULL, address TEXT NOT NULL,
        mode TEXT NOT NULL, type TEXT NOT NULL, name TEXT NOT NULL, module TEXT NOT NULL,
        provider TEXT NOT NULL, instances INTEGER NOT NULL, text TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS inv_resources_state ON inv_resources(state)",
    "CREATE INDEX IF NOT EXISTS inv_resources_type ON inv_resources(type)",
    # Full-text over inv_resources without a second copy of the text (external content):
    # rows are added and removed with it explicitly, below.
    """CREATE VIRTUAL TABLE IF NOT EXISTS inv_fts USING fts5(
        address, type, module, provider, text, tokenize = 'unicode61',
        content = 'inv_resources', content_rowid = 'id')""",
)

log = logging.getLogger("statekeeper.inventory")

#: States larger than this are indexed from their metadata only (serial, lineage,
#: writer): parsing one for its resources holds several times its size in memory.
PARSE_LIMIT = 64 * 1024 * 1024

#: How long the index's thread lets writes gather before it re-reads the states they
#: changed (an answer from the index never waits for it: it wakes the thread). A state
#: written all the time is re-read and parsed once per delay: at 1 s, eight states
#: written in a loop cost ~0.7 ms of the server's CPU per lock cycle, at 5 s a fifth.
INDEX_DELAY = 5.0

#: Seconds one search may run over the index before it is stopped (0: no limit). The
#: bench's mix over 500,000 resources takes p95 6 ms (at most 0.2 s for a caller granted
#: one team in 50); 59 distinct prefix words matching every resource took 11-12 s,
#: holding the index, and every other search and update waited.
SEARCH_TIME_LIMIT = 1.0

#: SQLite virtual machine steps between two looks at the clock: about every 0.15 ms of
#: SQLite's work, a cost too small to measure. The full-text index's own merging of a
#: prefix's matches runs between steps, so a search may overrun its limit by one such
#: merge (tens of ms over 100,000 resources).
_CLOCK_STEPS = 1000

#: Events after which a state's bytes may have changed.
_CHANGES = {
    Action.WRITE,
    Action.PUSH,
    Action.ROLLBACK,
    Action.MIGRATE,
    Action.DELETE,
    Action.RESTORE,
}


@dataclass(frozen=True)
class Hit:
    state: str
    version_id: str
    serial: int | None
    terraform_version: str | None
    address: str
    mode: str
    type: str
    module: str
    provider: str
    instances: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class StateFacts:
    """What the index knows of a state's current version without reading it."""

    version_id: str
    serial: int | None
    terraform_version: str | None
    encrypted: bool
    #: Resource instances (``count``/``for_each`` expanded), as ``show`` counts them.
    resources: int
    actor: str | None


@dataclass(frozen=True)
class Building:
    """The first build under way: ``indexed`` states of ``states`` (None until the
    store's listing is in)."""

    indexed: int
    states: int | None


@dataclass(frozen=True)
class SyncReport:
    listed: int
    updated: int
    removed: int
    seconds: float


Allowed = Callable[[str], bool]


class Inventory:
    """The index of one store; thread-safe (one connection behind a lock)."""

    def __init__(
        self,
        path: Path,
        store: ObjectStore,
        refresh: float = 30.0,
        delay: float = INDEX_DELAY,
        *,
        time_limit: float = SEARCH_TIME_LIMIT,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.refresh = refresh
        self.time_limit = time_limit
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        wal_mode(self._conn)
        self._conn.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._synced_at: float | None = None
        self._sync = threading.Lock()  # one catch-up at a time
        self._closing = False
        #: Set by start_build: until the first catch-up ends, answer without waiting.
        self._answer_while_building = False
        #: (states indexed, states listed) while a catch-up runs.
        self._progress: tuple[int, int] | None = None
        #: States changed by this process's writes, indexed by a thread of their own.
        self.queue = IndexQueue(self.index_state, delay)
        #: The keys the last catch-up's listing left out: no state name (see listing).
        self._unaddressable = Unaddressable()

    def close(self) -> None:
        self.queue.close()  # what is queued is indexed first
        self._closing = True  # a background catch-up stops at its next batch
        with self._sync, self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- keeping it current -------------------------------------------------

    def _drop(self, conn: sqlite3.Connection, name: str) -> None:
        conn.execute(
            "INSERT INTO inv_fts (inv_fts, rowid, address, type, module, provider, text)"
            " SELECT 'delete', id, address, type, module, provider, text FROM inv_resources"
            " WHERE state = ?",
            (name,),
        )
        conn.execute("DELETE FROM inv_resources WHERE state = ?", (name,))
        conn.execute("DELETE FROM inv_states WHERE name = ?", (name,))

    def _put(
        self, conn: sqlite3.Connection, info: ObjectInfo, version: StateVersion, facts: IndexedState
    ) -> None:
        name = info.key
        self._drop(conn, name)
        conn.execute(
            "INSERT INTO inv_states VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                marker(info.version_id, info.etag),
                info.version_id,
                facts.serial,
                facts.terraform_version,
                int(facts.encrypted),
                len(facts.resources),
                info.size,
                # When it was written: a migrated version keeps its source's time.
                format_rfc3339(version.created),
                version.actor,
            ),
        )
        for r in facts.resources:
            cur = conn.execute(
                "INSERT INTO inv_resources (state, address, mode, type, name, module, provider,"
                " instances, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    r.address,
                    r.mode,
                    r.type,
                    r.name,
                    r.module,
                    r.provider,
                    r.instances,
                    r.text,
                ),
            )
            conn.execute(
                "INSERT INTO inv_fts (rowid, address, type, module, provider, text)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (cur.lastrowid, r.address, r.type, r.module, r.provider, r.text),
            )

    def _read(self, key: str) -> tuple[ObjectInfo, StateVersion, IndexedState] | None:
        opened = self.store.open(key)
        if opened is None:
            return None
        if opened.info.size > PARSE_LIMIT:
            # Its resources would cost several times its size to parse: listed with
            # the facts its metadata holds, and nothing to search in it.
            close = getattr(opened.chunks, "close", None)
            if close is not None:
                close()
            version = version_from_info(key, opened.info)
            log.info(
                "inventory: %s is %d bytes, over %d: indexed without its resources",
                key,
                opened.info.size,
                PARSE_LIMIT,
            )
            facts = IndexedState(serial=version.serial, lineage=version.lineage)
            return opened.info, version, facts
        data = b"".join(opened.chunks)
        try:
            facts = extract(data)
        except StatekeeperError:
            facts = IndexedState()  # not a readable state: listed, nothing to search
        return opened.info, version_from_info(key, opened.info, data), facts

    def index_state(self, name: str) -> None:
        """Re-read one state from the store (gone: drop it)."""
        read = self._read(name)
        with self._transaction() as conn:
            if read is None:
                self._drop(conn, name)
            else:
                self._put(conn, *read)

    def on_event(self, event: Event) -> None:
        """The event stream's subscriber: an accepted change queues its state for the
        index's thread (the request does not wait for the re-read)."""
        if event.outcome == "ok" and event.state and event.action in _CHANGES:
            self.queue.add(event.state)

    def catch_up(self, workers: int = 8) -> SyncReport:
        """List the store; re-read what changed since the index saw it; drop what is gone."""
        started = time.monotonic()
        with self._lock:
            known = dict(self._conn.execute("SELECT name, marker FROM inv_states").fetchall())
        left_out = Unaddressable()
        listed = {i.key: i for i in self.store.scan() if is_state_key(i.key, left_out)}
        changed = [k for k, i in listed.items() if known.get(k) != marker(i.version_id, i.etag)]
        gone = [k for k in known if k not in listed]
        self._progress = (len(listed) - len(changed), len(listed))
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                # Reads in parallel (S3 round trips), writes in batches on one connection.
                for start in range(0, len(changed), 200):
                    if self._closing:
                        break
                    batch = list(pool.map(self._read, changed[start : start + 200]))
                    with self._transaction() as conn:
                        for key, read in zip(changed[start : start + 200], batch, strict=True):
                            if read is None:
                                self._drop(conn, key)
                            else:
                                self._put(conn, *read)
                    self._progress = (self._progress[0] + len(batch), len(listed))
        finally:
            self._progress = None
        if self._closing:
            return SyncReport(len(listed), 0, 0, time.monotonic() - started)
        with self._transaction() as conn:
            for key in gone:
                self._drop(conn, key)
        self._unaddressable = left_out
        self._synced_at = time.monotonic()
        return SyncReport(len(listed), len(changed), len(gone), time.monotonic() - started)

    def _due(self) -> bool:
        return self._synced_at is None or time.monotonic() - self._synced_at >= self.refresh

    def start_build(self) -> None:
        """For a server: run the first catch-up (a new replica's whole build) in the
        background, and answer searches from what is indexed meanwhile."""
        self._answer_while_building = True
        self.refresh_soon()

    def building(self) -> Building | None:
        """The first build's progress while answers come from a partial index; None
        once it has ended (or when answers wait for it: no :meth:`start_build`)."""
        if not self._answer_while_building or self._synced_at is not None:
            return None
        progress = self._progress
        if progress is not None:
            return Building(*progress)
        with self._lock:
            (indexed,) = self._conn.execute("SELECT COUNT(*) FROM inv_states").fetchone()
        return Building(int(indexed), None)

    def indexed_states(self) -> list[str]:
        """The names of the states indexed, as they stand (no catch-up)."""
        with self._lock:
            return [name for (name,) in self._conn.execute("SELECT name FROM inv_states")]

    def _current(self) -> None:
        """Before an answer: this process's writes indexed, and a catch-up when due,
        unless the first build is under way in the background (then the answer is
        what is indexed so far)."""
        self.queue.settle()
        if self._answer_while_building and self._synced_at is None:
            self.refresh_soon()
            return
        self.fresh()

    def fresh(self) -> None:
        """Catch up when the last catch-up is older than the refresh bound."""
        if self._due():
            with self._sync:
                if self._due() and not self._closing:
                    self.catch_up()

    def refresh_soon(self) -> None:
        """Start a catch-up in the background when one is due and none is running
        (for pages that show what is indexed rather than wait for it)."""
        if self._due() and not self._sync.locked() and not self._closing:
            threading.Thread(
                target=self._background, name="inventory-catch-up", daemon=True
            ).start()

    def _background(self) -> None:
        try:
            self.fresh()
        except (StatekeeperError, sqlite3.Error) as exc:
            log.warning("the inventory could not catch up with the store: %s", exc)

    # -- answering ----------------------------------------------------------

    def search(self, text: str, allowed: Allowed, limit: int = 50) -> list[Hit]:
        """Resources matching ``text`` in the states ``allowed`` says the caller may read."""
        query = parse_query(text)
        if query.empty:
            raise BadRequest("search for something: a word, a phrase or type:… provider:…")
        self._current()
        where: list[str] = []
        params: list[Any] = []
        source = "inv_resources r"
        if query.match:
            source = "inv_fts f JOIN inv_resources r ON r.id = f.rowid"
            where.append("inv_fts MATCH ?")
            params.append(query.match)
        f = query.filters
        # With words to match, the full-text index leads: a unary + keeps SQLite from
        # starting at the (much less selective) type index instead.
        lead = "+" if query.match else ""
        # Every filter must match, each value of one given twice too.
        for column in ("type", "name", "mode"):
            for value in f.get(column, ()):
                where.append(f"{lead}r.{column} = ?")
                params.append(value)
        for column in ("provider", "module"):
            for value in f.get(column, ()):
                where.append(f"r.{column} LIKE ? ESCAPE '\\'")
                params.append(f"%{like_literal(value)}%")
        for value in f.get("terraform", ()):
            where.append("s.terraform_version LIKE ? ESCAPE '\\'")
            params.append(like_literal(value) + "%")
        state_globs = [parse_glob(g) for g in f.get("state", ())]
        sql = (
            "SELECT r.state, s.version_id, s.serial, s.terraform_version, r.address, r.mode,"
            f" r.type, r.module, r.provider, r.instances FROM {source}"
            " JOIN inv_states s ON s.name = r.state"
            + (" WHERE " + " AND ".join(where) if where else "")
        )
        hits: list[Hit] = []
        verdicts: dict[str, bool] = {}
        with self._lock, self._time_limited() as stopped:
            try:
                rows = self._conn.execute(sql, params)
                for row in rows:
                    state = row[0]
                    if state not in verdicts:
                        ok = allowed(state)
                        if ok and state_globs:
                            ok = all(g.covers(StateName(state)) for g in state_globs)
                        verdicts[state] = ok
                    if verdicts[state]:
                        hits.append(Hit(*row))
                        if len(hits) >= limit:
                            break
            except sqlite3.OperationalError as exc:
                if stopped():
                    raise SearchTooCostly(
                        f"the search {text!r} was stopped: it took more than the "
                        f"{self.time_limit:g} s a search may take (search_time_limit); narrow "
                        "it: whole words or longer prefixes instead of short ones (a*), fewer "
                        "words, or a filter such as type:aws_s3_bucket or state:team/**"
                    ) from exc
                raise BadRequest(f"the search {text!r} cannot be read: {exc}") from exc
        return hits

    @contextmanager
    def _time_limited(self) -> Iterator[Callable[[], bool]]:
        """Under the index's lock: the statements run in the block are interrupted once
        they have taken ``time_limit`` seconds (SQLite raises "interrupted"); yields
        whether that happened. The clock starts once the lock is held: waiting for
        another search is not this one's cost, and that one is bounded too."""
        over = False

        def stopped() -> bool:
            return over

        if not self.time_limit:
            yield stopped
            return
        deadline = time.monotonic() + self.time_limit

        def check() -> bool:
            nonlocal over
            over = time.monotonic() > deadline
            return over  # true: SQLite interrupts the statement

        self._conn.set_progress_handler(check, _CLOCK_STEPS)
        try:
            yield stopped
        finally:
            # The connection is shared: no other statement (an update, a count) is timed.
            self._conn.set_progress_handler(None, 0)

    def facts(self, names: list[str]) -> dict[str, StateFacts]:
        """The indexed facts of ``names`` (those it holds), without waiting for a catch-up
        (one is started in the background when due). The caller has already been allowed
        to list these states."""
        self.queue.settle()
        self.refresh_soon()
        out: dict[str, StateFacts] = {}
        with self._lock:
            for start in range(0, len(names), 500):
                chunk = names[start : start + 500]
                marks = ",".join("?" * len(chunk))
                # Resource instances, as a state's page and ``show`` count them (a
                # resource with count = 3 is three), not the resource blocks.
                rows = self._conn.execute(
                    "SELECT name, version_id, serial, terraform_version, encrypted,"
                    " (SELECT COALESCE(SUM(r.instances), 0) FROM inv_resources r"
                    "  WHERE r.state = s.name), actor"
                    f" FROM inv_states s WHERE name IN ({marks})",
                    chunk,
                )
                for name, vid, serial, tf, encrypted, resources, actor in rows:
                    out[name] = StateFacts(vid, serial, tf, bool(encrypted), resources, actor)
        return out

    def unaddressable(self, prefix: str = "") -> list[str]:
        """The keys under ``prefix`` the last catch-up left out: no state name, so
        neither indexed nor searched (see :class:`~statekeeper.state.listing.Unaddressable`)."""
        return [k for k in self._unaddressable.keys if k.startswith(prefix)]

    def summaries(
        self, prefix: str, *, wait: bool = True, unaddressable: Unaddressable | None = None
    ) -> list[StateSummary] | None:
        """Every indexed state under ``prefix`` as a listing of the store shows it (with the
        serial it read), after a catch-up when the last one is older than the bound: so a
        listing makes no request to the store while the index is fresh. The keys under
        ``prefix`` that listing left out are noted in ``unaddressable``.

        None (list the store instead) while the first build runs in the background, and
        with ``wait`` false whenever a catch-up is due (one is started in the background).
        """
        self.queue.settle()
        if self._answer_while_building and self._synced_at is None:
            self.refresh_soon()
            return None
        if not wait and self._due():
            self.refresh_soon()
            return None
        self.fresh()
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, size, modified, version_id, serial FROM inv_states"
                " WHERE substr(name, 1, ?) = ? ORDER BY name",
                (len(prefix), prefix),
            ).fetchall()
        if unaddressable is not None:
            for key in self.unaddressable(prefix):
                unaddressable.note(key)
        return [
            StateSummary(
                name=name,
                size=size,
                last_modified=parse_rfc3339(modified),
                version_id=vid,
                serial=serial,
                lineage=None,  # not indexed; a listing of S3 carries none either
                lock=None,
            )
            for name, size, modified, vid, serial in rows
        ]

    def counts(self, allowed: Allowed) -> dict[str, dict[str, int]]:
        """Resources by type and provider, states by Terraform version, over readable states."""
        self._current()
        with self._lock:
            states = self._conn.execute("SELECT name, terraform_version FROM inv_states").fetchall()
            readable = {name: tf for name, tf in states if allowed(name)}
            by_type: dict[str, int] = {}
            by_provider: dict[str, int] = {}
            rows = self._conn.execute(
                "SELECT state, type, provider, COUNT(*) FROM inv_resources"
                " GROUP BY state, type, provider"
            )
            for state, rtype, provider, n in rows:
                if state in readable:
                    by_type[rtype] = by_type.get(rtype, 0) + n
                    by_provider[provider] = by_provider.get(provider, 0) + n
        by_version: dict[str, int] = {}
        for tf in readable.values():
            key = tf or "unknown"
            by_version[key] = by_version.get(key, 0) + 1

        def ordered(d: dict[str, int]) -> dict[str, int]:
            return dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))

        return {
            "resource_types": ordered(by_type),
            "providers": ordered(by_provider),
            "terraform_versions": ordered(by_version),
        }

"""The two storage interfaces every driver implements: ObjectStore and LockTable.

Drivers are dumb: they move bytes and lock records, and translate their
vendor's exceptions into :mod:`statekeeper.errors`. Every Terraform rule
(fencing, serial/lineage, digests after writes) lives in ``services``.

Optional abilities are capability flags read by services and the CLI, never
discovered by catching ``NotImplementedError``.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from statekeeper.errors import (
    CapabilityMissing,
    LockMismatch,
    LockNotFound,
    StateNotFound,
    VersionNotFound,
    WriteRace,
)
from statekeeper.terraform.lockinfo import LockInfo

if TYPE_CHECKING:
    from statekeeper.storage.sqlite.database import SqliteDatabase

__all__ = [
    "PROBE_KEY",
    "BufferedUpload",
    "Changed",
    "DeletedState",
    "LockTable",
    "ObjectInfo",
    "ObjectStore",
    "ObjectStream",
    "RecordSpace",
    "Stored",
    "StoredObject",
    "Upload",
    "WithPrevious",
    "deleted_again",
    "notify_stored",
    "written_since",
]

#: What the default probes read: '!' cannot appear in a state name.
PROBE_KEY = "statekeeper!/probe"


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one version of an object, without its bytes."""

    key: str
    version_id: str
    size: int
    last_modified: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)
    is_latest: bool = True
    # Listings may not carry metadata (S3 ListObjectVersions does not).
    has_metadata: bool = True
    #: The backend's entity tag where it has one (S3), for conditional writes.
    etag: str | None = None


@dataclass(frozen=True)
class StoredObject:
    info: ObjectInfo
    data: bytes


@dataclass(frozen=True)
class WithPrevious:
    """A version's bytes, the ID of the version written just before it (None: it is the
    first) and that one's bytes (None: the caller has them, or there is none)."""

    data: bytes
    previous: str | None
    previous_data: bytes | None


@dataclass(frozen=True)
class DeletedState:
    """A state whose current version was deleted while its versions were kept (the trash)."""

    key: str
    #: When it was deleted (the S3 delete marker's time).
    deleted: datetime
    #: The version that was current before the delete: what a restore brings back.
    version_id: str
    size: int


def deleted_again(key: str, seen: datetime) -> WriteRace:
    """A purge's refusal: ``key`` was written and deleted again after the deletion seen."""
    return WriteRace(
        f"{key!r} was written and deleted again since its deletion at {seen.isoformat()}; "
        "the newer deletion stays in the trash ('statekeeper trash list')"
    )


def written_since(key: str, version_id: str, current: str) -> WriteRace:
    """A version removal's refusal: ``current`` is no longer the current version of ``key``."""
    return WriteRace(
        f"{key!r} was written or deleted since its versions were read (version {current} "
        f"is no longer current): version {version_id} stays; read the versions again"
    )


@dataclass(frozen=True)
class ObjectStream:
    """One version's facts and its bytes as an iterator of chunks (read once).

    The iterator holds what the store needs to read on (a SQLite read
    transaction): consume it, or ``close()`` it.
    """

    info: ObjectInfo
    chunks: Iterator[bytes]


#: Called with a new version's facts as an upload stores it (see :class:`Upload`).
Stored = Callable[[ObjectInfo], None]


#: Called once a lock is taken or released (see :meth:`LockTable.acquire_then`).
Changed = Callable[[], None]


def notify_stored(info: ObjectInfo, then: Stored | None) -> ObjectInfo:
    """``info``, once ``then`` (if any) was told of it: an upload's last step."""
    if then is not None:
        then(info)
    return info


class Upload(ABC):
    """The bytes of one new version, handed over as they arrive, stored once checked.

    ``ObjectStore.upload(key)`` returns one; feed it with :meth:`write`, then
    either :meth:`put` or :meth:`replace` (as on the store) or :meth:`abort`.
    Nothing is visible under the key before the put or replace, and nothing
    at all after an abort. Used as a context manager, leaving the block
    without a put or replace aborts.

    ``then``, given to :meth:`put` or :meth:`replace`, is called with the new
    version's facts once it is written: inside the transaction that stores it
    where the store has one (SQLite), so that what ``then`` writes to the same
    database commits with the version or not at all; right after the put
    elsewhere. An exception from ``then`` fails the put (and undoes it where
    it runs inside the transaction).
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.size = 0

    @abstractmethod
    def write(self, chunk: bytes) -> None:
        """The next bytes of the version."""

    @abstractmethod
    def put(self, metadata: Mapping[str, str], then: Stored | None = None) -> ObjectInfo:
        """Store what was written, like :meth:`ObjectStore.put`."""

    @abstractmethod
    def replace(
        self, metadata: Mapping[str, str], expected: ObjectInfo | None, then: Stored | None = None
    ) -> ObjectInfo:
        """Store what was written, like :meth:`ObjectStore.replace` (may raise WriteRace
        and be called again)."""

    @abstractmethod
    def abort(self) -> None:
        """Forget what was written; the upload is not used afterwards."""

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class BufferedUpload(Upload):
    """The default: the bytes gathered in memory, then the store's own put or replace."""

    def __init__(self, store: ObjectStore, key: str) -> None:
        super().__init__(key)
        self.store = store
        # One growing buffer whose getvalue() hands it over without a copy.
        self._buffer: io.BytesIO | None = io.BytesIO()

    def _data(self) -> bytes:
        if self._buffer is None:
            raise ValueError(f"the upload to {self.key!r} was aborted")
        return self._buffer.getvalue()

    def write(self, chunk: bytes) -> None:
        if self._buffer is None:
            raise ValueError(f"the upload to {self.key!r} was aborted")
        self._buffer.write(chunk)
        self.size += len(chunk)

    def put(self, metadata: Mapping[str, str], then: Stored | None = None) -> ObjectInfo:
        return notify_stored(self.store.put(self.key, self._data(), metadata), then)

    def replace(
        self, metadata: Mapping[str, str], expected: ObjectInfo | None, then: Stored | None = None
    ) -> ObjectInfo:
        return notify_stored(self.store.replace(self.key, self._data(), metadata, expected), then)

    def abort(self) -> None:
        self._buffer = None


@dataclass(frozen=True)
class RecordSpace:
    """Where statekeeper keeps its own records beside a store's states.

    The audit trail, the API tokens and the encryption key ring are tables of
    the embedded ``database`` when the store has one, else JSON objects under
    ``statekeeper!/`` in ``objects``: the store itself, never an encrypting
    wrapper (the key ring cannot be sealed with the keys it holds, and the
    audit trail must stay readable without them).
    """

    objects: ObjectStore
    database: SqliteDatabase | None = None


class ObjectStore(ABC):
    """Bytes under keys, with a version history where the backend keeps one.

    Keys are state names; a store with a prefix adds it internally.
    """

    #: The URL scheme this driver serves.
    scheme: str = ""
    #: Every put keeps the previous bytes as an older version.
    supports_versions: bool = False
    #: ``put_if_absent`` is honoured atomically by the backend.
    supports_conditional_put: bool = False
    #: ``replace`` is honoured atomically by the backend.
    supports_compare_and_swap: bool = False
    #: Single versions can be removed and a deleted state brought back:
    #: :meth:`delete_version`, :meth:`deleted`, :meth:`undelete`, :meth:`purge`.
    supports_history_edits: bool = False
    #: ``scan`` is remote requests (S3: one per 1,000 keys), so the operator's state
    #: listing is answered from the inventory index while that is fresh.
    costly_listing: bool = False

    @property
    @abstractmethod
    def lock_namespace(self) -> str:
        """The prefix of DynamoDB LockIDs for this store (the bucket name)."""

    def full_key(self, key: str) -> str:
        """The key as the backend sees it (with any prefix), as Terraform names it."""
        return key

    @property
    def records(self) -> RecordSpace:
        """Where the audit trail, tokens and key ring of this store live."""
        return RecordSpace(self)

    @property
    def history_warning(self) -> str | None:
        """Why a store without ``supports_versions`` keeps no history and what to do, if known."""
        return None

    @abstractmethod
    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> ObjectInfo:
        """Store ``data`` as the current version of ``key``; durable on return."""

    @abstractmethod
    def get(self, key: str, version_id: str | None = None) -> StoredObject | None:
        """The current (or a given) version, or None when there is none.

        Raises :class:`~statekeeper.errors.VersionNotFound` for an unknown
        ``version_id``.
        """

    @abstractmethod
    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        """Like :meth:`get` without the bytes."""

    def upload(self, key: str) -> Upload:
        """A new version of ``key`` written as its bytes arrive (see :class:`Upload`).

        This default gathers the bytes in memory; a driver that can store them
        as they come (SQLite) overrides it.
        """
        return BufferedUpload(self, key)

    def open(self, key: str, version_id: str | None = None) -> ObjectStream | None:
        """Like :meth:`get`, with the bytes as chunks; a driver that can read them
        piece by piece (SQLite) overrides this default, which reads them whole."""
        obj = self.get(key, version_id)
        return None if obj is None else ObjectStream(obj.info, iter((obj.data,)))

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the current version (a versioned store keeps the history)."""

    @abstractmethod
    def scan(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Current objects whose key starts with ``prefix``, in key order."""

    def versions(self, key: str) -> list[ObjectInfo]:
        """Every version of ``key``, newest first (needs ``supports_versions``)."""
        raise CapabilityMissing(f"the {self.scheme} store keeps no version history")

    def version_before(self, key: str, version_id: str) -> str | None:
        """The ID of the version written just before ``version_id`` (None: it is the first).

        Needs ``supports_versions``; drivers with an index answer without listing.
        """
        ids = [v.version_id for v in self.versions(key)]
        if version_id not in ids:
            raise VersionNotFound(f"state {key!r} has no version {version_id!r}")
        at = ids.index(version_id)
        return ids[at + 1] if at + 1 < len(ids) else None

    def count_newer(self, key: str, version_id: str | None, up_to: int) -> int:
        """How many versions of ``key`` were written after ``version_id`` (None: all of
        them), counted up to ``up_to``.

        Needs ``supports_versions``. When ``version_id`` is gone (pruned) this default
        counts every version listed: its answer may be more than the truth, never
        less. A driver with an index counts in one read, without listing.
        """
        count = 0
        for version in self.versions(key):
            if count >= up_to or version.version_id == version_id:
                break
            count += 1
        return count

    def with_previous(self, key: str, version_id: str, known: str | None = None) -> WithPrevious:
        """The bytes of ``version_id`` and of the version before it, unless that one is
        ``known`` (the caller holds its bytes): what a ``state.written`` webhook compares.

        Needs ``supports_versions``; raises :class:`~statekeeper.errors.VersionNotFound`
        when either version is gone. A driver with a database reads both in one
        transaction and the bytes alone; this default is three reads.
        """
        previous = self.version_before(key, version_id)
        obj = self.get(key, version_id)
        if obj is None:
            raise VersionNotFound(f"state {key!r} has no version {version_id!r}")
        if previous is None or previous == known:
            return WithPrevious(obj.data, previous, None)
        before = self.get(key, previous)
        if before is None:
            raise VersionNotFound(f"state {key!r} has no version {previous!r}")
        return WithPrevious(obj.data, previous, before.data)

    def delete_version(self, key: str, version_id: str, current: str | None = None) -> None:
        """Remove one version for good; never the current one (StorageError if it is).

        With ``current``, only while that is still the current version: WriteRace when
        another was written since (a rollback may have named this one as the version it
        restored), checked in the removal's own transaction where the store has them.
        Needs ``supports_history_edits``. Raises VersionNotFound for an unknown version.
        """
        raise CapabilityMissing(f"the {self.scheme} store cannot remove single versions")

    def deleted(self, prefix: str = "") -> Iterator[DeletedState]:
        """States whose key starts with ``prefix`` that were deleted and can be restored."""
        raise CapabilityMissing(f"the {self.scheme} store keeps no deleted states")

    def undelete(self, key: str) -> ObjectInfo:
        """Make the version current before the delete current again, and return it.

        Raises StateNotFound when ``key`` is not a deleted state (it is current,
        or never existed, or was purged).
        """
        raise CapabilityMissing(f"the {self.scheme} store keeps no deleted states")

    def purge(self, key: str, deleted: datetime | None = None) -> int:
        """Remove every version of the deleted state ``key``; how many were removed.

        With ``deleted`` (the time a listing of :meth:`deleted` saw), only that deletion:
        WriteRace when the state was written and deleted again since (its deletion is
        newer), checked in the purge's own transaction where the store has them.
        Raises StateNotFound when ``key`` is not a deleted state.
        """
        raise CapabilityMissing(f"the {self.scheme} store keeps no deleted states")

    def erase(self, key: str) -> None:
        """Remove ``key`` for good, with every version the store keeps of it.

        For statekeeper's own records (an expired sign-out), which no one restores:
        a record's removal that left its versions behind would grow the store for
        ever. This default deletes, then purges where the store can; a versioned
        bucket overrides it to remove the versions without a delete marker between.
        """
        self.delete(key)
        if self.supports_history_edits:
            try:
                self.purge(key)
            except StateNotFound:
                pass  # another process erased it (or wrote it again) since the delete

    def put_if_absent(self, key: str, data: bytes, metadata: Mapping[str, str]) -> bool:
        """Create ``key`` only if it does not exist; False when it does."""
        raise CapabilityMissing(f"the {self.scheme} store has no conditional writes")

    def replace(
        self, key: str, data: bytes, metadata: Mapping[str, str], expected: ObjectInfo | None
    ) -> ObjectInfo:
        """Put ``data`` only if the current version is still ``expected`` (None: no object).

        Raises :class:`~statekeeper.errors.WriteRace` when another write got there
        first. Needs ``supports_compare_and_swap``; this is what keeps two server
        processes on one store from both accepting a write of the same serial.
        """
        raise CapabilityMissing(f"the {self.scheme} store has no compare-and-swap writes")

    def probe(self) -> None:
        """Raise :class:`~statekeeper.errors.StorageError` unless the backend answers now.

        The readiness check (``/readyz``) calls it: one cheap request, no state
        read. Drivers override it with their cheapest call; this default reads a
        key no state can have.
        """
        self.head(PROBE_KEY)

    def close(self) -> None:  # noqa: B027 - optional hook, most drivers hold nothing
        """Release connections; the store is not used afterwards."""


class LockTable(ABC):
    """Locks on state keys, acquired with a conditional write, plus state digests."""

    scheme: str = ""
    #: The table keeps the MD5 digest item Terraform's S3 backend checks.
    keeps_digests: bool = False
    #: :meth:`release_exactly` is one conditional request, and :meth:`mark_shared`
    #: marks a lock for it (DynamoDB).
    releases_exactly: bool = False
    #: The ``then`` of :meth:`acquire_then`, :meth:`release_then` and
    #: :meth:`delete_if_held_by_then` runs inside the change's own transaction
    #: (SQLite): what it writes commits with the change or not at all.
    then_in_transaction: bool = False

    @abstractmethod
    def acquire(self, key: str, lock: LockInfo) -> None:
        """Take the lock or raise :class:`~statekeeper.errors.LockConflict` with the holder."""

    @abstractmethod
    def read(self, key: str) -> LockInfo | None:
        """The current holder of ``key``'s lock, or None."""

    @abstractmethod
    def delete_if_held_by(self, key: str, lock_id: str) -> bool:
        """Delete the lock only if its ID is ``lock_id``; False if it was not."""

    @abstractmethod
    def scan(self, prefix: str = "") -> Iterator[tuple[str, LockInfo]]:
        """Every held lock whose state key starts with ``prefix``."""

    def release_exactly(self, key: str, lock: LockInfo) -> bool:
        """Delete ``key``'s lock only if it is ``lock`` as this table was given it (its
        body and its taker) and no shared holds were marked on it
        (:meth:`mark_shared`), checked and done as one atomic step. False when it is
        not so: nothing changed, and the caller reads the lock to learn why.

        Needs ``releases_exactly``.
        """
        raise CapabilityMissing(f"the {self.scheme} lock table has no conditional release")

    def acquire_then(self, key: str, lock: LockInfo, then: Changed) -> None:
        """:meth:`acquire`, and ``then()`` once the lock is taken: inside the transaction
        that takes it where the table has one (SQLite), so that what ``then`` writes to
        the same database (the LOCK's audit record) commits with the lock or not at
        all; right after elsewhere (this default). An exception from ``then`` fails
        the acquire (and undoes it where it runs inside the transaction).
        """
        self.acquire(key, lock)
        then()

    def release_then(
        self, key: str, lock_id: str, then: Changed, *, read: LockInfo | None = None
    ) -> LockInfo:
        """:meth:`release`, and ``then()`` once the lock is released, as for
        :meth:`acquire_then`: in the release's own transaction where the table has one."""
        released = self.release(key, lock_id, read=read)
        then()
        return released

    def delete_if_held_by_then(self, key: str, lock_id: str, then: Changed) -> bool:
        """:meth:`delete_if_held_by`, and ``then()`` once the lock is deleted (not when
        it was not ``lock_id``'s), as for :meth:`acquire_then`: in the delete's own
        transaction where the table has one; right after elsewhere (this default)."""
        if not self.delete_if_held_by(key, lock_id):
            return False
        then()
        return True

    def mark_shared(self, key: str) -> bool:
        """Mark the lock held on ``key`` as having shared holds beside it, so that
        :meth:`release_exactly` refuses it; False when no lock is held.

        A table without ``releases_exactly`` keeps no mark (every release there
        reads whether holds exist); this default only says whether a lock is held.
        """
        return self.read(key) is not None

    def get_digest(self, key: str) -> str | None:
        """The hex MD5 recorded for the current state, if the table keeps digests."""
        return None

    def put_digest(self, key: str, md5_hex: str) -> None:  # noqa: B027 - no-op by default
        """Record the hex MD5 of the state just written."""

    def delete_digest(self, key: str) -> None:  # noqa: B027 - no-op by default
        """Forget the digest (the state was deleted)."""

    def probe(self) -> None:
        """Raise :class:`~statekeeper.errors.StorageError` unless the table answers now.

        Like :meth:`ObjectStore.probe`; this default reads a lock no state can have.
        """
        self.read(PROBE_KEY)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def parts(self) -> list[LockTable]:
        """The individual tables behind this one (two for Terraform's transition mode)."""
        return [self]

    # Derived conveniences, built on the primitives above.

    def release(self, key: str, lock_id: str, *, read: LockInfo | None = None) -> LockInfo:
        """Release a lock held under ``lock_id``; the released lock is returned.

        Raises LockNotFound when nothing is held and LockMismatch (carrying the
        holder) when the lock is someone else's. ``read``: the holder the caller
        has just read, which then is not read again (the delete still happens
        only if the lock is unchanged).
        """
        holder = read if read is not None else self.read(key)
        if holder is None:
            raise LockNotFound(f"no lock is held on {key!r}; nothing to unlock")
        if holder.id != lock_id:
            raise LockMismatch(holder, lock_id)
        if not self.delete_if_held_by(key, lock_id):
            # Released or replaced between the read and the delete.
            now = self.read(key)
            if now is None:
                raise LockNotFound(f"no lock is held on {key!r}; nothing to unlock")
            raise LockMismatch(now, lock_id)
        return holder

    def force_release(self, key: str) -> LockInfo | None:
        """Remove whatever lock is held; the removed lock, or None if none was."""
        holder = self.read(key)
        if holder is None:
            return None
        if self.delete_if_held_by(key, holder.id):
            return holder
        return self.force_release(key)

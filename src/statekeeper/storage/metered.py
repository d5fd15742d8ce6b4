"""Timing at the storage boundary: a store and a lock table that report every call.

:class:`MeteredStore` and :class:`MeteredLocks` are a store and a lock table
like any other: they wrap one, forward every call, and tell a
:class:`StorageObserver` how long each call took and how it ended. The
services never know they are there, and the drivers stay dumb. What the
observer does with the figures (Prometheus histograms) is not storage's
business, so nothing here imports a metrics library.

Only failures of the backend count as errors (:class:`~statekeeper.errors.StorageError`
and anything unexpected): a lock conflict or a lost compare-and-swap is the
table doing its job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from time import perf_counter
from typing import ParamSpec, Protocol, TypeVar

from statekeeper.errors import StatekeeperError, StorageError
from statekeeper.storage.base import (
    Changed,
    DeletedState,
    LockTable,
    ObjectInfo,
    ObjectStore,
    ObjectStream,
    RecordSpace,
    Stored,
    StoredObject,
    Upload,
    WithPrevious,
)
from statekeeper.terraform.lockinfo import LockInfo

__all__ = ["MeteredLocks", "MeteredStore", "StorageObserver"]

T = TypeVar("T")
P = ParamSpec("P")

#: statekeeper's own objects (audit batches, key ring, outbox) are not states.
_RESERVED = "statekeeper!/"


class StorageObserver(Protocol):
    def storage_timer(self, driver: str, operation: str) -> Callable[[float], None]:
        """What takes the seconds of each successful call of ``operation`` on ``driver``."""
        ...

    def storage_call(self, driver: str, operation: str, seconds: float, error: str | None) -> None:
        """One call to ``driver`` took ``seconds``; ``error`` is the error code, if it failed."""
        ...

    def state_stored(self, size: int) -> None:
        """A state version of ``size`` bytes (as stored) was written."""
        ...


def _error(exc: BaseException) -> str | None:
    if isinstance(exc, StorageError):
        return exc.code
    if isinstance(exc, StatekeeperError):
        return None  # an answer, not a failure: conflict, race, unknown version
    return "internal"


class _Timers(dict[str, Callable[[float], None]]):
    """Each operation's timer, asked of the observer on the operation's first call."""

    def __init__(self, driver: str, observer: StorageObserver) -> None:
        super().__init__()
        self.driver = driver
        self.observer = observer

    def __missing__(self, operation: str) -> Callable[[float], None]:
        timer = self[operation] = self.observer.storage_timer(self.driver, operation)
        return timer


class _Meter:
    """Times calls to one driver: a clock read before and after, and the operation's
    timer (looked up once) given the difference. Every request makes several calls,
    so the path is kept to that: no closure, no context manager, no label lookup."""

    def __init__(self, driver: str, observer: StorageObserver) -> None:
        self.driver = driver
        self.observer = observer
        self.timers = _Timers(driver, observer)

    def __call__(
        self, operation: str, call: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        start = perf_counter()
        try:
            result = call(*args, **kwargs)
        except BaseException as exc:
            self.failed(operation, start, exc)
            raise
        self.timers[operation](perf_counter() - start)
        return result

    def failed(self, operation: str, start: float, exc: BaseException) -> None:
        seconds = perf_counter() - start
        self.observer.storage_call(self.driver, operation, seconds, _error(exc))

    def iterate(self, operation: str, items: Iterator[T]) -> Iterator[T]:
        """A listing is one call from its first page to its last."""
        start = perf_counter()
        try:
            yield from items
        except BaseException as exc:
            self.failed(operation, start, exc)
            raise
        self.timers[operation](perf_counter() - start)


class MeteredStore(ObjectStore):
    """``inner`` with every call timed; capabilities and layout are ``inner``'s."""

    def __init__(self, inner: ObjectStore, observer: StorageObserver) -> None:
        self.inner = inner
        self.observer = observer
        self.scheme = inner.scheme
        self.supports_versions = inner.supports_versions
        self.supports_conditional_put = inner.supports_conditional_put
        self.supports_compare_and_swap = inner.supports_compare_and_swap
        self.supports_history_edits = inner.supports_history_edits
        self.costly_listing = inner.costly_listing
        self._meter = _Meter(inner.scheme, observer)

    @property
    def lock_namespace(self) -> str:
        return self.inner.lock_namespace

    def full_key(self, key: str) -> str:
        return self.inner.full_key(key)

    @property
    def records(self) -> RecordSpace:
        return self.inner.records

    @property
    def history_warning(self) -> str | None:
        return self.inner.history_warning

    def _stored(self, key: str, data: bytes) -> None:
        self._stored_size(key, len(data))

    def _stored_size(self, key: str, size: int) -> None:
        if not key.startswith(_RESERVED):
            self.observer.state_stored(size)

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> ObjectInfo:
        info = self._meter("put", self.inner.put, key, data, metadata)
        self._stored(key, data)
        return info

    def put_if_absent(self, key: str, data: bytes, metadata: Mapping[str, str]) -> bool:
        created = self._meter("put_if_absent", self.inner.put_if_absent, key, data, metadata)
        if created:
            self._stored(key, data)
        return created

    def replace(
        self, key: str, data: bytes, metadata: Mapping[str, str], expected: ObjectInfo | None
    ) -> ObjectInfo:
        info = self._meter("replace", self.inner.replace, key, data, metadata, expected)
        self._stored(key, data)
        return info

    def get(self, key: str, version_id: str | None = None) -> StoredObject | None:
        return self._meter("get", self.inner.get, key, version_id)

    def upload(self, key: str) -> Upload:
        return _MeteredUpload(self, self.inner.upload(key))

    def open(self, key: str, version_id: str | None = None) -> ObjectStream | None:
        # Timed to the first byte: the rest is the client's pace.
        return self._meter("get", self.inner.open, key, version_id)

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        return self._meter("head", self.inner.head, key, version_id)

    def delete(self, key: str) -> None:
        self._meter("delete", self.inner.delete, key)

    def scan(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self._meter.iterate("scan", self.inner.scan(prefix))

    def versions(self, key: str) -> list[ObjectInfo]:
        return self._meter("versions", self.inner.versions, key)

    def version_before(self, key: str, version_id: str) -> str | None:
        return self._meter("version_before", self.inner.version_before, key, version_id)

    def count_newer(self, key: str, version_id: str | None, up_to: int) -> int:
        return self._meter("count_newer", self.inner.count_newer, key, version_id, up_to)

    def with_previous(self, key: str, version_id: str, known: str | None = None) -> WithPrevious:
        return self._meter("with_previous", self.inner.with_previous, key, version_id, known)

    def delete_version(self, key: str, version_id: str, current: str | None = None) -> None:
        self._meter("delete_version", self.inner.delete_version, key, version_id, current)

    def deleted(self, prefix: str = "") -> Iterator[DeletedState]:
        return self._meter.iterate("deleted", self.inner.deleted(prefix))

    def undelete(self, key: str) -> ObjectInfo:
        return self._meter("undelete", self.inner.undelete, key)

    def purge(self, key: str, deleted: datetime | None = None) -> int:
        return self._meter("purge", self.inner.purge, key, deleted)

    def erase(self, key: str) -> None:
        self._meter("erase", self.inner.erase, key)

    def probe(self) -> None:
        self._meter("probe", self.inner.probe)

    def close(self) -> None:
        self.inner.close()


class _MeteredUpload(Upload):
    """The inner store's upload; its put or replace timed as the store's."""

    def __init__(self, store: MeteredStore, inner: Upload) -> None:
        super().__init__(inner.key)
        self.store = store
        self.inner = inner

    def write(self, chunk: bytes) -> None:
        self.inner.write(chunk)
        self.size = self.inner.size

    def put(self, metadata: Mapping[str, str], then: Stored | None = None) -> ObjectInfo:
        info = self.store._meter("put", self.inner.put, metadata, then)
        self.store._stored_size(self.key, self.size)
        return info

    def replace(
        self, metadata: Mapping[str, str], expected: ObjectInfo | None, then: Stored | None = None
    ) -> ObjectInfo:
        info = self.store._meter("replace", self.inner.replace, metadata, expected, then)
        self.store._stored_size(self.key, self.size)
        return info

    def abort(self) -> None:
        self.inner.abort()


class MeteredLocks(LockTable):
    """``inner`` with every call timed; a dual table is timed as one (its ``scheme``
    names both kinds)."""

    def __init__(self, inner: LockTable, observer: StorageObserver) -> None:
        self.inner = inner
        self.scheme = inner.scheme
        self.keeps_digests = inner.keeps_digests
        self.releases_exactly = inner.releases_exactly
        self.then_in_transaction = inner.then_in_transaction
        self._meter = _Meter(inner.scheme, observer)

    def acquire(self, key: str, lock: LockInfo) -> None:
        self._meter("acquire", self.inner.acquire, key, lock)

    def acquire_then(self, key: str, lock: LockInfo, then: Changed) -> None:
        self._meter("acquire", self.inner.acquire_then, key, lock, then)

    def read(self, key: str) -> LockInfo | None:
        return self._meter("read", self.inner.read, key)

    def delete_if_held_by(self, key: str, lock_id: str) -> bool:
        return self._meter("delete", self.inner.delete_if_held_by, key, lock_id)

    def delete_if_held_by_then(self, key: str, lock_id: str, then: Changed) -> bool:
        return self._meter("delete", self.inner.delete_if_held_by_then, key, lock_id, then)

    def scan(self, prefix: str = "") -> Iterator[tuple[str, LockInfo]]:
        return self._meter.iterate("scan", self.inner.scan(prefix))

    def get_digest(self, key: str) -> str | None:
        return self._meter("get_digest", self.inner.get_digest, key)

    def put_digest(self, key: str, md5_hex: str) -> None:
        self._meter("put_digest", self.inner.put_digest, key, md5_hex)

    def delete_digest(self, key: str) -> None:
        self._meter("delete_digest", self.inner.delete_digest, key)

    # The inner table's own versions: a dual table releases in both and names
    # the one that failed.

    def release(self, key: str, lock_id: str, *, read: LockInfo | None = None) -> LockInfo:
        return self._meter("release", self.inner.release, key, lock_id, read=read)

    def release_then(
        self, key: str, lock_id: str, then: Changed, *, read: LockInfo | None = None
    ) -> LockInfo:
        return self._meter("release", self.inner.release_then, key, lock_id, then, read=read)

    def release_exactly(self, key: str, lock: LockInfo) -> bool:
        return self._meter("release_exactly", self.inner.release_exactly, key, lock)

    def mark_shared(self, key: str) -> bool:
        return self._meter("mark_shared", self.inner.mark_shared, key)

    def force_release(self, key: str) -> LockInfo | None:
        return self._meter("force_release", self.inner.force_release, key)

    def parts(self) -> list[LockTable]:
        parts = self.inner.parts()
        return [self] if parts == [self.inner] else parts

    def probe(self) -> None:
        self._meter("probe", self.inner.probe)

    def close(self) -> None:
        self.inner.close()

"""In-process reference drivers: the simplest correct ObjectStore and LockTable.

``MemoryStore(NAME)`` and ``MemoryLocks(NAME)`` open a named space shared by
every handle in the process, so two handles behave like two clients of one
backend (the conformance suites rely on that). Nothing survives the process:
for that reason no URL scheme opens them (``storage/registry.py``), and only
code (tests) builds them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from statekeeper.errors import LockConflict, VersionNotFound, WriteRace
from statekeeper.storage.base import LockTable, ObjectInfo, ObjectStore, StoredObject
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.times import utcnow

__all__ = ["MemoryLocks", "MemorySpace", "MemoryStore"]


@dataclass
class MemorySpace:
    """The shared backing of one ``memory://NAME``."""

    guard: threading.Lock = field(default_factory=threading.Lock)
    versions: dict[str, list[StoredObject]] = field(default_factory=dict)
    current: dict[str, StoredObject] = field(default_factory=dict)
    locks: dict[str, LockInfo] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    next_version: int = 1

    @classmethod
    def named(cls, name: str) -> MemorySpace:
        with _SPACES_GUARD:
            if name not in _SPACES:
                _SPACES[name] = cls()
            return _SPACES[name]


_SPACES: dict[str, MemorySpace] = {}
_SPACES_GUARD = threading.Lock()


class MemoryStore(ObjectStore):
    scheme = "memory"
    supports_versions = True
    supports_conditional_put = True
    supports_compare_and_swap = True

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.space = MemorySpace.named(name)

    @property
    def lock_namespace(self) -> str:
        return self.name

    def _put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> ObjectInfo:
        space = self.space
        info = ObjectInfo(
            key=key,
            version_id=str(space.next_version),
            size=len(data),
            last_modified=utcnow(),
            metadata=dict(metadata),
        )
        space.next_version += 1
        obj = StoredObject(info, bytes(data))
        space.versions.setdefault(key, []).append(obj)
        space.current[key] = obj
        return info

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> ObjectInfo:
        with self.space.guard:
            return self._put(key, data, metadata)

    def put_if_absent(self, key: str, data: bytes, metadata: Mapping[str, str]) -> bool:
        with self.space.guard:
            if key in self.space.current:
                return False
            self._put(key, data, metadata)
            return True

    def replace(
        self, key: str, data: bytes, metadata: Mapping[str, str], expected: ObjectInfo | None
    ) -> ObjectInfo:
        with self.space.guard:
            current = self.space.current.get(key)
            current_id = None if current is None else current.info.version_id
            if current_id != (None if expected is None else expected.version_id):
                raise WriteRace(
                    f"another write to {key!r} landed while this one was being checked; "
                    "nothing was written: read the state again and retry"
                )
            return self._put(key, data, metadata)

    def get(self, key: str, version_id: str | None = None) -> StoredObject | None:
        with self.space.guard:
            current = self.space.current.get(key)
            if version_id is None:
                return current
            for obj in self.space.versions.get(key, []):
                if obj.info.version_id == version_id:
                    latest = current is not None and current.info.version_id == version_id
                    return StoredObject(replace(obj.info, is_latest=latest), obj.data)
        raise VersionNotFound(f"state {key!r} has no version {version_id!r}")

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        obj = self.get(key, version_id)
        return None if obj is None else obj.info

    def delete(self, key: str) -> None:
        with self.space.guard:
            self.space.current.pop(key, None)

    def scan(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self.space.guard:
            objs = [o.info for k, o in self.space.current.items() if k.startswith(prefix)]
        yield from sorted(objs, key=lambda i: i.key)

    def versions(self, key: str) -> list[ObjectInfo]:
        with self.space.guard:
            current = self.space.current.get(key)
            current_id = current.info.version_id if current else None
            return [
                replace(o.info, is_latest=o.info.version_id == current_id)
                for o in reversed(self.space.versions.get(key, []))
            ]


class MemoryLocks(LockTable):
    scheme = "memory"
    keeps_digests = True

    def __init__(self, name: str = "default") -> None:
        self.space = MemorySpace.named(name)

    def acquire(self, key: str, lock: LockInfo) -> None:
        with self.space.guard:
            holder = self.space.locks.get(key)
            if holder is not None:
                raise LockConflict(holder)
            self.space.locks[key] = lock if lock.acquired else replace(lock, acquired=utcnow())

    def read(self, key: str) -> LockInfo | None:
        with self.space.guard:
            return self.space.locks.get(key)

    def delete_if_held_by(self, key: str, lock_id: str) -> bool:
        with self.space.guard:
            holder = self.space.locks.get(key)
            if holder is None or holder.id != lock_id:
                return False
            del self.space.locks[key]
            return True

    def scan(self, prefix: str = "") -> Iterator[tuple[str, LockInfo]]:
        with self.space.guard:
            items = sorted(
                ((k, v) for k, v in self.space.locks.items() if k.startswith(prefix)),
                key=lambda kv: kv[0],
            )
        yield from items

    def get_digest(self, key: str) -> str | None:
        with self.space.guard:
            return self.space.digests.get(key)

    def put_digest(self, key: str, md5_hex: str) -> None:
        with self.space.guard:
            self.space.digests[key] = md5_hex

    def delete_digest(self, key: str) -> None:
        with self.space.guard:
            self.space.digests.pop(key, None)

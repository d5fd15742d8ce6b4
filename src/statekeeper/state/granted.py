"""The locks this process granted, as it wrote them to the lock table.

A LOCK's conditional write proves the lock was granted as written; the UNLOCK
that follows names it by its ID. With the lock as written in hand, the UNLOCK
reads nothing first: the lock table deletes the lock only if it is still
exactly that one, by the same taker (and, under ``shared-plans``, no plan
shares the state), in one conditional request (``LockTable.release_exactly``).

The memory may save a read, never decide an answer. A lock force-unlocked,
expired, taken over by a writer, or re-taken through another replica fails the
condition, and the UNLOCK then reads the lock and decides as if nothing were
remembered; so does a server restarted between the LOCK and the UNLOCK, or a
replica other than the one that granted the lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from statekeeper.terraform.lockinfo import LockInfo

__all__ = ["GrantedLocks"]


class GrantedLocks:
    """A bounded map of (state key, lock ID) -> the lock this process wrote."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._granted: OrderedDict[tuple[str, str], LockInfo] = OrderedDict()
        self._guard = threading.Lock()

    def remember(self, key: str, lock: LockInfo) -> None:
        """``lock`` was just written as ``key``'s lock."""
        with self._guard:
            self._granted[(key, lock.id)] = lock
            self._granted.move_to_end((key, lock.id))
            while len(self._granted) > self.size:
                self._granted.popitem(last=False)

    def take(self, key: str, lock_id: str) -> LockInfo | None:
        """The lock ``lock_id`` as granted on ``key``, forgotten: it is used once."""
        with self._guard:
            return self._granted.pop((key, lock_id), None)

    def forget(self, key: str, lock_id: str) -> None:
        with self._guard:
            self._granted.pop((key, lock_id), None)

"""Shared holds: the plans that share a lock, beyond the one Terraform sees.

Terraform's own backend "s3" knows one lock per state: one DynamoDB item, one
lock file. Under the ``shared-plans`` policy several plans hold a state
at once, so the lock Terraform sees holds one of them (the *primary* holder:
the first plan, or an apply that took the lock from the plans) and every other
holder is a **shared hold** recorded in the same lock table under a key
Terraform never reads (:func:`~statekeeper.terraform.layout.shared_hold_key`).
A **marker** key exists while shared holds may exist, so that releasing a lock
costs one read when no plan shares it, and a listing of the holds (on DynamoDB
a Scan) only when one does.

The invariant the lock service keeps: while any holder holds a state, the lock
Terraform sees is held, so a client using the bucket directly always finds the
state locked. When the primary holder leaves, a shared hold is *promoted*: it
becomes the lock Terraform sees, and its own record goes. A lock table that
releases a lock in one conditional request (``LockTable.release_exactly``)
also has the lock beside which holds are recorded marked
(``LockTable.mark_shared``), so that such a release never skips a promotion.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from statekeeper.errors import LockConflict
from statekeeper.storage.base import LockTable
from statekeeper.terraform.layout import (
    SHARED_HOLD_MARK,
    shared_hold_key,
    shared_holds_marker,
    split_shared_hold,
)
from statekeeper.terraform.lockinfo import LockInfo

__all__ = ["MARKER_ID", "SharedHolds", "holders"]

#: The lock ID of the marker record (never a Terraform lock's: not a UUID).
MARKER_ID = "statekeeper-shared-holds"


class SharedHolds:
    """The shared holds of every state in one lock table."""

    def __init__(self, table: LockTable) -> None:
        self.table = table

    def read(self, key: str, lock_id: str) -> LockInfo | None:
        """The shared hold ``lock_id`` on ``key``, or None."""
        hold = self.table.read(shared_hold_key(key, lock_id))
        return hold if hold is not None and hold.id == lock_id else None

    def add(self, key: str, lock: LockInfo) -> bool:
        """Record ``lock`` as a shared hold of ``key`` (the marker first: a hold is
        never without it); False when it was recorded already."""
        marker = shared_holds_marker(key)
        try:
            self.table.acquire(
                marker, LockInfo.new("statekeeper", "statekeeper", lock_id=MARKER_ID)
            )
        except LockConflict:
            pass  # already there: other holds exist
        try:
            self.table.acquire(shared_hold_key(key, lock.id), lock)
        except LockConflict as conflict:
            if conflict.holder.id != lock.id:
                raise  # another ID with the same digest: not to be merged with it
            return False
        return True

    def remove(self, key: str, lock_id: str) -> LockInfo | None:
        """Remove the shared hold ``lock_id``; the removed hold, or None when none was."""
        side = shared_hold_key(key, lock_id)
        hold = self.table.read(side)
        if hold is None or hold.id != lock_id:
            return None
        return hold if self.table.delete_if_held_by(side, lock_id) else None

    def listed(self, key: str) -> list[LockInfo]:
        """Every shared hold of ``key``, oldest first; one read when there is no marker."""
        return self.marked(key) or []

    def marked(self, key: str) -> list[LockInfo] | None:
        """None when ``key`` has no marker (one read: no plan shares it, and there is no
        marker to forget); else its shared holds, oldest first (none left: the marker
        is to be forgotten)."""
        if not self.is_marked(key):
            return None
        holds = [lock for _, lock in self.table.scan(key + SHARED_HOLD_MARK)]
        return sorted(holds, key=lambda h: (h.since.timestamp() if h.since else 0.0, h.id))

    def is_marked(self, key: str) -> bool:
        """Whether ``key`` has a marker: shared holds may exist (one read)."""
        return self.table.read(shared_holds_marker(key)) is not None

    def forget_marker(self, key: str) -> None:
        """Remove the marker once :meth:`listed` found no hold left."""
        self.table.delete_if_held_by(shared_holds_marker(key), MARKER_ID)


def holders(scanned: Iterable[tuple[str, LockInfo]]) -> Iterator[tuple[str, LockInfo]]:
    """A lock table's scan as ``(state, holder)``: shared holds under their state's
    name, markers left out (for counts and ages of held locks)."""
    for key, lock in scanned:
        hold = split_shared_hold(key)
        if hold is None:
            yield key, lock
        elif not hold[1]:
            yield hold[0], lock

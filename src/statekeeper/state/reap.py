"""Removing locks by hand: ``unlock`` of one state and ``reap`` of stale ones.

Every removal is reported to the caller and is one event: ``force-unlock``
for ``unlock`` (by ID or forced), ``reap`` for each lock a reap removes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from statekeeper.errors import BadRequest, LockConflict, LockMismatch, LockNotFound
from statekeeper.events import Action
from statekeeper.security.caller import Caller
from statekeeper.state.listing import LockSummary, Unaddressable, list_locks
from statekeeper.state.locks import LockService
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.times import utcnow

# The views are pydantic models: imported when one is made, so a CLI run that
# makes none (an empty listing) starts without pydantic.
if TYPE_CHECKING:
    from statekeeper.state import views

__all__ = ["Release", "reap", "unlock"]


@dataclass(frozen=True)
class Release:
    """A lock removed (or, in a dry run, that would be)."""

    name: str
    lock: LockInfo
    age_seconds: float | None
    removed: bool
    reason: str

    def view(self) -> views.Release:
        from statekeeper.state import views

        return views.Release.of(self.name, self.lock, self.age_seconds, self.removed, self.reason)


def unlock(
    locks: LockService,
    name: StateName,
    caller: Caller,
    *,
    lock_id: str | None = None,
    force: bool = False,
) -> Release:
    """Remove ``name``'s lock: the one with ``lock_id``, or with ``force`` whichever is held.

    Without either, nothing is removed and LockConflict names the holder and
    the command that would remove it.
    """
    if lock_id is not None and not lock_id.strip():
        raise BadRequest("the lock ID is empty; give the lock's ID as 'statekeeper locks' lists it")
    if lock_id is None and not force:
        holder = locks.read(name)
        if holder is None:
            raise LockNotFound(f"no lock is held on {name}; nothing to unlock")
        raise LockConflict(
            holder,
            f"{name} is locked by {holder.describe()}; to remove this lock run "
            f"'statekeeper unlock {name} --id {holder.id}' (or --force to remove "
            "whatever lock is held)",
        )
    if lock_id is not None:
        removed = locks.remove(name, caller, lock_id)
    else:
        removed = locks.force_unlock(name, caller, lock_id=None)
    reason = f"unlock --id {lock_id}" if lock_id else "unlock --force"
    return Release(str(name), removed, removed.age(utcnow()), True, reason)


def _matches(operation: str, wanted: str) -> bool:
    # Terraform names its operations OperationTypePlan, OperationTypeApply, …
    op, want = operation.lower(), wanted.lower()
    return op == want or op == "operationtype" + want


def reap(
    locks: LockService,
    caller: Caller,
    *,
    older_than: timedelta,
    operation: str | None = None,
    prefix: str = "",
    dry_run: bool = False,
    now: datetime | None = None,
    unaddressable: Unaddressable | None = None,
) -> list[Release]:
    """Remove every lock older than ``older_than`` (of ``operation``, if given).

    The locks of keys that are no state name cannot be removed by name: they are
    noted in ``unaddressable``, never reaped.

    A lock with no known age (no ``Created`` and no server time) is never
    reaped. Each lock is removed by its own ID, so a lock re-taken meanwhile
    by someone else survives.
    """
    now = now or utcnow()
    out: list[Release] = []
    candidates: list[LockSummary] = list_locks(
        locks.locks,
        locks.policy,
        caller,
        prefix,
        now,
        lock_policy=locks.lock_policy,
        unaddressable=unaddressable,
    )
    for held in candidates:
        lock = held.lock
        if lock.damaged is not None:
            continue  # no ID to remove it by: 'unlock --force' once nothing runs
        if held.age_seconds is None or held.age_seconds < older_than.total_seconds():
            continue
        if operation and not _matches(lock.operation, operation):
            continue
        reason = f"older than {older_than}"
        if dry_run:
            out.append(Release(held.name, lock, held.age_seconds, False, reason + " (dry run)"))
            continue
        try:
            with locks.events.event(Action.REAP, caller, StateName(held.name)) as event:
                event.lock(lock)
                event.detail = reason
                removed = locks.remove(StateName(held.name), caller, lock.id)
        except (LockMismatch, LockNotFound):
            continue  # released or replaced since the listing: not ours to remove
        out.append(Release(held.name, removed, held.age_seconds, True, reason))
    return out

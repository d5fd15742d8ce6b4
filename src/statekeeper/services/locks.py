"""Lock rules: acquire, release, force-release, and the fence every write passes.

The lock table decides who wins a race (a conditional write); this module
decides what the answer to Terraform is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from statekeeper.drivers.base import LockTable, ObjectStore
from statekeeper.errors import LockConflict, LockNotFound
from statekeeper.model import Caller, LockInfo, StateName
from statekeeper.services.access import Permission, Policy, require

__all__ = ["HeldLock", "LockService"]


@dataclass(frozen=True)
class HeldLock:
    name: str
    lock: LockInfo


class LockService:
    def __init__(self, store: ObjectStore, locks: LockTable, policy: Policy) -> None:
        self.store = store
        self.locks = locks
        self.policy = policy

    def lock(self, name: StateName, body: bytes, caller: Caller) -> LockInfo:
        """Take the lock for the LockInfo in ``body``.

        A LOCK repeated with the holder's own ID succeeds: Terraform retries LOCK
        after a 5xx or a dropped connection, and the first attempt may have won.
        """
        require(self.policy, caller, name, Permission.WRITE, "lock")
        info = LockInfo.parse(body).with_facts(caller.actor, caller.remote_addr)
        try:
            self.locks.acquire(str(name), info)
        except LockConflict as conflict:
            if conflict.holder.id == info.id:
                return conflict.holder
            raise
        return info

    def unlock(self, name: StateName, body: bytes, caller: Caller) -> LockInfo:
        """Release the lock named by ``body``, in every form Terraform and OpenTofu send.

        - Terraform's ``force-unlock``: an empty body, no ID at all.
        - OpenTofu's ``force-unlock``: ``{"ID": …}`` with every other field zero.
        - A normal unlock: the LockInfo of the holder's LOCK.
        Both force forms need the admin permission.
        """
        key = str(name)
        if not body.strip():
            return self.force_unlock(name, caller, lock_id=None)
        info = LockInfo.parse(body)
        if info.is_zero_valued:
            return self.force_unlock(name, caller, lock_id=info.id)
        require(self.policy, caller, name, Permission.WRITE, "unlock")
        return self.locks.release(key, info.id)

    def force_unlock(self, name: StateName, caller: Caller, lock_id: str | None) -> LockInfo:
        """Remove the lock whoever holds it; with ``lock_id``, only if it is that lock."""
        require(self.policy, caller, name, Permission.ADMIN, "force-unlock")
        key = str(name)
        if lock_id is not None:
            return self.locks.release(key, lock_id)
        removed = self.locks.force_release(key)
        if removed is None:
            raise LockNotFound(f"no lock is held on {name}; nothing to unlock")
        return removed

    def read(self, name: StateName) -> LockInfo | None:
        return self.locks.read(str(name))

    def scan(self, prefix: str = "") -> Iterator[HeldLock]:
        for key, lock in self.locks.scan(prefix):
            yield HeldLock(key, lock)

    def fence(self, name: StateName, lock_id: str | None) -> None:
        """Refuse a write that does not carry the current holder's lock ID.

        Held under another ID (or written with none): LockConflict (423). Not
        held, but a lock ID was sent: the writer's lock is gone (force-unlocked),
        LockNotFound (409).
        No lock and no ID is a ``-lock=false`` run: allowed, the serial guard
        still applies.
        """
        holder = self.locks.read(str(name))
        if holder is None:
            if lock_id:
                raise LockNotFound(
                    f"the write names lock {lock_id!r} but {name} is not locked (was it "
                    "force-unlocked?); nothing was written"
                )
            return
        if holder.id == lock_id:
            return
        given = f"lock {lock_id!r}" if lock_id else "no lock ID"
        raise LockConflict(
            holder,
            f"{name} is locked by {holder.describe()} and the write carries {given}; "
            "nothing was written",
        )

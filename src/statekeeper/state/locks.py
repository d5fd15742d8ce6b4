"""Lock rules: acquire, release, force-release, and the fence every write passes.

The lock table decides who wins a race (a conditional write); this module
decides what the answer to Terraform is. Every lock change, and every refusal
of one, is one event on the stream (``lock``, ``unlock``, ``force-unlock``).

A lock is bound to the identity that took it (``actor``, kept with the lock in
every lock table). Its ID is no secret: a 423 shows it to every competing
writer. So an UNLOCK, a write or a LOCK retry with that ID from *another*
identity is not the holder's: the UNLOCK is a force-unlock (admin, recorded as
one), the write needs admin, the LOCK is a conflict. A loopback server without
access control has one identity (``anonymous``) and keeps the plain rules; a
lock written by Terraform's own backend "s3" names no identity and binds none.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from statekeeper.errors import (
    InvalidLockInfo,
    LockConflict,
    LockMismatch,
    LockNotFound,
    PayloadTooLarge,
)
from statekeeper.events import Action, EventStream
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, Policy, require
from statekeeper.storage.base import LockTable, ObjectStore
from statekeeper.terraform.layout import lock_path
from statekeeper.terraform.lockinfo import MAX_LOCK_INFO, LockInfo
from statekeeper.terraform.names import StateName

__all__ = ["HeldLock", "LockService", "taken_by_another"]


def _zero_valued(body: bytes, limit: int) -> LockInfo | None:
    """The LockInfo of OpenTofu's force-unlock body (an ID, every other field zero)."""
    try:
        info = LockInfo.parse(body, limit=limit)
    except (InvalidLockInfo, PayloadTooLarge):
        return None  # refused, and recorded, as an unlock
    return info if info.is_zero_valued else None


def taken_by_another(holder: LockInfo, caller: Caller) -> bool:
    """True when ``holder`` was taken through statekeeper by an identity not ``caller``'s."""
    return holder.actor is not None and holder.actor != caller.actor


@dataclass(frozen=True)
class HeldLock:
    name: str
    lock: LockInfo


class LockService:
    #: Mutex stripes: a fixed number, so that any number of names costs no memory.
    STRIPES = 64

    def __init__(
        self,
        store: ObjectStore,
        locks: LockTable,
        policy: Policy,
        events: EventStream,
        *,
        max_lock_info: int = MAX_LOCK_INFO,
    ) -> None:
        self.store = store
        self.locks = locks
        self.policy = policy
        self.events = events
        #: Largest LockInfo body a LOCK or UNLOCK may carry (413 beyond).
        self.max_lock_info = max_lock_info
        self._stripes = [threading.RLock() for _ in range(self.STRIPES)]

    @contextmanager
    def serialized(self, name: StateName) -> Iterator[None]:
        """Run lock changes and fenced writes of ``name`` one at a time in this process.

        A write reads (the fence, the current serial) and then puts; without
        this, two writes of the same serial could both pass the guard, or a lock
        could be taken between a write's fence and its put. Across processes
        sharing a store this needs the store's own conditional writes.
        """
        with self._stripes[hash(str(name)) % self.STRIPES]:
            yield

    def lock(self, name: StateName, body: bytes, caller: Caller) -> LockInfo:
        """Take the lock for the LockInfo in ``body``.

        A LOCK repeated with the holder's own ID succeeds: Terraform retries LOCK
        after a 5xx or a dropped connection, and the first attempt may have won.
        """
        with self.events.event(Action.LOCK, caller, name) as event:
            event.lock_body(body)
            require(self.policy, caller, name, Permission.WRITE, "lock")
            info = LockInfo.parse(body, limit=self.max_lock_info).with_facts(
                caller.actor, caller.remote_addr
            )
            try:
                with self.serialized(name):
                    self.locks.acquire(str(name), info)
            except LockConflict as conflict:
                holder = conflict.holder
                if holder.id == info.id and not taken_by_another(holder, caller):
                    return holder
                raise
            return info

    def unlock(self, name: StateName, body: bytes, caller: Caller) -> LockInfo:
        """Release the lock named by ``body``, in every form Terraform and OpenTofu send.

        - Terraform's ``force-unlock``: an empty body, no ID at all.
        - OpenTofu's ``force-unlock``: ``{"ID": …}`` with every other field zero.
        - A normal unlock: the LockInfo of the holder's LOCK.
        Both force forms need the admin permission.
        """
        if not body.strip():
            return self.force_unlock(name, caller, lock_id=None)
        forced = _zero_valued(body, self.max_lock_info)
        if forced is not None:
            return self.force_unlock(name, caller, lock_id=forced.id)
        holder = self._holder(name, body)
        # Without 'write' the caller may unlock nothing: refused below, as an unlock.
        if (
            holder is not None
            and taken_by_another(holder, caller)
            and self.policy.allows(caller, name, Permission.WRITE)
        ):
            return self.force_unlock(
                name,
                caller,
                lock_id=holder.id,
                detail=f"an UNLOCK of the lock {holder.actor} took, by its ID",
            )
        with self.events.event(Action.UNLOCK, caller, name) as event:
            event.lock_body(body)
            info = LockInfo.parse(body, limit=self.max_lock_info)
            require(self.policy, caller, name, Permission.WRITE, "unlock")
            with self.serialized(name):
                # The holder just read is not read again: the release deletes the
                # lock only if it is still that one (one lock-table call fewer).
                return self.locks.release(str(name), info.id, read=holder)

    def _holder(self, name: StateName, body: bytes) -> LockInfo | None:
        """The lock ``body`` names, when it is the one held now."""
        try:
            lock_id = LockInfo.parse(body).id
        except InvalidLockInfo:
            return None  # refused, and recorded, as an unlock
        holder = self.locks.read(str(name))
        return holder if holder is not None and holder.id == lock_id else None

    def force_unlock(
        self, name: StateName, caller: Caller, lock_id: str | None, detail: str | None = None
    ) -> LockInfo:
        """Remove the lock whoever holds it; with ``lock_id``, only if it is that lock."""
        with self.events.event(Action.FORCE_UNLOCK, caller, name) as event:
            event.lock_id = lock_id
            event.detail = detail
            require(self.policy, caller, name, Permission.ADMIN, "force-unlock")
            key = str(name)
            with self.serialized(name):
                if lock_id is not None:
                    removed: LockInfo | None = self.locks.release(key, lock_id)
                else:
                    removed = self.locks.force_release(key)
            if removed is None:
                raise LockNotFound(f"no lock is held on {name}; nothing to unlock")
            event.lock(removed)
            return removed

    def remove(self, name: StateName, caller: Caller, lock_id: str) -> LockInfo:
        """Remove the lock with ``lock_id`` wherever it is held (admin), and return it.

        Unlike :meth:`force_unlock` with an ID, a lock held in only one of two
        lock tables (a dual-lock drift) is removed without an error about the
        other. A lock held under another ID is left alone (LockMismatch).
        Recorded as a ``force-unlock`` (inside a reap, as the reap).
        """
        with self.events.event(Action.FORCE_UNLOCK, caller, name) as event:
            event.lock_id = lock_id
            event.detail = "removed by its ID"
            require(self.policy, caller, name, Permission.ADMIN, "force-unlock")
            key = str(name)
            holder = self.locks.read(key)
            if (
                holder is not None
                and holder.id == lock_id
                and self.locks.delete_if_held_by(key, lock_id)
            ):
                event.lock(holder)
                return holder
            holder = self.locks.read(key)
            if holder is None:
                raise LockNotFound(f"no lock is held on {name}; nothing to unlock")
            raise LockMismatch(holder, lock_id)

    @contextmanager
    def holding(self, name: StateName, operation: str, caller: Caller) -> Iterator[LockInfo]:
        """Hold the lock for an operator command (push, rollback, migrate) and release it.

        ``Who`` is the caller, as Terraform writes ``user@host``; a held lock
        raises LockConflict naming its holder, and nothing is done. One ``lock``
        event covers the whole hold; inside the command's own event (the usual
        case) the command's event stands for it.
        """
        with self.events.event(Action.LOCK, caller, name) as event:
            require(self.policy, caller, name, Permission.WRITE, "lock")
            # Path as Terraform's S3 backend writes it: <bucket>/<state object key>.
            path = lock_path(self.store.lock_namespace, self.store.full_key(str(name)))
            info = LockInfo.new(operation, caller.actor, path=path).with_facts(
                caller.actor, caller.remote_addr
            )
            event.lock(info)
            event.detail = "held for an operator command, then released"
            self.locks.acquire(str(name), info)
            try:
                yield info
            finally:
                self.locks.release(str(name), info.id)

    def read(self, name: StateName) -> LockInfo | None:
        return self.locks.read(str(name))

    def scan(self, prefix: str = "") -> Iterator[HeldLock]:
        for key, lock in self.locks.scan(prefix):
            yield HeldLock(key, lock)

    def fence(self, name: StateName, lock_id: str | None, caller: Caller) -> LockInfo | None:
        """Refuse a write that does not carry the current holder's lock ID; the
        holder it was written under (None for a ``-lock=false`` write).

        Held under another ID (or written with none): LockConflict (423). Not
        held, but a lock ID was sent: the writer's lock is gone (force-unlocked),
        LockNotFound (409). The holder's ID, from a caller other than the one
        who took the lock: Forbidden (403) unless the caller is an admin.
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
            return None
        if holder.id == lock_id:
            if taken_by_another(holder, caller):
                require(
                    self.policy,
                    caller,
                    name,
                    Permission.ADMIN,
                    f"write under the lock {holder.actor} took on",
                )
            return holder
        given = f"lock {lock_id!r}" if lock_id else "no lock ID"
        raise LockConflict(
            holder,
            f"{name} is locked by {holder.describe()} and the write carries {given}; "
            "nothing was written",
        )

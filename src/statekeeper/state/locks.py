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

The lock policy (:mod:`statekeeper.state.lockpolicy`) decides the rest, per
state glob; what it makes of the lock table (rounds of conditional writes,
shared holds, promotion, leases) is :mod:`statekeeper.state.lockkeeper`'s.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from statekeeper.errors import (
    InvalidLockInfo,
    InvalidStateName,
    LockConflict,
    LockMismatch,
    LockNotFound,
    PayloadTooLarge,
)
from statekeeper.events import Action, EventStream
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, Policy, require
from statekeeper.state.lockkeeper import LockKeeper, taken_by_another
from statekeeper.state.lockpolicy import LockMode, LockPolicy, is_operation
from statekeeper.storage.base import LockTable, ObjectStore
from statekeeper.terraform.layout import lock_path, split_shared_hold
from statekeeper.terraform.lockinfo import MAX_LOCK_INFO, LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.times import utcnow

__all__ = ["HeldLock", "LockService"]


def _zero_valued(body: bytes, limit: int) -> LockInfo | None:
    """The LockInfo of OpenTofu's force-unlock body (an ID, every other field zero)."""
    try:
        info = LockInfo.parse(body, limit=limit)
    except (InvalidLockInfo, PayloadTooLarge):
        return None  # refused, and recorded, as an unlock
    return info if info.is_zero_valued else None


@dataclass(frozen=True)
class HeldLock:
    name: str
    lock: LockInfo
    #: False for a shared hold recorded beside the lock Terraform sees.
    primary: bool = True


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
        lock_policy: LockPolicy | None = None,
    ) -> None:
        self.store = store
        self.locks = locks
        self.policy = policy
        self.events = events
        #: Largest LockInfo body a LOCK or UNLOCK may carry (413 beyond).
        self.max_lock_info = max_lock_info
        self.lock_policy = lock_policy or LockPolicy()
        self.keeper = LockKeeper(locks, self.lock_policy, events)
        self.holds = self.keeper.holds
        self.granted = self.keeper.granted
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
            info.check_shown()
            with self.serialized(name):
                granted, event.detail = self.keeper.take(name, info, event)
            return granted

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
        released = self._release_granted(name, body, caller)
        if released is not None:
            return released
        holder, is_primary = self._holder(name, body)
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
                released, event.detail = self.keeper.release(
                    name, info.id, read=holder if is_primary else None, event=event
                )
            return released

    def _release_granted(self, name: StateName, body: bytes, caller: Caller) -> LockInfo | None:
        """The UNLOCK of a lock this process granted, as one conditional request; the
        lock released, or None when it is not known here or no longer exactly as
        granted (or a plan shares the state): nothing changed, and the caller reads.

        The condition states what the reading path checks: the lock is the one
        the body names, taken by this caller, and no shared hold is to be promoted
        (every hold recorded beside a lock marks it: :meth:`LockTable.mark_shared`).
        """
        if not self.locks.releases_exactly:
            return None
        try:
            lock_id = LockInfo.parse(body, limit=self.max_lock_info).id
        except (InvalidLockInfo, PayloadTooLarge):
            return None  # refused, and recorded, by the reading path
        key = str(name)
        granted = self.granted.take(key, lock_id)
        if (
            granted is None
            or taken_by_another(granted, caller)
            or not self.policy.allows(caller, name, Permission.WRITE)
        ):
            return None
        with self.serialized(name):
            if not self.locks.release_exactly(key, granted):
                return None
        # The same event the reading path records for a release with nothing to promote.
        with self.events.event(Action.UNLOCK, caller, name) as event:
            event.lock_body(body)
        return granted

    def _holder(self, name: StateName, body: bytes) -> tuple[LockInfo | None, bool]:
        """The lock ``body`` names, when it is held now: the primary lock or a
        shared hold, and whether it is the primary."""
        try:
            lock_id = LockInfo.parse(body).id
        except InvalidLockInfo:
            return None, False  # refused, and recorded, as an unlock
        holder = self.locks.read(str(name))
        if holder is not None and holder.id == lock_id:
            return holder, True
        # A shared hold is bound to its taker like any lock.
        hold = self.holds.read(str(name), lock_id)
        return (hold, False) if hold is not None and hold.id == lock_id else (None, False)

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
                    removed: LockInfo | None
                    removed, promoted = self.keeper.release(name, lock_id)
                    event.detail = "; ".join(d for d in (detail, promoted) if d) or None
                else:
                    removed = self.locks.force_release(key)
                    # Whatever is held: the shared holds beside it too.
                    holds = [self.holds.remove(key, h.id) for h in self.holds.listed(key)]
                    self.holds.forget_marker(key)
                    if any(holds):
                        event.detail = f"and {sum(1 for h in holds if h)} shared hold(s)"
                    removed = removed or next((h for h in holds if h), None)
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
            with self.serialized(name):
                holder = self.locks.read(key)
                if (
                    holder is not None
                    and holder.id == lock_id
                    and self.locks.delete_if_held_by(key, lock_id)
                ):
                    event.lock(holder)
                    event.detail = self.keeper.promote(name) or event.detail
                    return holder
                hold = self.holds.remove(key, lock_id)
            if hold is not None:
                event.lock(hold)
                event.detail = "a shared hold removed by its ID"
                return hold
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
            with self.serialized(name):
                try:
                    self.keeper.take(name, info)
                except LockConflict as exc:
                    # Named: a command may go through many states (migrate).
                    raise LockConflict(
                        exc.holder, f"{name} is locked by {exc.holder.describe()}"
                    ) from exc
            try:
                yield info
            finally:
                with self.serialized(name):
                    self.keeper.release(name, info.id)

    def read(self, name: StateName) -> LockInfo | None:
        """The lock Terraform sees (the primary holder), or None."""
        return self.locks.read(str(name))

    def holders(self, name: StateName) -> list[LockInfo]:
        """Every holder of ``name``: the primary first, then the plans sharing it."""
        primary = self.locks.read(str(name))
        if self.lock_policy.for_state(name).mode is not LockMode.SHARED_PLANS:
            return [] if primary is None else [primary]
        holds = self.holds.listed(str(name))
        return ([] if primary is None else [primary]) + holds

    def scan(self, prefix: str = "") -> Iterator[HeldLock]:
        """Every holder under ``prefix``: primary locks and shared holds (no markers)."""
        for key, lock in self.locks.scan(prefix):
            shared = split_shared_hold(key)
            if shared is None:
                yield HeldLock(key, lock)
            elif not shared[1]:
                yield HeldLock(shared[0], lock, primary=False)

    # Leases

    def expire_due(self, prefix: str = "", now: datetime | None = None) -> list[HeldLock]:
        """Remove every lock under ``prefix`` past its lease (the sweeper, and listings);
        the locks removed. Nothing is read when no lease is configured."""
        if not self.lock_policy.has_leases:
            return []
        now = now or utcnow()
        expired: list[HeldLock] = []
        for held in list(self.scan(prefix)):
            try:
                name = StateName(held.name)
            except InvalidStateName:
                continue  # not a state's lock (a doctor's probe): no policy applies
            with self.serialized(name):
                if self.keeper.expire_if_due(
                    name, held.lock, self.lock_policy.for_state(name), now
                ):
                    expired.append(held)
        return expired

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
            if is_operation(holder.operation, "plan") and self.lock_policy.for_state(name).shares(
                holder
            ):
                raise LockConflict(
                    holder,
                    f"{name} is held by the plan {holder.describe()}, a lock shared with "
                    "other plans (lock policy shared-plans): a write needs an exclusive "
                    "lock; nothing was written",
                )
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
            f"{name} is locked by {holder.describe()} and the request carries {given}; "
            "nothing was written",
        )

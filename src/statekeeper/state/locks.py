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
state glob:

- ``shared-plans``: a plan's LOCK meeting a plan's lock shares it (a shared
  hold, :mod:`statekeeper.state.holds`); any other operation's LOCK meeting
  plans only *takes* the lock Terraform sees from them (readers never block
  the writer): the plans stay listed as shared holds until they unlock, and
  none of them could ever write, since a write needs the lock Terraform sees
  and a plan's is refused by the fence. New plans then wait for the writer.
- a lease: a lock older than its time to live (by the server's clock) is
  removed when a LOCK meets it, at a listing, and by the server's sweeper;
  each removal is one ``expire`` event (webhook ``lock.expired``).
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
    StorageError,
)
from statekeeper.events import Action, Draft, Event, EventStream
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, Policy, require
from statekeeper.state.granted import GrantedLocks
from statekeeper.state.holds import SharedHolds
from statekeeper.state.lockpolicy import LockMode, LockPolicy, StateLockPolicy, is_operation
from statekeeper.storage.base import Changed, LockTable, ObjectStore
from statekeeper.terraform.layout import lock_path, split_shared_hold
from statekeeper.terraform.lockinfo import MAX_LOCK_INFO, LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.times import format_age, utcnow

__all__ = ["HeldLock", "LockService", "taken_by_another"]

#: Who removes an expired lock, in the audit trail.
SERVER_ACTOR = "statekeeper"
#: Rounds of acquire-and-decide before a lock that keeps changing hands is an error.
_ROUNDS = 5


def _zero_valued(body: bytes, limit: int) -> LockInfo | None:
    """The LockInfo of OpenTofu's force-unlock body (an ID, every other field zero)."""
    try:
        info = LockInfo.parse(body, limit=limit)
    except (InvalidLockInfo, PayloadTooLarge):
        return None  # refused, and recorded, as an unlock
    return info if info.is_zero_valued else None


def _in_commit(event: Draft, detail: str | None) -> Changed:
    """A lock table's ``then`` that records ``event`` (with ``detail``) in the lock's
    own commit where the table has one: the lock row, its audit record and webhook
    outbox rows commit and sync once, together or not at all."""

    def then() -> None:
        event.detail = detail
        event.record_in_commit()

    return then


def taken_by_another(holder: LockInfo, caller: Caller) -> bool:
    """True when ``holder`` was taken through statekeeper by an identity not ``caller``'s."""
    return holder.actor is not None and holder.actor != caller.actor


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
        self.holds = SharedHolds(locks)
        self.granted = GrantedLocks()
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
            with self.serialized(name):
                granted, event.detail = self._take(name, info, caller, event)
            return granted

    def _take(
        self, name: StateName, info: LockInfo, caller: Caller, event: Draft | None = None
    ) -> tuple[LockInfo, str]:
        """Grant ``info`` or raise LockConflict; the lock granted and why, for the event.

        ``event``: the LOCK's own, recorded in the lock's commit when it is granted
        by a plain acquire (see :func:`_in_commit`).
        """
        key = str(name)
        policy = self.lock_policy.for_state(name)
        shares = policy.shares(info)
        mode = "shared" if shares else "exclusive"
        notes: list[str] = []
        took_from_plans = False
        for _ in range(_ROUNDS):
            detail = "; ".join([f"{mode} ({policy.source}: {policy.mode})", *notes])
            try:
                if event is None or took_from_plans:
                    self.locks.acquire(key, info)
                else:
                    self.locks.acquire_then(key, info, _in_commit(event, detail))
            except LockConflict as exc:
                refused, holder = exc, exc.holder
            else:
                if took_from_plans:
                    self.locks.mark_shared(key)  # the plans' holds are beside this lock now
                if self.locks.releases_exactly:  # what the UNLOCK's condition will state
                    self.granted.remember(key, info)
                return info, detail
            if holder.id == info.id:
                if taken_by_another(holder, caller):
                    raise refused  # the ID is no secret: not a way into another's lock
                return holder, "a LOCK repeated with the holder's own ID"
            if self._expire_if_due(name, holder, policy):
                notes.append(f"after the lease of lock {holder.id} expired")
                continue
            if policy.mode is LockMode.SHARED_PLANS:
                hold = self.holds.read(key, info.id)
                if hold is not None:
                    if taken_by_another(hold, caller):
                        raise LockConflict(hold)
                    return hold, "a LOCK repeated with a shared holder's own ID"
            if shares and policy.shares(holder):
                self.holds.add(key, info)
                if not self.locks.mark_shared(key):
                    # The primary left between our acquire and our hold (another
                    # replica released it): take the lock Terraform sees ourselves.
                    self.holds.remove(key, info.id)
                    continue
                return info, "; ".join(
                    [f"shared with the plan {holder.describe()} ({policy.source})", *notes]
                )
            if not shares and policy.shares(holder):
                # Readers never block the writer: the plan becomes a shared hold and
                # the lock Terraform sees is this writer's at the next round.
                self.holds.add(key, holder)
                if not self.locks.delete_if_held_by(key, holder.id):
                    self.holds.remove(key, holder.id)  # it left meanwhile
                    continue
                took_from_plans = True
                notes.append(
                    f"taken from the shared plan {holder.id} ({policy.source}): the plans "
                    "stay listed as shared holds until they unlock; none of them can write"
                )
                continue
            raise refused
        raise StorageError(f"the lock on {name} kept changing hands; try again")

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
                released, event.detail = self._release(
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

    def _release(
        self,
        name: StateName,
        lock_id: str,
        *,
        read: LockInfo | None = None,
        event: Draft | None = None,
    ) -> tuple[LockInfo, str | None]:
        """Release ``lock_id``, the primary lock or a shared hold; the lock and what
        else changed. LockNotFound or LockMismatch when it is not held.

        ``read``: the primary lock just read, not read again: the release deletes
        it only if it is still that one (one lock-table call fewer). ``event``: the
        UNLOCK's own, recorded in the release's commit when nothing is left to
        promote after it (no plan can share the state).
        """
        key = str(name)
        self.granted.forget(key, lock_id)
        policy = self.lock_policy.for_state(name)
        sharing = policy.mode is LockMode.SHARED_PLANS
        unshared = False  # found in the release's commit: no hold to promote after it

        def then() -> None:
            nonlocal unshared
            # Read inside the release's transaction where it has one: a plan adding a
            # hold after it commits finds no lock to share and takes it instead.
            if sharing and self.holds.is_marked(key):
                return  # the promotion's outcome is the event's: recorded after it
            unshared = True
            if event is not None:
                _in_commit(event, None)()

        try:
            # The lock table's own release: with two tables it names the one that failed.
            released = self.locks.release_then(key, lock_id, then, read=read)
        except (LockNotFound, LockMismatch):
            hold = self.holds.remove(key, lock_id)
            if hold is None:
                raise
            return hold, "a shared hold released; the lock Terraform sees is unchanged"
        return released, None if unshared else self._promote(name, policy)

    def _promote(self, name: StateName, policy: StateLockPolicy | None = None) -> str | None:
        """After the primary holder left: hand the lock Terraform sees to a shared hold.

        Under ``exclusive`` there are none, and nothing is read.
        """
        key = str(name)
        policy = policy or self.lock_policy.for_state(name)
        if policy.mode is not LockMode.SHARED_PLANS:
            return None
        holds = self.holds.marked(key)
        if holds is None:
            return None  # the common case, one read: no plan shares the state
        for hold in holds:
            if self._expire_if_due(name, hold, policy):
                continue
            for _ in range(_ROUNDS):
                try:
                    self.locks.acquire(key, hold)
                except LockConflict:
                    # Taken meanwhile: the holds stay beside the new holder, marked on
                    # its lock so that its UNLOCK promotes them in turn.
                    if self.locks.mark_shared(key):
                        return None
                    continue  # and released already: try again
                self.holds.remove(key, hold.id)
                # Marked: its UNLOCK reads, and promotes the other holds or, none
                # left, forgets the marker.
                self.locks.mark_shared(key)
                return f"the lock Terraform sees passes to the shared plan {hold.id}"
            raise StorageError(f"the lock on {name} kept changing hands; try again")
        self.holds.forget_marker(key)
        return None

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
                    removed, promoted = self._release(name, lock_id)
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
                    event.detail = self._promote(name) or event.detail
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
                self._take(name, info, caller)
            try:
                yield info
            finally:
                with self.serialized(name):
                    self._release(name, info.id)

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

    def _expire_if_due(
        self,
        name: StateName,
        lock: LockInfo,
        policy: StateLockPolicy,
        now: datetime | None = None,
    ) -> bool:
        """Remove ``lock`` when it outlived its lease, with an ``expire`` event; True if so.

        The age is the server's clock only: a lock written by Terraform's own
        backend (no server time) never expires, since its client's clock may
        say anything.
        """
        ttl = policy.lease(lock.operation)
        if ttl is None or lock.acquired is None or lock.damaged is not None:
            return False
        held = (now or utcnow()) - lock.acquired
        if held < ttl:
            return False
        key = str(name)
        if self.locks.delete_if_held_by(key, lock.id):
            promoted = self._promote(name)
        elif self.holds.remove(key, lock.id) is not None:
            promoted = None
        else:
            return True  # released meanwhile: free to try again
        detail = (
            f"held {format_age(held.total_seconds())}, past {policy.describe_lease(lock.operation)}"
        )
        self.events.emit(
            Event(
                action=Action.EXPIRE,
                actor=SERVER_ACTOR,
                state=key,
                lock_id=lock.id,
                who=lock.who or None,
                operation=lock.operation or None,
                detail="; ".join(d for d in (detail, promoted) if d),
            )
        )
        return True

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
                if self._expire_if_due(name, held.lock, self.lock_policy.for_state(name), now):
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
            f"{name} is locked by {holder.describe()} and the write carries {given}; "
            "nothing was written",
        )

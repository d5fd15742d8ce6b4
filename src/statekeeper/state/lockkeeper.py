"""The lock Terraform sees and the shared holds beside it, kept in the lock table.

:class:`~statekeeper.state.locks.LockService` decides what the answer to
Terraform is (who may lock, unlock or force, and the event of each); this
module makes the lock table say it: rounds of conditional writes until a lock
is granted or refused, a release and the promotion that may follow it, and the
removal of a lock past its lease.

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

A LOCK's and an UNLOCK's event is recorded from the lock table's ``then``
(:meth:`~statekeeper.storage.base.LockTable.acquire_then`), in the lock's own
commit where the table has one (SQLite), so that the lock row and its audit
record are stored together or not at all.
"""

from __future__ import annotations

from datetime import datetime

from statekeeper.errors import LockConflict, LockMismatch, LockNotFound, StorageError
from statekeeper.events import Action, Draft, Event, EventStream
from statekeeper.security.caller import SERVER_ACTOR, Caller
from statekeeper.state.granted import GrantedLocks
from statekeeper.state.holds import SharedHolds
from statekeeper.state.lockpolicy import LockMode, LockPolicy, StateLockPolicy
from statekeeper.storage.base import Changed, LockTable
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.times import format_age, utcnow

__all__ = ["LockKeeper", "taken_by_another"]

#: Rounds of acquire-and-decide before a lock that keeps changing hands is an error.
_ROUNDS = 5


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


def _taken_from(holder: LockInfo, asked: LockInfo) -> bool:
    """:func:`taken_by_another`, the caller's identity being the ``actor`` of its LockInfo."""
    return holder.actor is not None and holder.actor != asked.actor


class LockKeeper:
    """Takes, releases, promotes and expires locks in one lock table under a lock policy.

    Its callers hold :meth:`LockService.serialized` for the state.
    """

    def __init__(self, locks: LockTable, lock_policy: LockPolicy, events: EventStream) -> None:
        self.locks = locks
        self.lock_policy = lock_policy
        self.events = events
        self.holds = SharedHolds(locks)
        self.granted = GrantedLocks()

    def take(
        self, name: StateName, info: LockInfo, event: Draft | None = None
    ) -> tuple[LockInfo, str]:
        """Grant ``info`` (its ``actor`` the caller's) or raise LockConflict; the lock
        granted and why, for the event.

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
                if _taken_from(holder, info):
                    raise refused  # the ID is no secret: not a way into another's lock
                return holder, "a LOCK repeated with the holder's own ID"
            if self.expire_if_due(name, holder, policy):
                notes.append(f"after the lease of lock {holder.id} expired")
                continue
            if policy.mode is LockMode.SHARED_PLANS:
                hold = self.holds.read(key, info.id)
                if hold is not None:
                    if _taken_from(hold, info):
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
                if not self._take_from_plan(key, holder):
                    continue  # it left, or another writer took it from the plans, meanwhile
                took_from_plans = True
                notes.append(
                    f"taken from the shared plan {holder.id} ({policy.source}): the plans "
                    "stay listed as shared holds until they unlock; none of them can write"
                )
                continue
            raise refused
        raise StorageError(f"the lock on {name} kept changing hands; try again")

    def _take_from_plan(self, key: str, plan: LockInfo) -> bool:
        """Make ``plan``, the lock Terraform sees, a shared hold instead; False when the
        lock was no longer the plan's (it left, or another writer took it meanwhile).

        A writer on another server meeting the same plan records the same hold: the
        loser of the delete must not remove the record the winner relies on, or the
        plan vanishes from every listing and its UNLOCK finds nothing.
        """
        if self.locks.then_in_transaction:
            # The hold recorded in the delete's own transaction, only if this delete took
            # the lock from the plan: the loser has recorded nothing, and removes nothing.
            def record() -> None:
                self.holds.add(key, plan)

            return self.locks.delete_if_held_by_then(key, plan.id, record)
        # Without a transaction over both (DynamoDB, S3 lock files) the hold comes first,
        # so that the plan is always recorded somewhere (a release meeting neither the
        # lock nor the hold would answer that nothing is held, and a hold recorded after
        # it would be left for nobody). The loser removes the record only if it made it:
        # a winner that made it keeps it. One window is left: the winner found the
        # loser's record and relied on it (docs/configuration.md#lock-policy-s3).
        made = self.holds.add(key, plan)
        if self.locks.delete_if_held_by(key, plan.id):
            return True
        if made:
            self.holds.remove(key, plan.id)
        return False

    def release(
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
        UNLOCK's own, recorded in the release's commit when no shared hold is left
        to promote after it (the marker, read in that commit, is absent).
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
        return released, None if unshared else self.promote(name, policy)

    def promote(self, name: StateName, policy: StateLockPolicy | None = None) -> str | None:
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
            if self.expire_if_due(name, hold, policy):
                continue
            for _ in range(_ROUNDS):
                try:
                    # The hold's own record goes in the acquire's transaction where the
                    # table has one: between the two, another server's writer could
                    # take the lock from the plan (re-recording it as the same hold),
                    # and this removal would then drop the plan from every listing.
                    self.locks.acquire_then(key, hold, self._take_hold(key, hold.id))
                except LockConflict:
                    # Taken meanwhile: the holds stay beside the new holder, marked on
                    # its lock so that its UNLOCK promotes them in turn.
                    if self.locks.mark_shared(key):
                        return None
                    continue  # and released already: try again
                except LockNotFound:
                    # Unlocked or expired through another server since the holds were
                    # read: not brought back as the lock Terraform sees (undone with
                    # the transaction where the table has one; removed here elsewhere).
                    self.locks.delete_if_held_by(key, hold.id)
                    break
                # Marked: its UNLOCK reads, and promotes the other holds or, none
                # left, forgets the marker.
                self.locks.mark_shared(key)
                return f"the lock Terraform sees passes to the shared plan {hold.id}"
            else:
                raise StorageError(f"the lock on {name} kept changing hands; try again")
        self.holds.forget_marker(key)
        return None

    def _take_hold(self, key: str, lock_id: str) -> Changed:
        """The promotion's ``then``: the hold's record removed, LockNotFound if it was
        already gone."""

        def take() -> None:
            if self.holds.remove(key, lock_id) is None:
                raise LockNotFound(f"the shared hold {lock_id} on {key} was released meanwhile")

        return take

    def expire_if_due(
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
            promoted = self.promote(name)
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

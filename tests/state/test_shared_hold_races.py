"""Two servers on one data directory handing a plan's shared hold back and forth.

Each ``Services`` stands for one server process (its own connections, its own
in-process mutex); the race is driven step by step, the other server acting at the
exact point inside a promotion or a writer's taking the lock from a plan, through a
lock table that runs it there (the embedded one; DynamoDB and S3 lock files on moto,
where no transaction spans the lock and the plan's record beside it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from statekeeper.app import Services
from statekeeper.errors import LockConflict
from statekeeper.events import Action
from statekeeper.security.audit import AuditFilter
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings
from statekeeper.state.locks import LockService
from statekeeper.storage.base import Changed, LockTable
from statekeeper.storage.metered import MeteredLocks
from statekeeper.storage.sqlite.locks import SqliteLocks
from statekeeper.terraform.layout import shared_holds_marker
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import MotoServer

NAME = StateName("team/app.tfstate")
ALICE, BOB, CAROL = Caller("alice"), Caller("bob"), Caller("carol")


class _OnAcquiring(SqliteLocks):
    """The embedded lock table, running ``act`` once when ``lock_id`` is acquired as the
    lock Terraform sees (a promotion): right after, or with ``before`` right before."""

    def __init__(
        self, inner: SqliteLocks, lock_id: str, act: Callable[[], None], *, before: bool = False
    ) -> None:
        super().__init__(inner.db)
        self.lock_id = lock_id
        self.act: Callable[[], None] | None = act
        self.before = before

    def acquire(self, key: str, lock: LockInfo) -> None:
        self._acting(key, lock, before=True)
        super().acquire(key, lock)
        self._acting(key, lock, before=False)

    def acquire_then(self, key: str, lock: LockInfo, then: Changed) -> None:
        self._acting(key, lock, before=True)
        super().acquire_then(key, lock, then)
        self._acting(key, lock, before=False)

    def _acting(self, key: str, lock: LockInfo, *, before: bool) -> None:
        if before != self.before or lock.id != self.lock_id or key != str(NAME):
            return
        if self.act is not None:
            act, self.act = self.act, None
            act()


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[Services, Services]]:
    made = [Services.build(Settings(data_dir=tmp_path / "data")) for _ in range(2)]
    yield made[0], made[1]
    for s in made:
        s.close()


def _elsewhere(work: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        other = threading.Thread(target=work)
        other.start()
        other.join()

    return run


def test_a_writer_taking_the_lock_from_a_plan_being_promoted_keeps_the_plan_listed(
    two_servers: tuple[Services, Services],
) -> None:
    a, b = two_servers
    first, second = (
        LockInfo.new("OperationTypePlan", "alice"),
        LockInfo.new("OperationTypePlan", "bob"),
    )
    a.locks.lock(NAME, first.body, ALICE)
    a.locks.lock(NAME, second.body, BOB)  # shared with the first plan
    apply = LockInfo.new("OperationTypeApply", "carol")

    # Server B releases the first plan and promotes the second; once the second is the
    # lock Terraform sees, and before its shared hold is gone, an apply through server A
    # takes the lock from it (the plan becomes a shared hold again).
    table = b.locks.locks
    assert isinstance(table, SqliteLocks)
    hooked = _OnAcquiring(
        table, second.id, _elsewhere(lambda: a.locks.lock(NAME, apply.body, CAROL))
    )
    through_b = LockService(b.store, hooked, b.policy, b.events, lock_policy=b.locks.lock_policy)
    through_b.unlock(NAME, first.body, ALICE)

    # The apply holds the lock Terraform sees; the second plan is still a holder,
    # beside it, and its own UNLOCK finds it.
    assert [h.id for h in a.locks.holders(NAME)] == [apply.id, second.id]
    a.locks.unlock(NAME, second.body, BOB)
    a.locks.unlock(NAME, apply.body, CAROL)
    assert a.locks.holders(NAME) == []
    actions = [(e.action, e.lock_id) for e in a.audit.query(AuditFilter()) if e.lock_id]
    assert actions[-2:] == [(Action.UNLOCK, second.id), (Action.UNLOCK, apply.id)]


def test_a_plan_unlocked_through_one_server_is_not_brought_back_by_the_other(
    two_servers: tuple[Services, Services],
) -> None:
    a, b = two_servers
    first = LockInfo.new("OperationTypePlan", "alice")
    second = LockInfo.new("OperationTypePlan", "bob")
    a.locks.lock(NAME, first.body, ALICE)
    a.locks.lock(NAME, second.body, BOB)

    # Server B releases the first plan and has read the holds to promote; before it
    # promotes the second, the second plan's own UNLOCK goes through server A.
    table = b.locks.locks
    assert isinstance(table, SqliteLocks)
    hooked = _OnAcquiring(
        table,
        second.id,
        _elsewhere(lambda: a.locks.unlock(NAME, second.body, BOB)),
        before=True,
    )
    through_b = LockService(b.store, hooked, b.policy, b.events, lock_policy=b.locks.lock_policy)
    through_b.unlock(NAME, first.body, ALICE)

    # Nobody holds the state: the released plan is not the lock Terraform sees again.
    assert a.locks.holders(NAME) == []
    assert b.locks.read(NAME) is None
    unlocks = [e for e in a.audit.query(AuditFilter()) if e.action is Action.UNLOCK]
    assert [e.lock_id for e in unlocks] == [second.id, first.id]
    assert second.id not in (unlocks[-1].detail or "")


class _OnTakingFrom(SqliteLocks):
    """The embedded lock table, running ``act`` once right before the lock ``lock_id``
    (a plan's, the lock Terraform sees) is deleted to be taken from it."""

    def __init__(self, inner: SqliteLocks, lock_id: str, act: Callable[[], None]) -> None:
        super().__init__(inner.db)
        self.lock_id = lock_id
        self.act: Callable[[], None] | None = act

    def delete_if_held_by(self, key: str, lock_id: str) -> bool:
        self._acting(key, lock_id)
        return super().delete_if_held_by(key, lock_id)

    def delete_if_held_by_then(self, key: str, lock_id: str, then: Changed) -> bool:
        self._acting(key, lock_id)
        return super().delete_if_held_by_then(key, lock_id, then)

    def _acting(self, key: str, lock_id: str) -> None:
        if lock_id == self.lock_id and key == str(NAME) and self.act is not None:
            act, self.act = self.act, None
            act()


def test_two_writers_taking_the_lock_from_one_plan_leave_the_plan_listed(
    two_servers: tuple[Services, Services],
) -> None:
    a, b = two_servers
    plan = LockInfo.new("OperationTypePlan", "alice")
    a.locks.lock(NAME, plan.body, ALICE)
    first, second = (
        LockInfo.new("OperationTypeApply", "bob"),
        LockInfo.new("OperationTypeApply", "carol"),
    )

    # Both applies meet the plan as the lock Terraform sees; server B's is about to take
    # it from the plan when server A's does so first (the plan becomes its shared hold).
    table = b.locks.locks
    assert isinstance(table, SqliteLocks)
    hooked = _OnTakingFrom(table, plan.id, _elsewhere(lambda: a.locks.lock(NAME, first.body, BOB)))
    through_b = LockService(b.store, hooked, b.policy, b.events, lock_policy=b.locks.lock_policy)
    with pytest.raises(LockConflict):
        through_b.lock(NAME, second.body, CAROL)

    # The first apply holds the lock Terraform sees, the plan still shares it, and the
    # plan's own UNLOCK finds its hold.
    assert [h.id for h in a.locks.holders(NAME)] == [first.id, plan.id]
    b.locks.unlock(NAME, plan.body, ALICE)
    a.locks.unlock(NAME, first.body, BOB)
    assert a.locks.holders(NAME) == []
    unlocks = [e for e in a.audit.query(AuditFilter()) if e.action is Action.UNLOCK]
    assert [(e.lock_id, e.outcome) for e in unlocks] == [(plan.id, "ok"), (first.id, "ok")]


class _Unmetered:
    """A storage observer that keeps nothing: :class:`MeteredLocks` as a plain wrapper."""

    def storage_timer(self, driver: str, operation: str) -> Callable[[float], None]:
        return lambda seconds: None

    def storage_call(self, driver: str, operation: str, seconds: float, error: str | None) -> None:
        pass

    def state_stored(self, size: int) -> None:
        pass


class _OnRecordingHold(MeteredLocks):
    """A lock table (DynamoDB, S3 lock files), running ``act`` once right before the
    first write of a shared hold of ``NAME`` (its marker, written first)."""

    def __init__(self, inner: LockTable, act: Callable[[], None]) -> None:
        super().__init__(inner, _Unmetered())
        self.act: Callable[[], None] | None = act

    def acquire(self, key: str, lock: LockInfo) -> None:
        if key == shared_holds_marker(str(NAME)) and self.act is not None:
            act, self.act = self.act, None
            act()
        super().acquire(key, lock)


@pytest.mark.parametrize("locks", ["dynamodb", "s3lock"])
def test_without_a_transaction_the_writer_that_lost_keeps_the_plan_it_did_not_record(
    locks: str, moto: MotoServer, tmp_path: Path
) -> None:
    moto.versioned_bucket("races")
    moto.lock_table("races-locks")
    url = {"dynamodb": "dynamodb://races-locks", "s3lock": "s3lock://races"}[locks]
    settings = Settings(data_dir=tmp_path / "data", store="s3://races", locks=url)
    a, b = Services.build(settings), Services.build(settings)
    try:
        plan = LockInfo.new("OperationTypePlan", "alice")
        a.locks.lock(NAME, plan.body, ALICE)
        first, second = (
            LockInfo.new("OperationTypeApply", "bob"),
            LockInfo.new("OperationTypeApply", "carol"),
        )
        # Server B's apply is about to record the plan beside the lock when server A's
        # apply takes the lock from the plan, recording it first: B's record finds A's.
        hooked = _OnRecordingHold(
            b.locks.locks, _elsewhere(lambda: a.locks.lock(NAME, first.body, BOB))
        )
        through_b = LockService(
            b.store, hooked, b.policy, b.events, lock_policy=b.locks.lock_policy
        )
        with pytest.raises(LockConflict):
            through_b.lock(NAME, second.body, CAROL)

        # B lost the delete and leaves the record it did not make: the plan is listed.
        assert [h.id for h in a.locks.holders(NAME)] == [first.id, plan.id]
        b.locks.unlock(NAME, plan.body, ALICE)
        a.locks.unlock(NAME, first.body, BOB)
        assert a.locks.holders(NAME) == []
    finally:
        a.close()
        b.close()

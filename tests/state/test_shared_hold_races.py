"""Two servers on one data directory handing a plan's shared hold back and forth.

Each ``Services`` stands for one server process (its own connections, its own
in-process mutex); the race is driven step by step, the other server acting at the
exact point inside a promotion, through a lock table that runs it there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from statekeeper.app import Services
from statekeeper.events import Action
from statekeeper.security.audit import AuditFilter
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings
from statekeeper.state.locks import LockService
from statekeeper.storage.base import Changed
from statekeeper.storage.sqlite.locks import SqliteLocks
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName

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

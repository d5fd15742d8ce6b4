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


class _AfterAcquiring(SqliteLocks):
    """The embedded lock table, running ``act`` once right after ``lock_id`` is acquired
    as the lock Terraform sees (a promotion's first step)."""

    def __init__(self, inner: SqliteLocks, lock_id: str, act: Callable[[], None]) -> None:
        super().__init__(inner.db)
        self.lock_id = lock_id
        self.act: Callable[[], None] | None = act

    def acquire(self, key: str, lock: LockInfo) -> None:
        super().acquire(key, lock)
        self._acquired(key, lock)

    def acquire_then(self, key: str, lock: LockInfo, then: Changed) -> None:
        super().acquire_then(key, lock, then)
        self._acquired(key, lock)

    def _acquired(self, key: str, lock: LockInfo) -> None:
        if lock.id == self.lock_id and key == str(NAME) and self.act is not None:
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
    hooked = _AfterAcquiring(
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

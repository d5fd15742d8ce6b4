"""The lock policy on every lock table: shared plans, the writer taking the lock, leases.

Each case runs on the embedded SQLite store and on S3 (moto over HTTP) with a
DynamoDB table, with S3 lock files, and with both (Terraform's transition
mode). After every step the lock Terraform's own backend reads (the DynamoDB
item, the ``.tflock`` file) must be held exactly while some holder holds the
state.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from statekeeper.app import Services
from statekeeper.errors import Forbidden, LockConflict
from statekeeper.events import Action, Event
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings
from statekeeper.state.lockpolicy import LockPolicy
from statekeeper.state.operator import Operator
from statekeeper.state.views import LockEntry
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import MotoServer
from statekeeper.times import utcnow

NAME = StateName("team/app.tfstate")
PROD = StateName("prod/app.tfstate")
BUCKET = "lock-policy"
TABLE = "lock-policy-locks"
LOCKS = {
    "sqlite": None,
    "dynamodb": f"dynamodb://{TABLE}",
    "s3lock": f"s3lock://{BUCKET}",
    "dual": f"dynamodb://{TABLE},s3lock://{BUCKET}",
}
POLICY = {"rules": [{"states": ["prod/**"], "mode": "exclusive"}]}
ALICE, BOB, CAROL = Caller("alice"), Caller("bob"), Caller("carol")


def _plan(who: str) -> LockInfo:
    return LockInfo.new("OperationTypePlan", who)


def _apply(who: str) -> LockInfo:
    return LockInfo.new("OperationTypeApply", who)


class World:
    """Services on one store, the events they emit, and a raw view of the lock tables."""

    def __init__(self, services: Services, kind: str, moto: MotoServer | None) -> None:
        self.services = services
        self.kind = kind
        self.moto = moto
        self.events: list[Event] = []
        services.events.subscribe(self.events.append)

    def lock(self, info: LockInfo, caller: Caller, name: StateName = NAME) -> LockInfo:
        return self.services.locks.lock(name, info.body, caller)

    def unlock(self, info: LockInfo, caller: Caller, name: StateName = NAME) -> LockInfo:
        return self.services.locks.unlock(name, info.body, caller)

    def listed(self) -> list[LockEntry]:
        s = self.services
        return Operator(s).list_locks(Caller("operator"))

    def rows(self) -> list[tuple[str, str, bool]]:
        """(ID, mode, primary) of every holder listed, in listing order."""
        return [(r.id, r.mode, r.primary) for r in self.listed()]

    def terraform_sees(self, name: StateName = NAME) -> set[str | None]:
        """The lock ID in each of Terraform's own lock places (None: not locked there)."""
        held = [t.read(str(name)) for t in self._tables()]
        return {None if lock is None else lock.id for lock in held}

    def raw_keys(self) -> list[str]:
        return sorted({k for t in self._tables() for k, _ in t.scan()})

    def _tables(self) -> list[Any]:
        return self.services.lock_table.parts()

    def decisions(self, action: Action = Action.LOCK) -> list[tuple[str, str, str | None]]:
        return [(e.outcome, e.lock_id or "", e.detail) for e in self.events if e.action is action]


@pytest.fixture(params=list(LOCKS))
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    yield from _world(request, tmp_path, LockPolicy.parse(POLICY))


def _world(request: pytest.FixtureRequest, tmp_path: Path, policy: LockPolicy) -> Iterator[World]:
    kind: str = request.param
    settings = Settings(data_dir=tmp_path / "data", lock_policy=policy)
    moto: MotoServer | None = None
    if LOCKS[kind] is not None:
        moto = request.getfixturevalue("moto")
        moto.versioned_bucket(BUCKET)
        moto.lock_table(TABLE)
        settings = Settings(
            data_dir=tmp_path / "data",
            store=f"s3://{BUCKET}",
            locks=LOCKS[kind],
            lock_policy=policy,
        )
    services = Services.build(settings)
    yield World(services, kind, moto)
    services.close()


def test_plans_share_and_terraform_sees_the_state_locked_until_the_last_leaves(
    world: World,
) -> None:
    first, second = _plan("alice@laptop"), _plan("bob@ci")
    world.lock(first, ALICE)
    world.lock(second, BOB)  # a second plan: no 423

    assert world.rows() == [(first.id, "shared", True), (second.id, "shared", False)]
    assert world.terraform_sees() == {first.id}
    # The first plan leaves: the lock Terraform sees passes to the second.
    world.unlock(first, ALICE)
    assert world.terraform_sees() == {second.id}
    assert world.rows() == [(second.id, "shared", True)]
    world.unlock(second, BOB)
    assert world.terraform_sees() == {None}
    assert world.raw_keys() == []  # no hold and no marker left behind
    shared = world.decisions()[1]
    assert shared[0] == "ok" and shared[2] and "shared with the plan" in shared[2]


def test_an_apply_takes_the_lock_from_plans_and_new_plans_wait(world: World) -> None:
    first, second, apply = _plan("alice@laptop"), _plan("bob@ci"), _apply("carol@ci")
    world.lock(first, ALICE)
    world.lock(second, BOB)
    world.lock(apply, CAROL)  # readers never block the writer

    assert world.terraform_sees() == {apply.id}
    assert world.rows() == [
        (apply.id, "exclusive", True),
        (first.id, "shared", False),
        (second.id, "shared", False),
    ]
    late = _plan("dave@laptop")
    with pytest.raises(LockConflict) as refused:
        world.lock(late, Caller("dave"))
    assert refused.value.holder.id == apply.id
    # A plan can never write: its lock is not the one writes are fenced on.
    for plan in (first, second):
        with pytest.raises(LockConflict):
            world.services.locks.fence(NAME, plan.id, ALICE)
    world.services.locks.fence(NAME, apply.id, CAROL)

    world.unlock(first, ALICE)
    assert world.terraform_sees() == {apply.id}
    world.unlock(apply, CAROL)
    # The plan still running keeps the state locked for Terraform's own backend.
    assert world.terraform_sees() == {second.id}
    world.lock(late, Caller("dave"))  # plans share again
    world.unlock(second, BOB)
    world.unlock(late, Caller("dave"))
    assert world.terraform_sees() == {None}
    assert world.raw_keys() == []
    taken = next(d for d in world.decisions() if d[1] == apply.id)
    assert taken[0] == "ok" and taken[2] and "taken from the shared plan" in taken[2]
    assert ("locked", late.id) in [(o, i) for o, i, _ in world.decisions()]


def test_a_plan_holding_alone_cannot_write_under_shared_plans(world: World) -> None:
    plan = _plan("alice@laptop")
    world.lock(plan, ALICE)
    with pytest.raises(LockConflict, match="a write needs an exclusive lock"):
        world.services.locks.fence(NAME, plan.id, ALICE)


def test_exclusive_states_keep_terraforms_semantics(world: World) -> None:
    first = _plan("alice@laptop")
    world.lock(first, ALICE, PROD)
    with pytest.raises(LockConflict):
        world.lock(_plan("bob@ci"), BOB, PROD)
    with pytest.raises(LockConflict):
        world.lock(_apply("carol@ci"), CAROL, PROD)
    world.services.locks.fence(PROD, first.id, ALICE)  # Terraform's rules: no refusal
    assert [(r.mode, r.primary) for r in world.listed()] == [("exclusive", True)]


def test_a_shared_hold_belongs_to_the_identity_that_took_it(world: World) -> None:
    first, second = _plan("alice@laptop"), _plan("bob@ci")
    world.lock(first, ALICE)
    world.lock(second, BOB)
    mallory = Caller("mallory", scopes=("team/**:write",))
    with pytest.raises(Forbidden):
        world.services.locks.unlock(NAME, second.body, mallory)
    assert [r[0] for r in world.rows()] == [first.id, second.id]
    # Bob's LOCK retried with his own ID is his; Mallory's with it is a conflict.
    assert world.lock(second, BOB).id == second.id
    with pytest.raises(LockConflict):
        world.lock(second, mallory)


def test_force_unlock_removes_every_holder(world: World) -> None:
    world.lock(_plan("alice@laptop"), ALICE)
    world.lock(_plan("bob@ci"), BOB)
    world.services.locks.force_unlock(NAME, Caller("root"), lock_id=None)
    assert world.rows() == []
    assert world.raw_keys() == []


@pytest.fixture(params=list(LOCKS))
def leased(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    policy = LockPolicy.parse(
        {"ttl": {"plan": "1s"}, "rules": [{"states": ["prod/**"], "ttl": {"*": "2h"}}]}
    )
    yield from _world(request, tmp_path, policy)


def test_an_expired_plan_is_released_at_the_next_lock(leased: World) -> None:
    plan, apply = _plan("alice@laptop"), _apply("carol@ci")
    world = leased
    world.lock(_apply("bob@ci"), BOB, PROD)
    world.lock(plan, ALICE)
    time.sleep(1.2)
    world.lock(apply, CAROL)  # the plan's lease is over: no plan is left behind

    assert [(r.id, r.mode) for r in world.listed() if r.name == str(NAME)] == [
        (apply.id, "exclusive")
    ]
    expired = [e for e in world.events if e.action is Action.EXPIRE]
    assert [(e.state, e.lock_id, e.actor, e.outcome) for e in expired] == [
        (str(NAME), plan.id, "statekeeper", "ok")
    ]
    assert expired[0].detail and "lease of OperationTypePlan locks" in expired[0].detail
    granted = world.decisions()[-1]
    assert granted[1] == apply.id and granted[2] and "lease of lock" in granted[2]
    # The apply has no lease here; prod's locks have two hours, whatever they do.
    later = utcnow() + timedelta(hours=1)
    assert world.services.locks.expire_due(now=later) == []
    gone = world.services.locks.expire_due(now=utcnow() + timedelta(hours=3))
    assert [(h.name, h.primary) for h in gone] == [(str(PROD), True)]


def test_expired_shared_holds_go_and_the_next_plan_takes_the_lock(leased: World) -> None:
    world = leased
    first, second = _plan("alice@laptop"), _plan("bob@ci")
    world.lock(first, ALICE)
    world.lock(second, BOB)
    gone = world.services.locks.expire_due(now=utcnow() + timedelta(seconds=5))
    assert sorted(h.lock.id for h in gone) == sorted([first.id, second.id])
    assert world.terraform_sees() == {None}
    assert world.raw_keys() == []
    assert len([e for e in world.events if e.action is Action.EXPIRE]) == 2


@pytest.mark.parametrize("leased", ["dynamodb"], indirect=True)
def test_a_lock_terraforms_own_backend_wrote_never_expires(leased: World) -> None:
    world = leased
    assert world.moto is not None
    # The item Terraform's backend "s3" writes: its LockInfo, no server time, no
    # identity. Its Created is the client's clock, which may say anything.
    theirs = LockInfo.new("OperationTypePlan", "tf@laptop", created=utcnow() - timedelta(days=1))
    world.moto.client("dynamodb").put_item(
        TableName=TABLE,
        Item={"LockID": {"S": f"{BUCKET}/{NAME}"}, "Info": {"S": theirs.body.decode()}},
    )
    assert world.services.locks.expire_due(now=utcnow() + timedelta(days=2)) == []
    with pytest.raises(LockConflict):
        world.lock(_plan("alice@laptop"), ALICE)  # and it shares with nobody

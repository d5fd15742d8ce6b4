"""Unlock and reap: what is removed, what is kept, and the audit record of each."""

from __future__ import annotations

from datetime import timedelta

import pytest

from statekeeper.app import Services
from statekeeper.errors import BadRequest, LockConflict, LockMismatch, LockNotFound
from statekeeper.security.audit import AuditFilter
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission
from statekeeper.state.listing import list_locks, list_states
from statekeeper.state.reap import parse_duration, reap, unlock
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.statefiles import state_bytes
from statekeeper.times import utcnow


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("30s", 30),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1w", 604800),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2", "h", "2x", "-1h", "1h 30", "1hx"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(BadRequest, match=r"e\.g\. 30m"):
        parse_duration(text)


def _lock(s: Services, name: str, operation: str, age: timedelta, who: str = "bob@ci") -> LockInfo:
    info = LockInfo.new(operation, who, created=utcnow() - age)
    s.locks.lock(StateName(name), info.body, Caller("bob"))
    return info


def test_reap_removes_old_locks_of_the_operation_and_records_each(
    services: Services, caller: Caller
) -> None:
    old_plan = _lock(services, "a.tfstate", "OperationTypePlan", timedelta(hours=3))
    _lock(services, "b.tfstate", "OperationTypeApply", timedelta(hours=3))
    _lock(services, "c.tfstate", "OperationTypePlan", timedelta(minutes=5))

    dry = reap(
        services.locks, caller, older_than=timedelta(hours=2), operation="plan", dry_run=True
    )
    assert [(r.name, r.removed) for r in dry] == [("a.tfstate", False)]
    assert services.locks.read(StateName("a.tfstate")) is not None

    done = reap(services.locks, caller, older_than=timedelta(hours=2), operation="plan")
    assert [(r.name, r.lock.id, r.removed) for r in done] == [("a.tfstate", old_plan.id, True)]
    assert services.locks.read(StateName("a.tfstate")) is None
    assert services.locks.read(StateName("b.tfstate")) is not None
    assert services.locks.read(StateName("c.tfstate")) is not None
    (record,) = services.audit.query(AuditFilter(action="reap"))
    assert record.state == "a.tfstate" and record.lock_id == old_plan.id
    assert record.actor == "alice@laptop" and record.who == "bob@ci" and record.outcome == "ok"

    everything = reap(services.locks, caller, older_than=timedelta(0))
    assert sorted(r.name for r in everything) == ["b.tfstate", "c.tfstate"]


def test_unlock_needs_the_id_or_force(services: Services, caller: Caller) -> None:
    name = StateName("a.tfstate")
    held = _lock(services, "a.tfstate", "OperationTypeApply", timedelta(minutes=1))
    with pytest.raises(LockConflict, match=f"--id {held.id}") as err:
        unlock(services.locks, name, caller)
    assert err.value.exit_code == 3
    with pytest.raises(LockMismatch):
        unlock(services.locks, name, caller, lock_id="not-it")
    assert unlock(services.locks, name, caller, lock_id=held.id).lock.id == held.id
    with pytest.raises(LockNotFound, match="nothing to unlock"):
        unlock(services.locks, name, caller, force=True)
    _lock(services, "a.tfstate", "OperationTypeApply", timedelta(minutes=1))
    assert unlock(services.locks, name, caller, force=True).removed


def test_listings_join_states_and_locks(services: Services, caller: Caller) -> None:
    services.states.write(StateName("team/a.tfstate"), state_bytes(3), caller)
    services.states.write(StateName("env:/dev/team/a.tfstate"), state_bytes(1), caller)
    services.states.write(StateName("other.tfstate"), state_bytes(1), caller)
    _lock(services, "team/a.tfstate", "OperationTypeApply", timedelta(minutes=10))
    rows = list_states(services.store, services.lock_table, services.policy, caller, details=True)
    by = {r.name: r for r in rows}
    assert sorted(by) == ["env:/dev/team/a.tfstate", "other.tfstate", "team/a.tfstate"]
    assert by["team/a.tfstate"].lock is not None and by["team/a.tfstate"].serial == 3
    assert by["team/a.tfstate"].versions == 1 and by["other.tfstate"].lock is None
    assert [
        r.name
        for r in list_states(services.store, services.lock_table, services.policy, caller, "team/")
    ] == ["team/a.tfstate"]
    (lock,) = list_locks(services.lock_table, services.policy, caller)
    assert lock.lock.who == "bob@ci" and lock.age_seconds is not None and lock.age_seconds >= 600
    assert not lock.drift


class _OnlyTeam:
    """A policy granting only the states under team/."""

    def allows(self, caller: Caller, name: StateName | None, needed: Permission) -> bool:
        return name is not None and str(name).startswith("team/")


def test_listings_leave_out_what_the_caller_may_not_read(
    services: Services, caller: Caller
) -> None:
    services.states.write(StateName("team/a.tfstate"), state_bytes(1), caller)
    services.states.write(StateName("secret/b.tfstate"), state_bytes(1), caller)
    _lock(services, "secret/b.tfstate", "OperationTypeApply", timedelta(minutes=1))
    _lock(services, "team/a.tfstate", "OperationTypeApply", timedelta(minutes=1))
    policy = _OnlyTeam()
    rows = list_states(services.store, services.lock_table, policy, caller)
    assert [r.name for r in rows] == ["team/a.tfstate"]
    assert [lock.name for lock in list_locks(services.lock_table, policy, caller)] == [
        "team/a.tfstate"
    ]

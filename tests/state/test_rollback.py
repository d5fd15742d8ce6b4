"""Rollback: old bytes as a new version, serial = current + 1, under the lock."""

from __future__ import annotations

import hashlib
import json

import pytest

from statekeeper.app import Services
from statekeeper.errors import EncryptedState, LockConflict, StateConflict, VersionNotFound
from statekeeper.security.caller import Caller
from statekeeper.state.inspection import Inspector
from statekeeper.state.rollback import push, rewrite_serial, rollback
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.statefiles import instance, state_bytes

NAME = StateName("team/app.tfstate")


def test_rewrite_serial_changes_only_the_number() -> None:
    data = state_bytes(7, resources=[instance("t", "a", {"serial": 7})])
    out = rewrite_serial(data, 12)
    assert json.loads(out)["serial"] == 12
    assert out.replace(b'"serial": 12', b'"serial": 7', 1) == data
    assert len(out) == len(data) + 1


def test_rewrite_serial_skips_a_nested_serial_that_comes_first() -> None:
    data = (
        b'{"outputs": {"o": {"value": {"serial": 3}}}, "version": 4, "serial": 3, "lineage": "l"}'
    )
    out = rewrite_serial(data, 4)
    assert out == data.replace(b'"serial": 3, "lineage"', b'"serial": 4, "lineage"')


def _inspector(s: Services) -> Inspector:
    return Inspector(s.states, s.history)


def test_rollback_writes_old_bytes_with_the_next_serial(services: Services, caller: Caller) -> None:
    v1 = state_bytes(1, resources=[instance("t", "a", {"x": 1})])
    v2 = state_bytes(2, resources=[instance("t", "a", {"x": 2}), instance("t", "b", {})])
    first = services.states.write(NAME, v1, caller).version
    services.states.write(NAME, v2, caller)

    result = rollback(
        services.states, services.locks, _inspector(services), NAME, first.version_id, caller
    )

    current = services.states.read_existing(NAME, caller)
    assert current.version.serial == 3
    assert current.data == rewrite_serial(v1, 3)
    assert current.version.lineage == first.lineage
    assert result.restored.version_id == first.version_id and result.previous.serial == 2
    # The digest Terraform's S3 backend checks follows the write.
    assert services.lock_table.get_digest(str(NAME)) == hashlib.md5(current.data).hexdigest()
    assert services.locks.read(NAME) is None, "the rollback lock is released"
    assert [v.serial for v in services.history.versions(NAME, caller)] == [3, 2, 1]


def test_rollback_by_serial(services: Services, caller: Caller) -> None:
    for serial in (1, 2, 3):
        services.states.write(
            NAME, state_bytes(serial, outputs={"s": {"value": serial, "type": "number"}}), caller
        )
    rollback(services.states, services.locks, _inspector(services), NAME, "serial:2", caller)
    doc = json.loads(services.states.read_existing(NAME, caller).data)
    assert (doc["serial"], doc["outputs"]["s"]["value"]) == (4, 2)


def test_rollback_refuses_while_someone_else_holds_the_lock(
    services: Services, caller: Caller
) -> None:
    services.states.write(NAME, state_bytes(1), caller)
    services.states.write(
        NAME, state_bytes(2, outputs={"o": {"value": 1, "type": "number"}}), caller
    )
    held = LockInfo.new("OperationTypeApply", "bob@ci")
    services.locks.lock(NAME, held.body, Caller("bob"))
    with pytest.raises(LockConflict) as err:
        rollback(services.states, services.locks, _inspector(services), NAME, "serial:1", caller)
    assert err.value.holder.who == "bob@ci" and err.value.exit_code == 3
    assert services.states.read_existing(NAME, caller).version.serial == 2
    assert services.locks.read(NAME) is not None and services.locks.read(NAME).id == held.id  # type: ignore[union-attr]


def test_rollback_to_an_unknown_version(services: Services, caller: Caller) -> None:
    services.states.write(NAME, state_bytes(1), caller)
    with pytest.raises(VersionNotFound, match="statekeeper history"):
        rollback(services.states, services.locks, _inspector(services), NAME, "999", caller)
    assert services.locks.read(NAME) is None


def test_rollback_of_an_encrypted_state_is_refused(services: Services, caller: Caller) -> None:
    env = {
        "serial": 1,
        "lineage": "l",
        "meta": {},
        "encrypted_data": "AA==",
        "encryption_version": "v0",
    }
    services.states.write(NAME, json.dumps(env).encode(), caller)
    services.states.write(NAME, json.dumps({**env, "serial": 2}).encode(), caller)
    with pytest.raises(EncryptedState):
        rollback(services.states, services.locks, _inspector(services), NAME, "serial:1", caller)


def test_push_applies_the_guard_and_force_overrides(services: Services, caller: Caller) -> None:
    push(services.states, services.locks, NAME, state_bytes(5), caller)
    with pytest.raises(StateConflict, match="serial 3 over newer state with serial 5"):
        push(services.states, services.locks, NAME, state_bytes(3), caller)
    result = push(services.states, services.locks, NAME, state_bytes(3), caller, force=True)
    assert result.outcome.created and result.outcome.version.serial == 3
    assert services.states.read_existing(NAME, caller).data == state_bytes(3)
    assert services.locks.read(NAME) is None

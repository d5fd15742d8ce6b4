"""A lock row that is not a LockInfo (a hand-edited database) is listed, not a failure."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

from statekeeper.app import Services
from statekeeper.security.caller import Caller
from statekeeper.state.listing import list_locks, list_states
from statekeeper.state.reap import reap
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.statefiles import state_bytes


def test_a_damaged_lock_row_is_listed_as_damaged_and_never_reaped(
    services: Services, caller: Caller
) -> None:
    name = StateName("team/app.tfstate")
    services.states.write(name, state_bytes(1), caller)
    services.locks.lock(name, LockInfo.new("OperationTypeApply", "bob@ci").body, caller)
    with sqlite3.connect(services.settings.data_dir / "statekeeper.db") as db:
        db.execute("UPDATE locks SET body = ? WHERE key = ?", (b"\x00garbage", str(name)))

    (row,) = list_locks(services.lock_table, services.policy, caller)
    assert row.name == str(name)
    assert row.lock.damaged is not None and "damaged" in row.lock.damaged
    assert row.view().damaged == row.lock.damaged
    (state,) = list_states(services.store, services.lock_table, services.policy, caller)
    assert state.lock is not None and state.lock.lock.damaged == row.lock.damaged
    assert reap(services.locks, caller, older_than=timedelta(0)) == []

"""The UI shows every holder of a shared lock: the locks page and the state page."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from statekeeper.app import Services
from statekeeper.security.caller import Caller
from statekeeper.server.app import create_app
from statekeeper.settings import load_settings
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.statefiles import state_bytes

NAME = StateName("team/app.tfstate")


def test_plans_sharing_a_lock_are_each_listed_and_the_state_says_shared(tmp_path: Path) -> None:
    services = Services.build(load_settings({"data_dir": tmp_path / "data"}, env={}))
    try:
        services.states.write(NAME, state_bytes(1), Caller("operator"))
        first = LockInfo.new("OperationTypePlan", "alice@laptop")
        second = LockInfo.new("OperationTypePlan", "bob@ci")
        services.locks.lock(NAME, first.body, Caller("alice"))
        services.locks.lock(NAME, second.body, Caller("bob"))
        with TestClient(create_app(services), base_url="http://localhost") as client:
            locks = client.get("/ui/locks").text
            states = client.get("/").text
            state = client.get(f"/ui/state/{NAME}").text
            # Each holder can be force-unlocked on its own, behind a confirmation naming it.
            confirm = client.get(f"/ui/unlock/{NAME}", params={"id": second.id}).text
    finally:
        services.close()

    assert first.id in locks and second.id in locks
    assert locks.count(">shared</span>") == 2
    assert locks.count("/ui/unlock/team/app.tfstate?id=") == 2
    assert second.id in confirm and "bob@ci" in confirm and first.id not in confirm
    assert "shared by 2 holders" in state
    assert "OperationTypePlan (shared)" in states  # the states page's lock badge
    assert first.id in state

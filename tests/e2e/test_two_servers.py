"""Two ``statekeeper serve`` processes on one data directory, as an operator starts
them by accident (``make serve`` in one shell, ``statekeeper serve --port 9000`` in
another): the locks, the write rules and the tokens are the database's, so what one
server keeps in memory never decides an answer of the other
(docs/operations.md#one-data-dir). Webhooks: tests/hooks/test_webhooks.py,
``test_two_servers_on_one_database_deliver_each_event_once``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.security.support import basic, lock_body, make_tokens, state_json
from watch import running_in_group, terraform_who, wait_until

from statekeeper.testing.processes import SRC, StatekeeperServer
from statekeeper.testing.terraform import Terraform

Serve = Callable[..., StatekeeperServer]
NAME = "team/app.tfstate"


def statekeeper(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The operator CLI on ``data`` while the servers run."""
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", "--data-dir", str(data), *args],
        env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def two_servers(serve: Serve, data: Path) -> tuple[StatekeeperServer, StatekeeperServer]:
    """Two servers started from two shells (working directories) on ``data``."""
    first = serve("--data-dir", str(data), workdir=data.parent / "shell-a")
    second = serve("--data-dir", str(data), workdir=data.parent / "shell-b")
    return first, second


def test_a_lock_write_rule_and_revocation_through_one_server_hold_through_the_other(
    serve: Serve, tmp_path: Path
) -> None:
    secrets = make_tokens(tmp_path, {"ops": ["**:admin"], "leaver": ["**:admin"]})
    data = tmp_path / ".statekeeper"
    a, b = two_servers(serve, data)
    ops = basic("ops", secrets["ops"])
    holder = str(uuid.uuid4())
    with httpx.Client(timeout=30, headers=ops) as http:
        at_a, at_b = a.state_url(NAME), b.state_url(NAME)
        assert http.request("LOCK", at_a, content=lock_body(holder)).status_code == 200

        # B refuses another LOCK, and writes without the holder's ID, naming the holder.
        refused = http.request("LOCK", at_b, content=lock_body(str(uuid.uuid4())))
        assert refused.status_code == 423, refused.text
        assert refused.json()["ID"] == holder
        for params in ({}, {"ID": str(uuid.uuid4())}):
            write = http.post(at_b, params=params, content=state_json(1))
            assert write.status_code == 423, write.text
            assert write.json()["ID"] == holder
        assert http.get(at_b).status_code == 404  # nothing was written
        # The operator CLI sees the lock beside both servers.
        listed = statekeeper(data, "locks", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [lock["id"] for lock in json.loads(listed.stdout)] == [holder]

        # The holder may write and unlock through either; A's memory of its grant
        # does not outlive the release B made.
        assert http.post(at_b, params={"ID": holder}, content=state_json(1)).status_code == 200
        mismatch = http.request("UNLOCK", at_b, content=lock_body(str(uuid.uuid4())))
        assert mismatch.status_code == 409 and mismatch.json()["error"] == "lock_mismatch"
        assert http.request("UNLOCK", at_b, content=lock_body(holder)).status_code == 200
        gone = http.request("UNLOCK", at_a, content=lock_body(holder))
        assert gone.status_code == 409 and gone.json()["error"] == "lock_not_found"

        # The serial/lineage guard: A last saw serial 1; B writes serial 2; A must not
        # take another serial 2, nor an older serial, on what it remembers.
        assert http.get(at_a).json()["serial"] == 1
        assert http.post(at_b, content=state_json(2)).status_code == 200
        for serial in (2, 1):
            stale = http.post(at_a, content=state_json(serial, check_results=[]))
            assert stale.status_code == 409, stale.text
            assert stale.json()["error"] == "state_conflict"
        assert http.get(at_a).content == state_json(2)

    # A token revoked by the operator CLI is refused by both servers at once.
    leaver = basic("leaver", secrets["leaver"])
    for server in (a, b):
        assert httpx.get(f"{server.url}/api/v1/states", headers=leaver).status_code == 200
    revoked = statekeeper(data, "token", "revoke", "leaver")
    assert revoked.returncode == 0, revoked.stderr
    for server in (a, b):
        assert httpx.get(f"{server.url}/api/v1/states", headers=leaver).status_code == 401


# Holds the state lock until the test creates the gate file (at most a minute).
GATED = """
resource "terraform_data" "slow" {
  input = "slow"
  provisioner "local-exec" {
    command = "for i in $(seq 600); do [ -e '%s' ] && exit 0; sleep 0.1; done; exit 1"
  }
}
"""


@pytest.mark.terraform
def test_terraform_through_one_server_meets_the_lock_of_an_apply_through_the_other(
    serve: Serve, tmp_path: Path
) -> None:
    data = tmp_path / ".statekeeper"
    a, b = two_servers(serve, data)
    gate = tmp_path / "release-the-lock"
    first = Terraform(tmp_path / "first").write(a.backend_block(NAME) + GATED % gate)
    second = Terraform(tmp_path / "second").write(b.backend_block(NAME) + GATED % gate)
    for tf in (first, second):
        tf.run("init").check()

    holding = first.start("apply")

    def lock_id() -> str | None:
        listed = json.loads(statekeeper(data, "locks", "--json").stdout)
        return str(listed[0]["id"]) if listed else None

    holder = wait_until("the apply through A to take the lock", lock_id)
    wait_until(
        "the apply through A to run its provisioner", lambda: running_in_group(holding, "sleep")
    )

    refused = second.run("apply")
    assert refused.returncode != 0
    assert "Error acquiring the state lock" in refused.output
    assert holder in refused.output and terraform_who() in refused.output

    gate.touch()
    assert "1 added" in first.wait(holding, ("apply",)).check().stdout
    # Through B, on the state A's apply wrote: nothing left to add.
    assert "0 added" in second.run("apply").check().stdout
    assert lock_id() is None

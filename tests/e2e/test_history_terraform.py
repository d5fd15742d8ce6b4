"""Real Terraform's long apply against ``statekeeper serve``: its snapshots compacted."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

import httpx
import pytest

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.terraform import Terraform

pytestmark = pytest.mark.terraform

Serve = Callable[..., StatekeeperServer]
MakeTerraform = Callable[..., Terraform]

# "slow" outlasts Terraform's 20 s persist interval, between resources that finish
# before and after it: Terraform persists an intermediate snapshot during the apply.
LONG_APPLY = """
resource "terraform_data" "before" { input = "before" }
resource "terraform_data" "slow" {
  input      = "slow"
  depends_on = [terraform_data.before]
  provisioner "local-exec" { command = "sleep 25" }
}
resource "terraform_data" "after" {
  input      = "after"
  depends_on = [terraform_data.slow]
}
"""


def audited(server: StatekeeperServer) -> list[dict[str, object]]:
    db = sqlite3.connect(server.workdir / ".statekeeper" / "statekeeper.db")
    try:
        return [json.loads(row[0]) for row in db.execute("SELECT event FROM audit ORDER BY rowid")]
    finally:
        db.close()


def test_a_long_applys_snapshots_collapse_into_its_last(
    serve: Serve, terraform: MakeTerraform
) -> None:
    server = serve()
    name = "team/long.tfstate"
    tf = terraform().write(server.backend_block(name) + LONG_APPLY)
    tf.run("init").check()
    tf.run("apply").check()

    events = audited(server)
    writes = [e for e in events if e["action"] == "write" and e["outcome"] == "ok"]
    lock_ids = {e["lock_id"] for e in writes}
    # Check the premise: Terraform wrote more than once under the apply's one lock.
    assert len(lock_ids) == 1 and len(writes) >= 2, writes
    (lock_id,) = lock_ids
    compact = [e for e in events if e["action"] == "compact"]
    assert len(compact) == 1 and compact[0]["lock_id"] == lock_id

    answer = httpx.get(f"{server.url}/api/v1/versions/{name}", timeout=10)
    assert answer.status_code == 200, answer.text
    versions = answer.json()
    assert len(versions) == 1  # a first apply: nothing was current when it locked
    assert versions[0]["replaced"] == len(writes) - 1
    assert versions[0]["version_id"] == compact[0]["version"]
    # The state Terraform wrote last is the one kept, byte for byte.
    state = httpx.get(server.state_url(name), timeout=10)
    assert sorted(r["name"] for r in state.json()["resources"]) == ["after", "before", "slow"]
    assert tf.run("plan", "-detailed-exitcode").returncode == 0

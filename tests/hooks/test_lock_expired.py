"""A lease ending on a real ``statekeeper serve``: the sweeper removes the lock, the
``lock.expired`` webhook arrives signed, the expiries counter counts it, and the
next LOCK succeeds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from tests.hooks.test_webhooks import FAST, Receiver, add_hook, receiver, statekeeper
from tests.security.support import lock_body

from statekeeper.testing.processes import StatekeeperServer

NAME = "team/app.tfstate"
__all__ = ["receiver"]  # the fixture, shared with the webhook tests
# TOML text of the [lock_policy] table, as the environment carries it.
LEASES = 'ttl = { plan = "1s" }\nsweep = "1s"'


def test_an_expired_plan_lock_is_swept_with_a_webhook_and_a_count(
    tmp_path: Path, serve: Callable[..., StatekeeperServer], receiver: Receiver
) -> None:
    workdir = tmp_path / "server"
    add_hook(workdir, receiver.url, "--state", "team/**")
    server = serve(workdir=workdir, env={**FAST, "STATEKEEPER_LOCK_POLICY": LEASES})
    plan, apply = str(uuid.uuid4()), str(uuid.uuid4())
    with httpx.Client(timeout=30) as http:
        url = server.state_url(NAME)
        taken = http.request("LOCK", url, content=lock_body(plan, operation="OperationTypePlan"))
        assert taken.status_code == 200
        receiver.wait_for(2)  # lock.acquired, then the sweeper's lock.expired
        assert http.get(f"{server.url}/api/v1/locks").json() == []
        # The next LOCK succeeds, and an apply has no lease: it stays.
        assert http.request("LOCK", url, content=lock_body(apply)).status_code == 200
        time.sleep(2.5)
        assert [r["id"] for r in http.get(f"{server.url}/api/v1/locks").json()] == [apply]
        metrics = http.get(f"{server.url}/metrics").text

    assert receiver.types()[:2] == ["io.statekeeper.lock.acquired", "io.statekeeper.lock.expired"]
    expired = receiver.deliveries[1]
    assert expired["verified"]
    assert expired["event"]["subject"] == NAME
    assert expired["event"]["data"]["lock_id"] == plan
    assert "lease of OperationTypePlan locks" in expired["event"]["data"]["detail"]
    assert 'statekeeper_lock_expiries_total{state=""} 1.0' in metrics
    audit = statekeeper(workdir, "audit", "--json")
    assert '"action": "expire"' in audit or '"action":"expire"' in audit

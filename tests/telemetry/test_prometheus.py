"""A real Prometheus scrapes a real ``statekeeper serve`` while real Terraform runs collide.

Prometheus (Debian's package) scrapes the main port with a ``**:metrics`` token
and the ``metrics_listen`` port with nothing, every second; three applies meet
one lock (one gives up, one waits with ``-lock-timeout``); the test then asks
Prometheus' HTTP API for the counters those runs must have left.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.e2e.watch import lock_of, running_in_group, wait_until
from tests.security.support import make_tokens

from statekeeper.testing.processes import (
    PROMETHEUS,
    PrometheusServer,
    StatekeeperServer,
    free_port,
)
from statekeeper.testing.terraform import Terraform

pytestmark = pytest.mark.terraform

NAME = "team/shared.tfstate"

# Holds the lock until the test creates the gate file (at most a minute).
GATED = """
resource "terraform_data" "slow" {
  input = "slow"
  provisioner "local-exec" {
    command = "for i in $(seq 600); do [ -e '%s' ] && exit 0; sleep 0.1; done; exit 1"
  }
}
"""


@pytest.fixture
def prometheus_binary() -> Path:
    if not PROMETHEUS.exists():
        message = f"{PROMETHEUS} is missing: apt-get install -y prometheus (.ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return PROMETHEUS


def _eventually(prometheus: PrometheusServer, expr: str, at_least: float = 1) -> float:
    """Poll Prometheus until ``expr`` reaches ``at_least`` (scrapes come every second)."""
    last: float | None = None

    def reached() -> bool:
        nonlocal last
        try:
            last = prometheus.value(expr)
        except (OSError, urllib.error.URLError, RuntimeError):
            return False  # still starting
        return last is not None and last >= at_least

    try:
        wait_until(f"{expr} >= {at_least}", reached, timeout=60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last value {last}\n{prometheus.log()[-3000:]}") from exc
    assert last is not None
    return last


def test_prometheus_sees_the_applies_and_the_lock_collisions(
    tmp_path: Path,
    prometheus_binary: Path,
    serve: Callable[..., StatekeeperServer],
    terraform: Callable[..., Terraform],
) -> None:
    workdir = tmp_path / "server"
    secrets = make_tokens(workdir, {"deployer": ["team/*:write"], "scraper": ["**:metrics"]})
    plain_port = free_port()
    server = serve(
        workdir=workdir,
        env={
            "STATEKEEPER_METRICS_LISTEN": f"127.0.0.1:{plain_port}",
            "STATEKEEPER_METRICS_STATES": "team/*",
        },
    )
    target = server.url.removeprefix("http://")
    prometheus = PrometheusServer(
        tmp_path / "prometheus",
        {
            "statekeeper": {
                "static_configs": [{"targets": [target]}],
                "authorization": {"type": "Bearer", "credentials": secrets["scraper"]},
            },
            "statekeeper-plain": {"static_configs": [{"targets": [f"127.0.0.1:{plain_port}"]}]},
        },
    ).start()
    try:
        assert _eventually(prometheus, 'up{job="statekeeper"}') == 1
        assert _eventually(prometheus, 'up{job="statekeeper-plain"}') == 1

        gate = tmp_path / "release-the-lock"
        config = server.backend_block(NAME, username="deployer", password=secrets["deployer"])
        config += GATED % gate
        first, second, third = (terraform(n).write(config) for n in ("first", "second", "third"))
        for tf in (first, second, third):
            tf.run("init").check()

        holder_run = first.start("apply")
        wait_until("the first apply to take the lock", lambda: lock_of(server, NAME))
        wait_until("its provisioner", lambda: running_in_group(holder_run, "sh"))
        refused = second.run("apply")
        assert refused.returncode != 0
        assert "Error acquiring the state lock" in refused.output
        waiting_run = third.start("apply", "-lock-timeout=60s")
        # Let the first go once the third has met the lock too, as Prometheus saw it.
        _eventually(prometheus, f'statekeeper_lock_conflicts_total{{state="{NAME}"}}', 2)
        assert _eventually(prometheus, "statekeeper_locks_held") == 1
        gate.touch()
        first.wait(holder_run, ("apply",)).check()
        third.wait(waiting_run, ("apply", "-lock-timeout=60s")).check()

        job = 'job="statekeeper"'
        # The first and the third apply took it; the second gave up.
        assert _eventually(prometheus, f"statekeeper_lock_acquisitions_total{{{job}}}", 2) >= 2
        assert _eventually(prometheus, f"statekeeper_lock_wait_seconds_count{{{job}}}") >= 1
        created = f'statekeeper_state_writes_total{{{job},state="{NAME}",result="created"}}'
        assert _eventually(prometheus, created) >= 1
        lock_423 = (
            f'statekeeper_http_requests_total{{{job},route="/state/{{name}}",method="LOCK",'
            'status="423"}'
        )
        assert _eventually(prometheus, lock_423, 2) >= 2
        acquires = (
            f"statekeeper_storage_operation_duration_seconds_count{{{job},"
            'driver="sqlite",operation="acquire"}'
        )
        assert _eventually(prometheus, acquires, 3) >= 3  # two granted, two refused
        assert _eventually(prometheus, f"statekeeper_build_info{{{job}}}") == 1
        # Both listeners serve the same figures.
        plain = f'statekeeper_lock_conflicts_total{{job="statekeeper-plain",state="{NAME}"}}'
        assert _eventually(prometheus, plain, 2) >= 2
        # A latency quantile can be computed from the histogram.
        buckets = f"statekeeper_http_request_duration_seconds_bucket{{{job}}}"
        p99 = prometheus.query(f"histogram_quantile(0.99, sum by (le) (rate({buckets}[1m])))")
        assert p99 and float(p99[0]["value"][1]) >= 0
        # No route label carries a state name.
        assert prometheus.query('count({__name__=~"statekeeper_.*", route=~".*shared.*"})') == []
    finally:
        prometheus.stop()

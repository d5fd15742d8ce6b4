"""``metrics_listen``: the listener of its own a real ``statekeeper serve`` opens."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from statekeeper.testing.processes import StatekeeperServer, free_port


def test_the_metrics_listener_serves_only_the_metrics(
    serve: Callable[..., StatekeeperServer],
) -> None:
    port = free_port()
    serve(env={"STATEKEEPER_METRICS_LISTEN": f"127.0.0.1:{port}"})
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        scraped = http.get("/metrics")
        assert scraped.status_code == 200
        assert "statekeeper_build_info" in scraped.text
        # A health check pointed at this port by mistake sees no 200.
        for path in ("/healthz", "/", "/state/team/app", "/metrics/x"):
            answer = http.get(path)
            assert answer.status_code == 404, path
            assert "serves only /metrics" in answer.text

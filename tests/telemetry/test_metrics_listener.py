"""``metrics_listen``: the listener of its own a real ``statekeeper serve`` opens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from statekeeper.server.scrape import MetricsListener
from statekeeper.telemetry.metrics import Metrics
from statekeeper.testing.processes import SRC, StatekeeperServer, free_port


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


def test_the_first_request_the_port_takes_meets_only_the_metrics() -> None:
    """prometheus_client's start_http_server served its own app (the metrics on every
    path) until ours replaced it: a request as the port opened could read a 200 on
    /healthz. Sent once the port listens and before anything serves, it is the first
    request the listener answers, and it is refused."""
    port = free_port()
    listener = MetricsListener(f"127.0.0.1:{port}", Metrics())
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as first:
            first.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            listener.start()
            answer = first.makefile("rb").read().decode()
        assert answer.startswith("HTTP/1.0 404 "), answer
        assert "serves only /metrics" in answer
    finally:
        listener.close()
    listener.thread.join(timeout=10)
    assert not listener.thread.is_alive()


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_a_metrics_listener_on_the_servers_own_port_stops_the_start(
    tmp_path: Path, host: str
) -> None:
    """It bound beside the server's socket and took its connections: the server said it
    was serving and served nothing, and Terraform's requests met the metrics listener."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")}
    ran = subprocess.run(
        [sys.executable, "-m", "statekeeper", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env={**base, "PYTHONPATH": str(SRC), "STATEKEEPER_METRICS_LISTEN": f"{host}:{port}"},
        capture_output=True,
        text=True,
        timeout=60,  # serving (the failure) never exits
    )
    assert ran.returncode == 2, ran.stderr
    assert f"cannot serve metrics on {host}:{port}: Address already in use" in ran.stderr
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize("port", ["\u00b2", "\u0663", "99999", "x"])
def test_a_metrics_listen_port_that_is_no_port_stops_the_start(tmp_path: Path, port: str) -> None:
    """ "²" and "٣" are digits to str.isdigit(), not to int(): they ended the start with
    int()'s traceback instead of the refusal."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")}
    ran = subprocess.run(
        [sys.executable, "-m", "statekeeper", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env={**base, "PYTHONPATH": str(SRC), "STATEKEEPER_METRICS_LISTEN": f"127.0.0.1:{port}"},
        capture_output=True,
        text=True,
        timeout=60,  # serving (the failure) never exits
    )
    assert ran.returncode == 2, ran.stderr
    assert f"metrics_listen = '127.0.0.1:{port}' is not HOST:PORT" in ran.stderr
    assert "Traceback" not in ran.stderr

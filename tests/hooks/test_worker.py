"""The delivery worker of a real ``statekeeper serve``: a process of its own that never
outlives its server, is replaced when it dies, and sees hooks added while it runs."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.hooks.test_webhooks import FAST, NAME, Receiver, add_hook, receiver
from tests.security.support import lock_body, state_json

from statekeeper.errors import ConfigError
from statekeeper.settings import load_settings
from statekeeper.testing.processes import (
    StatekeeperServer,
    child_of,
    wait_until_gone,
)

__all__ = ["receiver"]  # the fixture, shared with the webhook tests


def worker_of(server: StatekeeperServer) -> int:
    """The pid of the server's delivery worker (its one child running hooks.worker)."""
    return child_of(server.proc.pid, "statekeeper.hooks.worker")


def nice_of(pid: int) -> set[int]:
    """The nice values of every thread of ``pid`` (field 19 of /proc/PID/task/TID/stat)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.add(int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]))
    return found


@pytest.mark.parametrize(("setting", "increment"), [(None, 10), ("4", 4), ("0", 0)])
def test_the_worker_runs_at_a_lower_cpu_priority(
    tmp_path: Path,
    serve: Callable[..., StatekeeperServer],
    receiver: Receiver,
    setting: str | None,
    increment: int,
) -> None:
    workdir = tmp_path / "server"
    add_hook(workdir, receiver.url, "--event", "state.written")
    env = FAST if setting is None else {**FAST, "STATEKEEPER_HOOKS_WORKER_NICE": setting}
    server = serve(workdir=workdir, env=env)
    worker = worker_of(server)
    assert httpx.post(server.state_url(NAME), content=state_json(1), timeout=30).status_code == 200
    receiver.wait_for(1)  # delivered, so its sender thread runs: it must be niced too
    (server_nice,) = nice_of(server.proc.pid)
    assert nice_of(worker) == {min(19, server_nice + increment)}


@pytest.mark.parametrize("value", ["-5", "20", "low"])
def test_a_worker_nice_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="hooks_worker_nice"):
        load_settings({}, env={"STATEKEEPER_HOOKS_WORKER_NICE": value})


def test_the_worker_exits_when_serve_is_killed(
    tmp_path: Path, serve: Callable[..., StatekeeperServer], receiver: Receiver
) -> None:
    workdir = tmp_path / "server"
    add_hook(workdir, receiver.url, "--event", "state.written")
    server = serve(workdir=workdir, env=FAST)
    worker = worker_of(server)
    assert httpx.post(server.state_url(NAME), content=state_json(1), timeout=30).status_code == 200
    receiver.wait_for(1)
    server.kill()  # SIGKILL: serve closes nothing, the kernel closes the worker's pipe
    wait_until_gone(worker)


def test_the_worker_stops_with_serve(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    server = serve(workdir=tmp_path / "server", env=FAST)  # no hooks: a worker all the same
    worker = worker_of(server)
    server.stop()  # SIGTERM: uvicorn shuts down, then dies of the signal it caught
    wait_until_gone(worker)
    assert "Traceback" not in server.log()


def test_a_worker_that_dies_is_replaced_and_delivers(
    tmp_path: Path, serve: Callable[..., StatekeeperServer], receiver: Receiver
) -> None:
    workdir = tmp_path / "server"
    add_hook(workdir, receiver.url, "--event", "state.written")
    server = serve(workdir=workdir, env=FAST)
    first = worker_of(server)
    os.kill(first, signal.SIGKILL)
    wait_until_gone(first)
    # Written while no worker runs: the next one finds the row.
    assert httpx.post(server.state_url(NAME), content=state_json(1), timeout=30).status_code == 200
    receiver.wait_for(1)
    assert worker_of(server) != first
    assert "the webhook delivery worker exited" in server.log()


def test_a_hook_added_while_serving_is_delivered(
    tmp_path: Path, serve: Callable[..., StatekeeperServer], receiver: Receiver
) -> None:
    workdir = tmp_path / "server"
    server = serve(workdir=workdir, env=FAST)
    with httpx.Client(timeout=30) as http:
        assert http.post(server.state_url(NAME), content=state_json(1)).status_code == 200
        add_hook(workdir, receiver.url, "--event", "state.written")
        # The server reads its subscriptions again within two seconds.
        # The write just before it may be delivered too: whether a subscription wants an
        # event is decided when the worker looks at it (docs/observability.md).
        serial = 2
        deadline = time.monotonic() + 30
        while not any(d["event"]["data"]["serial"] > 1 for d in receiver.deliveries):
            assert time.monotonic() < deadline, "the hook added at runtime was never delivered"
            assert http.post(server.state_url(NAME), content=state_json(serial)).status_code == 200
            serial += 1
            time.sleep(0.5)
    assert all(d["verified"] for d in receiver.deliveries)


def test_the_worker_process_reports_a_stale_lock(
    tmp_path: Path, serve: Callable[..., StatekeeperServer], receiver: Receiver
) -> None:
    workdir = tmp_path / "server"
    add_hook(workdir, receiver.url, "--event", "lock.stale")
    server = serve(workdir=workdir, env={**FAST, "STATEKEEPER_HOOKS_STALE_AFTER": "1"})
    lock_id = str(uuid.uuid4())
    taken = httpx.request("LOCK", server.state_url(NAME), content=lock_body(lock_id), timeout=30)
    assert taken.status_code == 200
    receiver.wait_for(1, timeout=90)  # the worker looks at the lock table every 30 s
    (stale,) = receiver.deliveries
    assert stale["verified"]
    assert stale["event"]["type"] == "io.statekeeper.lock.stale"
    assert stale["event"]["data"]["lock_id"] == lock_id

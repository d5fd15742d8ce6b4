"""The log process: ``serve``'s lines made text and written by a child of its own,
and none lost when either of the two dies."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx

from statekeeper.testing.processes import StatekeeperServer, child_of, running, wait_until_gone

LOG_PROCESS = "statekeeper.telemetry.logprocess"


def _lines(server: StatekeeperServer) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def _access_ids(server: StatekeeperServer) -> list[str]:
    return [ln["request_id"] for ln in _lines(server) if ln["logger"] == "statekeeper.access"]


def _get(server: StatekeeperServer, request_ids: list[str]) -> None:
    with httpx.Client(timeout=30) as http:
        for request_id in request_ids:
            answer = http.get(
                server.state_url("team/a.tfstate"), headers={"X-Request-ID": request_id}
            )
            assert answer.status_code == 404  # no such state: a request all the same


def _wait_for_lines(server: StatekeeperServer, ids: list[str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not set(ids) <= set(_access_ids(server)):
        assert time.monotonic() < deadline, f"lines missing: {set(ids) - set(_access_ids(server))}"
        time.sleep(0.05)


def test_a_servers_lines_are_written_by_its_log_process(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve("--log-level", "info", env={"STATEKEEPER_LOG_FORMAT": "json"})
    child = child_of(server.proc.pid, LOG_PROCESS)
    _get(server, ["first"])
    _wait_for_lines(server, ["first"])
    # The child stopped, the server's lines wait for it: the server does not write them.
    os.kill(child, signal.SIGSTOP)
    try:
        ids = [f"through-{n}" for n in range(20)]
        _get(server, ids)
        time.sleep(0.5)
        assert _access_ids(server) == ["first"]
    finally:
        os.kill(child, signal.SIGCONT)
    _wait_for_lines(server, ids)
    assert _access_ids(server) == ["first", *ids]  # whole, in the order of the requests
    server.stop()
    assert not running(child)  # ended with the server, after its last lines
    assert _lines(server)[-1]["message"].startswith("Finished server process")


def test_a_log_process_killed_leaves_the_server_writing_its_own_lines(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve("--log-level", "info", env={"STATEKEEPER_LOG_FORMAT": "json"})
    child = child_of(server.proc.pid, LOG_PROCESS)
    _get(server, ["before"])
    _wait_for_lines(server, ["before"])
    os.kill(child, signal.SIGKILL)
    wait_until_gone(child)
    after = [f"after-{n}" for n in range(20)]
    _get(server, after)
    _wait_for_lines(server, after)
    lines = _lines(server)
    gone = [n for n, ln in enumerate(lines) if "the log process ended" in ln["message"]]
    assert len(gone) == 1 and lines[gone[0]]["level"] == "warning"
    first_after = next(n for n, ln in enumerate(lines) if ln.get("request_id") == "after-0")
    assert gone[0] < first_after  # said before the lines it writes itself
    server.stop()
    assert server.proc.returncode == -signal.SIGTERM


def test_a_server_killed_ends_its_log_process_after_the_lines_it_was_sent(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve("--log-level", "info", env={"STATEKEEPER_LOG_FORMAT": "json"})
    child = child_of(server.proc.pid, LOG_PROCESS)
    ids = [f"sent-{n}" for n in range(50)]
    _get(server, ids)
    time.sleep(0.5)  # the batch is handed over a tenth of a second after its first line
    server.kill()
    wait_until_gone(child)  # the pipe's end ends it: no process left behind
    assert _access_ids(server) == ids


def test_ctrl_c_to_the_group_loses_no_line(serve: Callable[..., StatekeeperServer]) -> None:
    server = serve("--log-level", "info", env={"STATEKEEPER_LOG_FORMAT": "json"})
    child = child_of(server.proc.pid, LOG_PROCESS)
    ids = [f"ctrl-c-{n}" for n in range(50)]
    _get(server, ids)
    # A terminal's Ctrl-C reaches every process of the group: the child outlives the
    # signal and writes the server's last lines.
    os.kill(child, signal.SIGINT)
    server.proc.send_signal(signal.SIGINT)
    server.proc.wait(30)
    wait_until_gone(child)
    assert _access_ids(server) == ids
    assert _lines(server)[-1]["message"].startswith("Finished server process")

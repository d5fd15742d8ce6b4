"""The sender's rounds: an event after a quiet spell leaves at once, the events of a busy
spell gather into rounds spaced by the linger."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.security.support import OPERATOR, state_json

from statekeeper.app import Services
from statekeeper.hooks import delivery
from statekeeper.hooks.model import Subscription
from statekeeper.settings import load_settings
from statekeeper.terraform.names import StateName

#: The linger for these tests: long enough that a wait for it cannot pass for noise.
LINGER = 2.0


class Arrivals(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.times: list[float] = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Arrivals

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.times.append(time.monotonic())
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def arrivals() -> Iterator[Arrivals]:
    server = Arrivals()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


#: The webhook guard lets these tests' receiver on loopback through.
ENV = {"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"}


@contextmanager
def sending(data: Path, arrivals: Arrivals, *, started: bool = True) -> Iterator[Services]:
    """Services on ``data`` with a subscription to ``state.written`` at ``arrivals``
    and its sender started (unless ``started`` is false: then the test calls
    :func:`start`); closed at the end."""
    services = Services.build(load_settings({"data_dir": data}, env=ENV))
    try:
        hooks = services.hooks
        assert hooks is not None
        url = f"http://127.0.0.1:{arrivals.server_address[1]}/hook"
        hooks.add(Subscription("ci", url, "s3cret", events=("state.written",)))
        if started:
            start(services)
        yield services
    finally:
        services.close()


def start(services: Services) -> None:
    """Start the sender, woken only by events."""
    hooks = services.hooks
    assert hooks is not None
    hooks.outbox.poll = 60.0  # no look of its own in the test: only events wake it
    hooks.deliver(lambda failures: None)


def wait_for(arrivals: Arrivals, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(arrivals.times) < count:
        assert time.monotonic() < deadline, f"{len(arrivals.times)} of {count} delivered"
        time.sleep(0.01)


def test_a_quiet_spells_event_leaves_at_once_and_a_busy_spells_wait_for_the_round(
    tmp_path: Path, arrivals: Arrivals, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "_LINGER", LINGER)
    with sending(tmp_path / "data", arrivals) as services:
        time.sleep(LINGER + 0.5)  # a quiet spell, longer than the linger

        first = time.monotonic()
        services.states.write(StateName("team/s0.tfstate"), state_json(1), OPERATOR)
        wait_for(arrivals, 1)
        assert arrivals.times[0] - first < LINGER / 2  # not held back by the linger

        # A busy spell: the five wait for the round after the first one's, together.
        for i in range(1, 6):
            services.states.write(StateName(f"team/s{i}.tfstate"), state_json(1), OPERATOR)
        wait_for(arrivals, 6)
        later = arrivals.times[1:]
        assert min(later) - first >= LINGER - 0.05
        assert max(later) - min(later) < LINGER / 2


def _sender_writes(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per write transaction the sender's thread runs from now on (a spy that
    calls through: the transactions are the database's own)."""
    assert services.hooks is not None
    db = services.hooks.outbox.db  # type: ignore[attr-defined]
    run = db.run
    seen: list[bool] = []

    def counted(fn: Any, *, write: bool = False, **how: bool) -> Any:
        if write and threading.current_thread().name == "statekeeper-hooks":
            seen.append(True)
        return run(fn, write=write, **how)

    monkeypatch.setattr(db, "run", counted)
    return seen


def _delivered(services: Services, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    assert services.hooks is not None
    deadline = time.monotonic() + timeout
    while True:
        log = services.hooks.outbox.deliveries()
        if len(log) >= count:
            return log
        assert time.monotonic() < deadline, f"{len(log)} of {count} attempts recorded"
        time.sleep(0.02)


def test_a_rounds_attempts_are_recorded_by_the_next_rounds_claim(
    tmp_path: Path, arrivals: Arrivals, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "_LINGER", 1.0)
    with sending(tmp_path / "data", arrivals) as services:
        hooks = services.hooks
        assert hooks is not None
        time.sleep(1.5)  # its first look is over
        writes = _sender_writes(services, monkeypatch)

        services.states.write(StateName("team/s0.tfstate"), state_json(1), OPERATOR)
        wait_for(arrivals, 1)
        for i in range(1, 6):  # nudges before the linger's end
            services.states.write(StateName(f"team/s{i}.tfstate"), state_json(1), OPERATOR)
        log = _delivered(services, 6)
        # The first round's claim; the second's, recording the first; the second's
        # attempts alone, at the linger's end (a transaction per round, and one more).
        assert len(writes) == 3
        assert sorted(e["outcome"] for e in log) == ["delivered"] * 6
        assert hooks.backlog() == 0


def test_attempts_not_yet_recorded_are_recorded_when_the_sender_stops(
    tmp_path: Path, arrivals: Arrivals, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "_LINGER", 30.0)
    data = tmp_path / "data"
    with sending(data, arrivals, started=False) as services:
        hooks = services.hooks
        assert hooks is not None
        # Queued before the sender starts, the first event is claimed by its first round.
        # Written after that round began, it would wait for the round's linger to end
        # (30 s here), a race with wait_for's own 30 s.
        services.states.write(StateName("team/s0.tfstate"), state_json(1), OPERATOR)
        start(services)
        wait_for(arrivals, 1)
        services.states.write(StateName("team/s1.tfstate"), state_json(1), OPERATOR)
        assert hooks.outbox.deliveries() == []  # held for the next round's claim
    # Closed, long before the linger ends.

    again = Services.build(load_settings({"data_dir": data}, env=ENV))
    try:
        assert again.hooks is not None
        [entry] = again.hooks.outbox.deliveries()
        assert entry["outcome"] == "delivered"
        assert again.hooks.backlog() == 1  # the second event, for the next sender
    finally:
        again.close()

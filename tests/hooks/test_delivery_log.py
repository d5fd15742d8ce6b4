"""The delivery log is kept ``hooks_deliveries_kept``: a real ``serve`` removes the older
attempts and delivered rows, keeps the recent ones and the dead letters, and
``hooks deliveries`` lists what stays with the ``seq`` each had."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.hooks.test_webhooks import FAST, NAME, SECRET, Receiver, receiver, statekeeper  # noqa: F401
from tests.security.support import state_json

from statekeeper.errors import ConfigError
from statekeeper.hooks.outbox import queue_path
from statekeeper.settings import load_settings
from statekeeper.testing.processes import StatekeeperServer

KEPT = 5


def _deliveries(workdir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(statekeeper(workdir, "hooks", "deliveries", "--json"))
    return rows


def _queue(workdir: Path, sql: str) -> list[Any]:
    db = sqlite3.connect(queue_path(workdir / ".statekeeper" / "statekeeper.db"))
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_the_worker_removes_attempts_older_than_kept_and_keeps_the_dead_letters(
    tmp_path: Path,
    serve: Callable[..., StatekeeperServer],
    receiver: Receiver,  # noqa: F811
) -> None:
    workdir = tmp_path / "server"
    failing = Receiver(status=500).start()
    try:
        for name, url in (("ci", receiver.url), ("gone", failing.url)):
            statekeeper(
                workdir, "hooks", "add", name, "--url", url, "--secret", SECRET,
                "--event", "state.written", env=FAST,
            )  # fmt: skip
        env = {
            **FAST,
            "STATEKEEPER_HOOKS_ATTEMPTS": "1",  # the failing hook's event is dead at once
            "STATEKEEPER_HOOKS_DELIVERIES_KEPT": f"{KEPT}s",
        }
        server = serve(workdir=workdir, env=env)
        with httpx.Client(timeout=30) as http:
            assert http.post(server.state_url(NAME), content=state_json(1)).status_code == 200
            receiver.wait_for(1)
            failing.wait_for(1)
            deadline = time.monotonic() + 30
            while {r["outcome"] for r in _deliveries(workdir)} != {"delivered", "dead"}:
                assert time.monotonic() < deadline, _deliveries(workdir)
                time.sleep(0.2)
            (first_dead,) = [r for r in _deliveries(workdir) if r["outcome"] == "dead"]

            # Older than KEPT: the delivered attempt and its delivered row are removed.
            deadline = time.monotonic() + KEPT + 30
            while _queue(workdir, "SELECT 1 FROM hook_outbox WHERE status = 'delivered'") or [
                r for r in _deliveries(workdir) if r["outcome"] == "delivered"
            ]:
                assert time.monotonic() < deadline, "the expired delivery log stays"
                time.sleep(0.5)

            assert http.post(server.state_url(NAME), content=state_json(2)).status_code == 200
            receiver.wait_for(2)
            failing.wait_for(2)
            deadline = time.monotonic() + 30
            while not [r for r in _deliveries(workdir) if r["outcome"] == "delivered"]:
                assert time.monotonic() < deadline, "the new attempt was never logged"
                time.sleep(0.2)
            rows = _deliveries(workdir)
    finally:
        failing.stop()
    # The recent attempt stays; both dead letters stay, the first however old, with its
    # seq; seq still orders the log, newest first.
    (recent,) = [r for r in rows if r["outcome"] == "delivered"]
    assert recent["event_id"] == receiver.deliveries[1]["event_id"]
    dead = [r for r in rows if r["outcome"] == "dead"]
    assert [r["event_id"] for r in dead] == [d["event_id"] for d in reversed(failing.deliveries)]
    assert dead[-1] == first_dead
    assert [r["seq"] for r in rows] == sorted((r["seq"] for r in rows), reverse=True)
    # The dead outbox rows wait for an operator.
    assert _queue(workdir, "SELECT status, COUNT(*) FROM hook_outbox GROUP BY status") == [
        ("dead", 2),
        ("delivered", 1),
    ]


@pytest.mark.parametrize(("text", "kept"), [("30d", 30 * 86400.0), ("1h30m", 5400.0), ("0s", None)])
def test_kept_is_a_duration_and_0s_keeps_for_ever(text: str, kept: float | None) -> None:
    settings = load_settings(env={"STATEKEEPER_HOOKS_DELIVERIES_KEPT": text})
    got = settings.hooks_deliveries_kept
    assert (got.total_seconds() if got is not None else None) == kept


@pytest.mark.parametrize("text", ["30", "-1d", "1.5d", "forever"])
def test_kept_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ConfigError, match=r"STATEKEEPER_HOOKS_DELIVERIES_KEPT.*not a duration"):
        load_settings(env={"STATEKEEPER_HOOKS_DELIVERIES_KEPT": text})

"""``statekeeper hooks redeliver`` and ``POST /api/v1/hooks/{name}/redeliver`` on real
``serve`` processes: a receiver that was down has its dead letters sent again once
it is back, each once, with the event ID and a valid signature; on SQLite and on
S3 (moto). And the refusals: an unknown event, one not dead, a removed hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.hooks.test_webhooks import FAST, NAME, SECRET, Receiver
from tests.security.support import state_json

from statekeeper.testing.processes import SRC, MotoServer, StatekeeperServer

#: Two attempts, then dead: a retry 0.2 s after the first (FAST's backoff).
DYING = {**FAST, "STATEKEEPER_HOOKS_ATTEMPTS": "2"}
BUCKET = "redelivered"
TABLE = "redelivered-locks"


class Store:
    """The CLI and ``serve`` on one store: the embedded one in ``workdir``, or S3."""

    def __init__(
        self, workdir: Path, args: tuple[str, ...], env: dict[str, str], served: bool
    ) -> None:
        self.workdir = workdir
        self.args = args
        self.env = env
        #: What ``serve`` is given of ``args`` (the embedded store: its workdir's).
        self.serve_args = args if served else ()

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "statekeeper", *args, *self.args],
            cwd=self.workdir,
            env={**os.environ, **self.env, **FAST, "PYTHONPATH": str(SRC), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def cli(self, *args: str) -> str:
        proc = self.run(*args)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def deliveries(self, *args: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.cli("hooks", "deliveries", "--json", *args))
        return rows

    def serve(self, serve: Callable[..., StatekeeperServer]) -> StatekeeperServer:
        return self.restart(serve, DYING)

    def restart(
        self, serve: Callable[..., StatekeeperServer], env: dict[str, str]
    ) -> StatekeeperServer:
        return serve(*self.serve_args, env={**self.env, **env}, workdir=self.workdir / "server")


@pytest.fixture(params=["sqlite", pytest.param("s3", marks=pytest.mark.aws)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        data = ("--data-dir", str(tmp_path / "server" / ".statekeeper"))
        return Store(tmp_path, data, {}, served=False)
    moto: MotoServer = request.getfixturevalue("moto")
    moto.versioned_bucket(BUCKET)
    moto.lock_table(TABLE)
    s3 = ("--store", f"s3://{BUCKET}", "--locks", f"dynamodb://{TABLE}")
    return Store(tmp_path, s3, moto.env(), served=True)


def _wait(what: str, done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _dead(store: Store, hook: str) -> list[dict[str, Any]]:
    return store.deliveries("--outcome", "dead", "--hook", hook)


def test_a_dead_letter_is_delivered_once_with_its_event_id_when_redelivered(
    store: Store, serve: Callable[..., StatekeeperServer]
) -> None:
    down = Receiver(status=500).start()
    try:
        store.cli("hooks", "add", "ci", "--url", down.url, "--secret", SECRET)
        server = store.serve(serve)
        with httpx.Client(timeout=30) as http:
            for serial in (1, 2):
                assert http.post(server.state_url(NAME), content=state_json(serial)).is_success
        down.wait_for(4)  # two events, two attempts each
        _wait("both events die", lambda: len(_dead(store, "ci")) == 2)
        first, second = sorted(_dead(store, "ci"), key=lambda r: r["seq"])
        assert {first["event_id"], second["event_id"]} == {d["event_id"] for d in down.deliveries}

        down.status = 200  # the receiver is back
        # One by its ID, through the CLI: the other stays dead.
        out = json.loads(store.cli("hooks", "redeliver", "ci", first["event_id"], "--json"))
        assert out == {"hook": "ci", "events": [first["event_id"]]}
        down.wait_for(5)
        again = down.deliveries[4]
        assert again["event_id"] == again["event"]["id"] == first["event_id"]
        assert again["verified"]
        _wait("the redelivery is logged", lambda: _delivered(store) == [first["event_id"]])
        assert [r["event_id"] for r in _dead(store, "ci")] == [second["event_id"]]

        # Delivered now: not dead, refused (409, exit 1), and nothing queued.
        refused = store.run("hooks", "redeliver", "ci", first["event_id"])
        assert refused.returncode == 1, refused.stderr
        assert "is delivered, not dead" in refused.stderr
        assert "Traceback" not in refused.stderr

        # The rest through the API: every dead letter of the hook.
        answer = httpx.post(
            server.url + "/api/v1/hooks/ci/redeliver", json={"all": True}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"hook": "ci", "events": [second["event_id"]]}
        down.wait_for(6)
        assert down.deliveries[5]["event_id"] == second["event_id"]
        assert down.deliveries[5]["verified"]
        _wait("both are delivered", lambda: len(_delivered(store)) == 2)
        assert _dead(store, "ci") == []
        # Nothing left to redeliver; each was sent once more, no more.
        assert json.loads(store.cli("hooks", "redeliver", "ci", "--all", "--json"))["events"] == []
        time.sleep(1.5)
        assert len(down.deliveries) == 6
    finally:
        down.stop()


def _delivered(store: Store) -> list[str]:
    return [r["event_id"] for r in store.deliveries("--outcome", "delivered")]


def test_redeliver_refuses_an_unknown_event_a_pending_one_and_a_removed_hook(
    store: Store, serve: Callable[..., StatekeeperServer]
) -> None:
    down = Receiver(status=500).start()
    try:
        store.cli("hooks", "add", "ci", "--url", down.url, "--secret", SECRET)
        server = store.serve(serve)
        assert httpx.post(server.state_url(NAME), content=state_json(1), timeout=30).is_success
        _wait("the event dies", lambda: len(_dead(store, "ci")) == 1)
        (dead,) = _dead(store, "ci")

        unknown = store.run("hooks", "redeliver", "ci", "0000-no-such-event")
        assert unknown.returncode == 1, unknown.stderr
        assert "there is no delivery of event 0000-no-such-event to the hook 'ci'" in unknown.stderr
        api = httpx.post(
            server.url + "/api/v1/hooks/ci/redeliver",
            json={"event_id": "0000-no-such-event"},
            timeout=30,
        )
        assert api.status_code == 404 and api.json()["error"] == "not_found", api.text

        neither = store.run("hooks", "redeliver", "ci")
        assert neither.returncode == 2 and "EVENT_ID or --all" in neither.stderr
        bad = httpx.post(server.url + "/api/v1/hooks/ci/redeliver", json={}, timeout=30)
        assert bad.status_code == 400 and "event_id or all" in bad.json()["message"], bad.text

        # --since chooses among all the dead letters: none died in 2999.
        later = ("--all", "--since", "2999-01-01T00:00:00Z", "--json")
        assert json.loads(store.cli("hooks", "redeliver", "ci", *later))["events"] == []
        assert _dead(store, "ci") == [dead]
        for wrong, said in (
            (("--since", "2026-01-01T00:00:00Z", dead["event_id"]), "give it with --all"),
            (("--all", "--since", "yesterday"), "--since: 'yesterday' is not an RFC 3339 time"),
        ):
            refused = store.run("hooks", "redeliver", "ci", *wrong)
            assert refused.returncode == 2 and said in refused.stderr, refused.stderr

        # Queued again and retrying (a long backoff: still pending when asked again).
        server.stop()
        server = store.restart(serve, {**FAST, "STATEKEEPER_HOOKS_BACKOFF": "600"})
        store.cli("hooks", "redeliver", "ci", dead["event_id"])
        down.wait_for(3)
        pending = store.run("hooks", "redeliver", "ci", dead["event_id"])
        assert pending.returncode == 1, pending.stderr
        assert "is pending, not dead: only dead letters are redelivered" in pending.stderr
        api = httpx.post(
            server.url + "/api/v1/hooks/ci/redeliver",
            json={"event_id": dead["event_id"]},
            timeout=30,
        )
        assert api.status_code == 409 and api.json()["error"] == "conflict", api.text

        store.cli("hooks", "remove", "ci")
        removed = store.run("hooks", "redeliver", "ci", "--all")
        assert removed.returncode == 1, removed.stderr
        assert "there is no hook named 'ci'" in removed.stderr
        assert "'statekeeper hooks add ci --url URL', then redeliver" in removed.stderr
    finally:
        down.stop()


def test_an_event_id_of_bytes_that_are_no_utf8_is_refused_naming_it(tmp_path: Path) -> None:
    """A command line's bytes that are no UTF-8 (lone surrogates to Python) ended the
    command with a traceback from the queue's database."""
    store = Store(tmp_path, ("--data-dir", str(tmp_path / ".statekeeper")), {}, served=False)
    store.cli("hooks", "add", "ci", "--url", "http://127.0.0.1:9/hook", "--secret", SECRET)
    refused = store.run("hooks", "redeliver", "ci", os.fsdecode(b"ev-\xff\xfe"))
    assert refused.returncode == 2, refused.stderr
    assert "the event ID 'ev-\\udcff\\udcfe' holds bytes that are no UTF-8 text" in refused.stderr
    assert "Traceback" not in refused.stderr

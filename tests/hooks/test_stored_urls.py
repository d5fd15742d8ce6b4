"""Hooks stored before ``hooks add`` refused a URL with USER:PASSWORD@ or a character to
percent-encode: they still load, and are listed without the password, delivered as
before (the password never was sent) or refused clearly, by ``hooks test`` and by the
delivery worker of a real ``statekeeper serve``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.hooks.test_webhooks import FAST, NAME, SECRET, Receiver, add_hook, statekeeper
from tests.security.support import lock_body

from statekeeper.app import Services
from statekeeper.hooks.model import Subscription
from statekeeper.settings import load_settings
from statekeeper.testing.processes import SRC, StatekeeperServer


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def store_as_before(workdir: Path, name: str, url: str, *events: str) -> None:
    """A subscription in the store's table as the code before the refusals wrote it."""
    services = Services.build(load_settings({"data_dir": workdir / ".statekeeper"}, env={}))
    try:
        raw = {"name": name, "url": url, "secret": SECRET, "events": list(events)}
        services.hooks.outbox.add(Subscription.from_json(raw))
    finally:
        services.close()


def run(
    workdir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``statekeeper ARGS`` on the embedded store in ``workdir``, whatever its exit code."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")}
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", *args, "--data-dir", str(workdir / ".statekeeper")],
        env={**clean, "PYTHONPATH": str(SRC), "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_stored_password_is_masked_in_listings_and_the_api(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    workdir = tmp_path / "server"
    store_as_before(workdir, "pw", "https://ci:hunter2@192.0.2.1/hook")
    store_as_before(workdir, "token", "https://tok3n@192.0.2.1/hook")
    listed = run(workdir, "hooks", "list")
    as_json = run(workdir, "hooks", "list", "--json")
    server = serve(workdir=workdir)
    api = httpx.get(server.url + "/api/v1/hooks", timeout=30)
    assert api.status_code == 200, api.text
    for shown in (listed.stdout + listed.stderr, as_json.stdout, api.text):
        assert "hunter2" not in shown and "tok3n" not in shown
    assert "https://ci:***@192.0.2.1/hook" in listed.stdout
    masked = ["https://ci:***@192.0.2.1/hook", "https://***@192.0.2.1/hook"]
    assert [h["url"] for h in json.loads(as_json.stdout)] == masked
    assert [h["url"] for h in api.json()["hooks"]] == masked


def test_a_stored_password_url_is_delivered_to_as_before_and_never_shown(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The password never was sent (deliveries send no Authorization): the hook still
    reaches its receiver, and a refused destination's message masks it."""
    workdir = tmp_path / "cli"
    url = receiver.url.replace("http://", "http://ci:hunter2@")
    store_as_before(workdir, "pw", url)
    tested = run(workdir, "hooks", "test", "pw", env=FAST)
    assert tested.returncode == 0, tested.stderr
    assert "hook pw answered 200" in tested.stderr
    assert [d["verified"] for d in receiver.deliveries] == [True]
    refused = run(workdir, "hooks", "test", "pw")  # loopback, not in hooks_allow
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert "a loopback address" in refused.stderr and "ci:***@127.0.0.1" in refused.stderr
    assert "hunter2" not in tested.stdout + tested.stderr + refused.stdout + refused.stderr


@pytest.mark.parametrize(
    ("path", "odd"), [("/日本", "'日'"), ("/a b", "' '"), ("/a\r\nX-Injected: 1", "'\\r'")]
)
def test_hooks_test_of_a_stored_url_to_percent_encode_says_to_re_add_it(
    tmp_path: Path, receiver: Receiver, path: str, odd: str
) -> None:
    """``http://host/日本`` ended in a UnicodeEncodeError traceback; a space or a line
    break went into the request line as it was."""
    workdir = tmp_path / "cli"
    store_as_before(workdir, "legacy", f"http://127.0.0.1:{receiver.port}{path}")
    tested = run(workdir, "hooks", "test", "legacy", env=FAST)
    assert tested.returncode == 2, (tested.stdout, tested.stderr)
    assert "Traceback" not in tested.stderr
    assert "the hook 'legacy' cannot be delivered to" in tested.stderr
    assert f"holds {odd}" in tested.stderr
    assert "re-add it with the URL percent-encoded" in tested.stderr
    assert receiver.deliveries == []


def test_the_worker_records_a_stored_url_to_percent_encode_as_a_failed_attempt(
    tmp_path: Path, serve: Callable[..., StatekeeperServer], receiver: Receiver
) -> None:
    """The sender's thread ended at the UnicodeEncodeError: nothing was recorded and no
    hook was delivered to again."""
    workdir = tmp_path / "server"
    store_as_before(workdir, "legacy", f"http://127.0.0.1:{receiver.port}/日本", "lock.acquired")
    add_hook(workdir, receiver.url, "--event", "lock.acquired")
    server = serve(workdir=workdir, env={**FAST, "STATEKEEPER_HOOKS_ATTEMPTS": "2"})
    for state in (NAME, "team/other.tfstate"):
        lock = lock_body(str(uuid.uuid4()))
        answer = httpx.request("LOCK", server.state_url(state), content=lock, timeout=30)
        assert answer.status_code == 200, answer.text
    receiver.wait_for(2)  # the other hook's deliveries go on
    deadline = time.monotonic() + 60
    while True:
        log = json.loads(statekeeper(workdir, "hooks", "deliveries", "--hook", "legacy", "--json"))
        if sum(r["outcome"] == "dead" for r in log) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted((r["attempt"], r["outcome"]) for r in log) == [
        (1, "retry"),
        (1, "retry"),
        (2, "dead"),
        (2, "dead"),
    ], log
    assert all(
        r["status"] is None and "re-add it with the URL percent-encoded" in r["error"] for r in log
    )
    assert len(receiver.deliveries) == 2
    assert "Traceback" not in server.log()

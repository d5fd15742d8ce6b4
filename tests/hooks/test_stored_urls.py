"""Hooks stored before ``hooks add`` refused a URL with USER:PASSWORD@: they still load,
and are listed without the password and delivered to as before (the password never
was sent).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.hooks.test_webhooks import FAST, SECRET, Receiver

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

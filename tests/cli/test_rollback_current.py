"""A rollback to the version already current is refused, not written as a no-op version
with a bumped serial: by the CLI on the store and through a real server, and by the API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from tests.cli.conftest import CliFn, push_serials

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import state_bytes

NAME = "team/app.tfstate"


def test_rollback_to_the_current_version_is_refused(
    tmp_path: Path, cli_process: CliFn, where: tuple[str, ...]
) -> None:
    push_serials(cli_process, where, tmp_path, NAME, 1, 2)

    for to in ("current", "latest", "serial:2"):
        for confirm in (("-y",), ()):
            run = cli_process(*where, "rollback", NAME, "--to", to, *confirm, input=b"y\n")
            assert run.exit_code == 2, (to, run.stdout, run.stderr)
            assert f"is already the current version of {NAME}: nothing to roll back" in (run.stderr)
            assert "Proceed?" not in run.stdout + run.stderr
    history = json.loads(cli_process(*where, "history", NAME, "--json").stdout)
    assert [v["serial"] for v in history] == [2, 1]  # nothing was written

    run = cli_process(*where, "rollback", NAME, "--to", "serial:1", "-y")
    assert run.exit_code == 0, run.stderr


def test_the_api_refuses_it_too(serve: Callable[..., StatekeeperServer]) -> None:
    server = serve()
    assert httpx.post(server.state_url(NAME), content=state_bytes(1)).status_code == 200
    answer = httpx.post(f"{server.url}/api/v1/rollback/{NAME}", json={"to": "current"})
    assert answer.status_code == 400, answer.text
    assert "already the current version" in answer.json()["message"]

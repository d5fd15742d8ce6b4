"""A rollback to the version already current is refused, not written as a no-op version
with a bumped serial: by the CLI on the store and through a real server, and by the API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.cli.conftest import CliFn

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import state_bytes

NAME = "team/app.tfstate"


@pytest.mark.parametrize("through_server", [False, True], ids=["store", "server"])
def test_rollback_to_the_current_version_is_refused(
    tmp_path: Path,
    cli_process: CliFn,
    serve: Callable[..., StatekeeperServer],
    through_server: bool,
) -> None:
    where = ("--server", serve().url) if through_server else ()
    for serial in (1, 2):
        state = tmp_path / f"s{serial}.tfstate"
        state.write_bytes(state_bytes(serial))
        assert cli_process(*where, "push", NAME, str(state)).exit_code == 0

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

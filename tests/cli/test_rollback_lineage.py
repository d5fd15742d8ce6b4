"""A rollback to a version of another lineage than the current state's (the state was
replaced since by a forced push) is refused before any question, saying why and how to
restore that version anyway, by the CLI on the store and through a real server, and by
the API. It used to ask, then fail in the words of a push ("have an admin force the
write (statekeeper push --force)"), which names no way to do it for a rollback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
from tests.cli.conftest import CliFn

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import state_bytes

NAME = "team/app.tfstate"
OLD, NEW = "5b2a8c3e-0000-4000-8000-00000000000a", "5b2a8c3e-0000-4000-8000-00000000000b"


def test_a_rollback_to_another_lineage_is_refused_saying_what_to_do(
    tmp_path: Path, cli_process: CliFn, where: tuple[str, ...]
) -> None:
    for serial, lineage, force in ((1, OLD, ()), (2, OLD, ()), (1, NEW, ("--force",))):
        state = tmp_path / f"s{serial}-{lineage[-1]}.tfstate"
        state.write_bytes(state_bytes(serial, lineage))
        assert cli_process(*where, "push", NAME, str(state), *force).exit_code == 0

    for confirm in (("-y",), ()):
        run = cli_process(*where, "rollback", NAME, "--to", "serial:2", *confirm, input=b"y\n")
        assert run.exit_code == 1, (run.stdout, run.stderr)
        assert f'has lineage "{OLD}", the current state "{NEW}"' in run.stderr
        assert f"statekeeper pull {NAME} --version" in run.stderr
        assert "Proceed?" not in run.stdout + run.stderr
    history = json.loads(cli_process(*where, "history", NAME, "--json").stdout)
    assert [(v["serial"], v["lineage"]) for v in history] == [(1, NEW), (2, OLD), (1, OLD)]


def test_the_api_refuses_it_too(serve: Callable[..., StatekeeperServer]) -> None:
    server = serve()
    for serial, lineage, force in ((1, OLD, ""), (2, OLD, ""), (1, NEW, "?force=true")):
        url = f"{server.url}/api/v1/content/{NAME}{force}"
        assert httpx.put(url, content=state_bytes(serial, lineage)).status_code == 200
    answer = httpx.post(f"{server.url}/api/v1/rollback/{NAME}", json={"to": "serial:2"})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "state_conflict"
    assert f'has lineage "{OLD}"' in answer.json()["message"]

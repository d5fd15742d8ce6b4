"""A PREFIX is the literal start of state names: one holding a glob character (``*``,
``?``, ``[``) is refused, exit 2, with the prefix meant, by every command that takes one.
``prune 'team/*'`` answered "nothing to prune" and ``states 'team/*'`` "no states",
since no state name holds a glob character.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli.conftest import CliFn

from statekeeper.testing.statefiles import state_bytes


@pytest.mark.parametrize(
    "command",
    [
        ("states", "team/*"),
        ("locks", "team/*"),
        ("locks", "reap", "--older-than", "0s", "--prefix", "team/*"),
        ("prune", "team/*"),
        ("trash", "list", "team/*"),
        (
            "migrate",
            "--from",
            "sqlite:///.statekeeper/statekeeper.db",
            "--to",
            "sqlite:///c.db",
            "--prefix",
            "team/*",
        ),
    ],
)
def test_a_glob_given_as_a_prefix_is_refused(
    tmp_path: Path, cli_process: CliFn, command: tuple[str, ...]
) -> None:
    state = tmp_path / "app.tfstate"
    state.write_bytes(state_bytes(1))
    assert cli_process("push", "team/app.tfstate", str(state)).exit_code == 0
    history = {"STATEKEEPER_HISTORY": '[[retention]]\nstates = "**"\nkeep_last = 1'}
    run = cli_process(*command, env=history)
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert "the prefix 'team/*' holds '*'" in run.stderr
    assert "not a glob; give 'team/'" in run.stderr and "Traceback" not in run.stderr
    assert "team/" in cli_process("states", "team/").stdout

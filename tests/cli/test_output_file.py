"""``-o FILE`` of ``pull`` and ``encryption decrypt``: the bytes go where asked, and a
file that cannot be written is refused naming it (exit 2), never a traceback.

The commands run as ``python -m statekeeper`` child processes on the embedded store.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from tests.cli.conftest import CliFn

from statekeeper.testing.statefiles import state_bytes

NAME = "team/app.tfstate"


@pytest.fixture
def stored(tmp_path: Path, cli_process: CliFn) -> dict[str, str]:
    """A state pushed encrypted at rest; the environment that decrypts it."""
    env = {"STATEKEEPER_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    state = tmp_path / "in.tfstate"
    state.write_bytes(state_bytes(3))
    run = cli_process("push", NAME, str(state), env=env)
    assert run.exit_code == 0, run.stderr
    return env


@pytest.mark.parametrize(
    "command", [("pull", NAME), ("encryption", "decrypt", "--state", NAME)], ids=" ".join
)
def test_an_output_that_is_a_directory_is_refused(
    tmp_path: Path, cli_process: CliFn, stored: dict[str, str], command: tuple[str, ...]
) -> None:
    target = tmp_path / "cwd" / "adir"
    target.mkdir()
    run = cli_process(*command, "-o", "adir", env=stored)
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert "Error: cannot write adir: Is a directory" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "command", [("pull", NAME), ("encryption", "decrypt", "--state", NAME)], ids=" ".join
)
def test_an_output_file_gets_the_bytes(
    tmp_path: Path, cli_process: CliFn, stored: dict[str, str], command: tuple[str, ...]
) -> None:
    run = cli_process(*command, "-o", "out.tfstate", env=stored)
    assert run.exit_code == 0, run.stderr
    assert (tmp_path / "cwd" / "out.tfstate").read_bytes() == state_bytes(3)
    assert run.stdout == ""


@pytest.mark.parametrize(
    "command", [("pull", NAME), ("encryption", "decrypt", "--state", NAME)], ids=" ".join
)
def test_output_dash_is_stdout(
    tmp_path: Path, cli_process: CliFn, stored: dict[str, str], command: tuple[str, ...]
) -> None:
    run = cli_process(*command, "-o", "-", env=stored)
    assert run.exit_code == 0, run.stderr
    assert run.stdout_bytes == state_bytes(3)
    assert not (tmp_path / "cwd" / "-").exists()

"""Running the CLI: in-process through typer's runner, or as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from statekeeper.cli import app
from statekeeper.testing.processes import SRC, StatekeeperServer
from statekeeper.testing.statefiles import state_bytes


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""


CliFn = Callable[..., Run]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliFn:
    """``statekeeper ARGS`` in this process, cwd a fresh directory (embedded store there)."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    for var in (
        "STATEKEEPER_STORE",
        "STATEKEEPER_LOCKS",
        "STATEKEEPER_SERVER",
        "STATEKEEPER_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)

    def run(*args: str, input: str | bytes | None = None) -> Run:
        result = CliRunner().invoke(app, list(args), input=input)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Run(result.exit_code, result.stdout, result.stderr, result.stdout_bytes)

    return run


@pytest.fixture
def cli_process(tmp_path: Path) -> CliFn:
    """``python -m statekeeper ARGS`` as a child process of this source tree."""
    workdir = tmp_path / "cwd"
    workdir.mkdir(exist_ok=True)

    def run(*args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> Run:
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")},
            "PYTHONPATH": str(SRC),
            "COLUMNS": "200",
            **(env or {}),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "statekeeper", *args],
            cwd=workdir,
            env=full_env,
            input=input,
            capture_output=True,
            timeout=120,
        )
        return Run(
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
            proc.stdout,
        )

    return run


@pytest.fixture(params=["store", "server"])
def where(
    request: pytest.FixtureRequest, serve: Callable[..., StatekeeperServer]
) -> tuple[str, ...]:
    """The global options that point a command at the embedded store (none) or through a
    real ``statekeeper serve`` (``--server``): a test taking this runs both ways."""
    return ("--server", serve().url) if request.param == "server" else ()


def push_serials(
    cli_process: CliFn, where: tuple[str, ...], tmp_path: Path, name: str, *serials: int
) -> None:
    """``statekeeper push`` of a state of each serial to ``name``, in order."""
    for serial in serials:
        state = tmp_path / f"s{serial}.tfstate"
        state.write_bytes(state_bytes(serial))
        assert cli_process(*where, "push", name, str(state)).exit_code == 0

"""Shared fixtures: real statekeeper servers, a moto server, real Terraform."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from statekeeper.testing.processes import MotoServer, StatekeeperServer
from statekeeper.testing.terraform import Terraform


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., StatekeeperServer]]:
    """Start ``statekeeper serve`` processes in a temporary directory; stopped after the test."""
    started: list[StatekeeperServer] = []

    def start(
        *args: str, env: dict[str, str] | None = None, workdir: Path | None = None
    ) -> StatekeeperServer:
        server = StatekeeperServer(workdir or tmp_path / "server", *args, env=env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def terraform(tmp_path: Path) -> Callable[..., Terraform]:
    """A Terraform working directory under the test's temporary directory."""

    def make(name: str = "tf", env: dict[str, str] | None = None) -> Terraform:
        return Terraform(tmp_path / name, env=env)

    return make


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server process for the whole session, over HTTP on loopback."""
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture
def moto(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """The moto server, emptied, with this process's AWS environment pointed at it."""
    moto_server.reset()
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    return moto_server

"""Fixtures shared by the service tests: the embedded store and an operator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from statekeeper.app import Services
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """Services on the embedded SQLite store, on disk in the test's directory."""
    s = Services.build(Settings(data_dir=tmp_path / "data"))
    yield s
    s.close()


@pytest.fixture
def caller() -> Caller:
    return Caller(actor="alice@laptop")

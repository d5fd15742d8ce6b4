"""Fixtures: the ASGI app on the embedded store in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tfwire import Api

from statekeeper.app import Services
from statekeeper.server.app import create_app
from statekeeper.settings import load_settings


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = Services.build(load_settings({"data_dir": tmp_path / "data"}, env={}))
    yield built
    built.close()


@pytest.fixture
def api(services: Services) -> Iterator[Api]:
    client = Api(create_app(services), services)
    yield client
    client.close()

"""The ``aws`` fixture: boto3 clients on the emptied moto server."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.awssetup.helpers import Aws

from statekeeper.testing.processes import MotoServer


@pytest.fixture
def aws(moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Aws:
    # bootstrap and doctor --fix record what they change in the configured store's trail.
    monkeypatch.setenv("STATEKEEPER_STORE", f"sqlite:///{tmp_path / 'trail' / 'state.db'}")
    return Aws()

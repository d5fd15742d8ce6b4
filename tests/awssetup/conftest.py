"""The ``aws`` fixture: boto3 clients on the emptied moto server."""

from __future__ import annotations

import pytest
from tests.awssetup.helpers import Aws

from statekeeper.testing.processes import MotoServer


@pytest.fixture
def aws(moto: MotoServer) -> Aws:
    return Aws()

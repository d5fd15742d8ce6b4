"""``statekeeper search``'s exit code says whether anything matched, with or without
``--json`` (docs/cli.md: exit code 1 when nothing matches).

``python -m statekeeper`` child processes on the embedded store, and through a real
``statekeeper serve``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.cli.conftest import CliFn

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import state_bytes

RESOURCE = {
    "mode": "managed",
    "type": "aws_s3_bucket",
    "name": "logs",
    "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
    "instances": [{"schema_version": 0, "attributes": {"bucket": "logs-prod"}}],
}


@pytest.mark.parametrize("through_server", [False, True], ids=["store", "server"])
def test_nothing_matches_exits_1_with_json_too(
    tmp_path: Path,
    cli_process: CliFn,
    serve: Callable[..., StatekeeperServer],
    through_server: bool,
) -> None:
    state = tmp_path / "s.tfstate"
    state.write_bytes(state_bytes(1, resources=[RESOURCE]))
    where = ("--server", serve().url) if through_server else ()
    assert cli_process(*where, "push", "team/app.tfstate", str(state)).exit_code == 0

    found = cli_process(*where, "search", "logs-prod", "--json")
    assert found.exit_code == 0, found.stderr
    assert json.loads(found.stdout)["hits"]

    for args in (("nothingmatches",), ("nothingmatches", "--json")):
        run = cli_process(*where, "search", *args)
        assert run.exit_code == 1, (args, run.stdout, run.stderr)
    assert json.loads(run.stdout)["hits"] == []

"""What a lock's holder wrote reaches an operator's terminal as text, never as
commands: ``python -m statekeeper`` child processes on a Terraform ``backend "s3"``
lock table (a moto server), whose items any holder of table access can write."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.cli.conftest import CliFn

from statekeeper.testing.processes import MotoServer
from statekeeper.testing.statefiles import state_bytes

BUCKET, TABLE, KEY = "esc-tfstate", "esc-locks", "team/app.tfstate"
INFO = {
    "ID": "esc\x1b[31mRED",
    "Operation": "OperationTypeApply\x1b]0;pwned\x07",
    "Info": "",
    "Who": "evil\x1b[2J@host\u202egnp",
    "Version": "1.15.5",
    "Created": "2026-12-07T15:00:00Z",
    "Path": f"{BUCKET}/{KEY}",
}
STORE = ("--store", f"s3://{BUCKET}", "--locks", f"dynamodb://{TABLE}")


@pytest.fixture
def held(moto: MotoServer) -> Any:
    moto.versioned_bucket(BUCKET)
    moto.lock_table(TABLE)
    moto.client("dynamodb").put_item(
        TableName=TABLE,
        Item={"LockID": {"S": f"{BUCKET}/{KEY}"}, "Info": {"S": json.dumps(INFO)}},
    )


def _obeyed(text: str) -> list[str]:
    return [s for s in ("\x1b[31m", "\x1b]0;", "\x07", "\x1b[2J", "\u202e") if s in text]


@pytest.mark.parametrize("colour", [{}, {"FORCE_COLOR": "1"}], ids=["pipe", "terminal"])
def test_a_holders_fields_are_shown_escaped(
    held: Any, cli_process: CliFn, colour: dict[str, str]
) -> None:
    listed = cli_process(*STORE, "locks", env=colour)
    assert listed.exit_code == 0, listed.stderr
    assert not _obeyed(listed.stdout), listed.stdout
    assert "esc\\x1b[31mRED" in listed.stdout
    assert "evil\\x1b[2J@host\\u202egnp" in listed.stdout

    refused = cli_process(*STORE, "push", KEY, "-", input=state_bytes(1), env=colour)
    assert refused.exit_code == 3, refused.stderr
    assert not _obeyed(refused.stderr), refused.stderr
    assert "evil\\x1b[2J@host\\u202egnp" in refused.stderr

"""A bucket or lock table that is missing or cannot hold Terraform's locks, met by the
CLI and by ``serve`` (real processes on a moto server): exit 2 or 1 with a message
that names the URL at fault by the option that gave it, and no traceback."""

from __future__ import annotations

from typing import Any

import pytest
from tests.cli.conftest import CliFn, Run

from statekeeper.testing.processes import MotoServer

pytestmark = pytest.mark.aws

BUCKET = "tfstate"
STORE = ("--store", f"s3://{BUCKET}")
GIVEN_AS_LOCKS = "(--locks, STATEKEEPER_LOCKS or locks in the config file)"
GIVEN_AS_STORE = "(--store, STATEKEEPER_STORE or store in the config file)"


def _both(cli_process: CliFn, moto: MotoServer, *args: str) -> list[Run]:
    """``locks ARGS`` and ``serve ARGS`` (on a port it never binds: it stops before)."""
    env = moto.env()
    runs = [
        cli_process("locks", *args, env=env),
        cli_process("serve", "--port", "1", *args, env=env),
    ]
    for run in runs:
        assert "Traceback" not in run.stdout + run.stderr, run.stderr
    return runs


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    return moto.versioned_bucket(BUCKET)


@pytest.mark.parametrize(
    ("locks", "missing"),
    [
        ("dynamodb://no-table", "the DynamoDB table 'no-table' does not exist"),
        ("s3lock://no-bucket", "the S3 bucket 'no-bucket' does not exist"),
    ],
)
def test_a_missing_lock_table_or_bucket_blames_the_lock_url(
    cli_process: CliFn, moto: MotoServer, bucket: str, locks: str, missing: str
) -> None:
    for run in _both(cli_process, moto, *STORE, "--locks", locks):
        assert run.exit_code == 1, run.stderr
        assert missing in run.stderr
        assert f"or correct '{locks}' {GIVEN_AS_LOCKS}" in run.stderr
        assert "--store" not in run.stderr


def test_a_missing_store_bucket_blames_the_store_url(cli_process: CliFn, moto: MotoServer) -> None:
    for run in _both(cli_process, moto, "--store", "s3://no-bucket"):
        assert run.exit_code == 1, run.stderr
        assert "the S3 bucket 'no-bucket' does not exist" in run.stderr
        assert f"or correct 's3://no-bucket' {GIVEN_AS_STORE}" in run.stderr


def _table(ddb: Any, name: str, *keys: tuple[str, str]) -> str:
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": a, "KeyType": kind} for a, kind in keys],
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a, _ in keys],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@pytest.mark.parametrize(
    ("keys", "has"),
    [
        ([("id", "HASH")], "its key is hash key id (string)"),
        (
            [("LockID", "HASH"), ("Owner", "RANGE")],
            "its key is hash key LockID (string), range key Owner (string)",
        ),
    ],
)
def test_a_lock_table_keyed_otherwise_is_refused_by_name_and_key(
    cli_process: CliFn,
    moto: MotoServer,
    bucket: str,
    keys: list[tuple[str, str]],
    has: str,
) -> None:
    table = _table(moto.client("dynamodb"), "not-terraforms", *keys)
    for run in _both(cli_process, moto, *STORE, "--locks", f"dynamodb://{table}"):
        assert run.exit_code == 2, run.stderr
        assert f"the DynamoDB table '{table}' is not a Terraform lock table: {has}" in run.stderr
        assert "has hash key LockID (string) and no range key" in run.stderr
        assert "statekeeper bootstrap --bucket BUCKET --table NEW_TABLE" in run.stderr
        assert f"correct 'dynamodb://{table}' {GIVEN_AS_LOCKS}" in run.stderr
        assert "ValidationException" not in run.stderr

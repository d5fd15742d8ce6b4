"""An UNLOCK under an IAM policy without ``dynamodb:ConditionCheckItem`` (Terraform's own
minimal policy): the one-request UNLOCK is a transaction AWS denies, and the server falls
back to reading the lock first, with one warning that says what to grant.

A moto server of its own runs with IAM enforcement (moto checks the transaction as
``dynamodb:TransactWriteItems``, AWS as ``dynamodb:ConditionCheckItem`` plus
``dynamodb:DeleteItem``; neither is granted here).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.testing.processes import MotoServer, StatekeeperServer

pytestmark = pytest.mark.aws

BUCKET, TABLE = "minimal-policy", "minimal-locks"
#: S3 as the server needs it, DynamoDB as Terraform's documentation lists it.
MINIMAL = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {
            "Effect": "Allow",
            "Action": [
                "dynamodb:DescribeTable",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:DeleteItem",
                "dynamodb:Scan",
            ],
            "Resource": "*",
        },
    ],
}


@pytest.fixture
def minimal_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A moto server enforcing IAM, and the environment of a user with the minimal policy."""
    # The first six requests (the set-up below) are let through unauthenticated.
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "6")
    server = MotoServer(tmp_path / "moto-iam").start()
    monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
    try:
        server.versioned_bucket(BUCKET)  # two requests
        server.lock_table(TABLE)
        iam = server.client("iam")
        iam.create_user(UserName="terraform")
        iam.put_user_policy(
            UserName="terraform", PolicyName="minimal", PolicyDocument=json.dumps(MINIMAL)
        )
        key = iam.create_access_key(UserName="terraform")["AccessKey"]
        yield server.env() | {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
    finally:
        server.stop()


def _send(server: StatekeeperServer, method: str, lock: LockInfo) -> httpx.Response:
    return httpx.request(method, server.state_url("app.tfstate"), content=lock.body, timeout=60)


def test_an_unlock_without_transactions_reads_first_and_says_what_to_grant(
    minimal_env: dict[str, str], serve: Callable[..., StatekeeperServer]
) -> None:
    server = serve("--store", f"s3://{BUCKET}", "--locks", f"dynamodb://{TABLE}", env=minimal_env)
    for operation in ("OperationTypeApply", "OperationTypePlan"):
        lock = LockInfo.new(operation, "ci")
        assert _send(server, "LOCK", lock).status_code == 200
        assert _send(server, "UNLOCK", lock).status_code == 200
        assert _send(server, "LOCK", lock).status_code == 200  # released: free again
        assert _send(server, "UNLOCK", lock).status_code == 200
    server.stop()
    log = server.log()
    assert log.count("refused a transaction (dynamodb:ConditionCheckItem") == 1, log
    assert "Traceback" not in log

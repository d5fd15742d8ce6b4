"""AccessDenied from AWS becomes our error naming the action and the resource.

A moto server of its own runs with IAM enforcement: after the set-up calls,
every request is checked against the policy of the IAM user whose keys the
statekeeper server uses (read-only here).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.testing.contracts import STATE
from statekeeper.testing.processes import MotoServer, StatekeeperServer

pytestmark = pytest.mark.aws

BUCKET = "locked-down"
READ_ONLY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            # moto 5.2 authorizes some S3 calls by their API name (HeadObject,
            # ListObjectsV2) instead of the IAM action AWS checks (s3:GetObject,
            # s3:ListBucket); granting both names keeps the user read-only.
            "Action": [
                "s3:GetObject",
                "s3:HeadObject",
                "s3:ListBucket",
                "s3:ListObjectsV2",
                "s3:GetBucketVersioning",
            ],
            "Resource": "*",
        }
    ],
}


@pytest.fixture
def enforcing_moto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[MotoServer, dict[str, str]]]:
    """A moto server enforcing IAM, and the environment of a read-only IAM user."""
    # The first four requests (the set-up below) are let through unauthenticated.
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "4")
    server = MotoServer(tmp_path / "moto-iam").start()
    monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
    try:
        env = server.env()

        def client(service: str) -> Any:
            return boto3.client(  # type: ignore[call-overload]
                service,
                endpoint_url=server.url,
                region_name="us-east-1",
                aws_access_key_id="test",
                aws_secret_access_key="test",
            )

        s3, iam = client("s3"), client("iam")
        s3.create_bucket(Bucket=BUCKET)
        iam.create_user(UserName="reader")
        iam.put_user_policy(
            UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(READ_ONLY)
        )
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        env |= {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
        yield server, env
    finally:
        server.stop()


def test_denied_write_and_lock_name_the_action(
    enforcing_moto: tuple[MotoServer, dict[str, str]],
    serve: Callable[..., StatekeeperServer],
) -> None:
    _, env = enforcing_moto
    server = serve("--store", f"s3://{BUCKET}/team", "--locks", "s3lock://", env=env)
    # Reading is allowed: no state yet.
    assert httpx.get(server.state_url("app.tfstate"), timeout=30).status_code == 404
    written = httpx.post(server.state_url("app.tfstate"), content=STATE, timeout=60)
    assert written.status_code == 502
    body = written.json()
    assert body["error"] == "storage_access_denied"
    assert "s3:PutObject" in body["message"]
    assert f"s3://{BUCKET}/team/app.tfstate" in body["message"]
    locked = httpx.request(
        "LOCK",
        server.state_url("app.tfstate"),
        content=LockInfo.new("OperationTypeApply", "ci").body,
        timeout=60,
    )
    assert locked.status_code == 502
    assert f"s3:PutObject on s3://{BUCKET}/team/app.tfstate.tflock" in locked.json()["message"]
    server.stop()
    assert "Traceback" not in server.log()

"""What a server on S3 + DynamoDB (a moto server) says and writes: readiness on a missing
bucket, and the LockInfo it stores in a DynamoDB lock item."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.testing.processes import MotoServer, StatekeeperServer

pytestmark = pytest.mark.aws


def test_readyz_says_a_missing_bucket_does_not_exist(
    serve: Callable[..., StatekeeperServer], moto: MotoServer, s3: Any, plain_bucket: str
) -> None:
    server = serve("--store", f"s3://{plain_bucket}", env=moto.env())
    assert httpx.get(server.url + "/readyz", timeout=30).status_code == 200
    s3.delete_bucket(Bucket=plain_bucket)

    answer = httpx.get(server.url + "/readyz", timeout=30)
    assert answer.status_code == 503
    # The answer says the kind only (it is public); the log says the rest.
    assert answer.json()["checks"] == {
        "store": "storage_unavailable: unavailable",
        "locks": "storage_unavailable: unavailable",
    }
    # As every other missing-bucket message says it, not botocore's "(404) when calling",
    # for the store and for the lock files beside its states.
    missing = (
        f"the S3 bucket {plain_bucket!r} does not exist (s3:HeadBucket answered 404); "
        f"create it first (see `statekeeper bootstrap`) or correct 's3://{plain_bucket}' "
        "(--store, STATEKEEPER_STORE or store in the config file)"
    )
    said = [
        line.split(" not ready: ", 1)[1]
        for line in server.log().splitlines()
        if "readiness: " in line
    ]
    assert said == [f"storage_unavailable: {missing}"] * 2


def test_the_dynamodb_lock_item_carries_the_path_terraform_writes(
    serve: Callable[..., StatekeeperServer], moto: MotoServer, ddb: Any, bucket: str, table: str
) -> None:
    server = serve(
        "--store", f"s3://{bucket}/pfx", "--locks", f"dynamodb://{table}", env=moto.env()
    )
    url = server.state_url("team/app.tfstate")
    lock = LockInfo.new("OperationTypeApply", "tf@ci")  # Path "", as the http backend sends
    assert httpx.request("LOCK", url, content=lock.body, timeout=30).status_code == 200

    item = ddb.get_item(TableName=table, Key={"LockID": {"S": f"{bucket}/pfx/team/app.tfstate"}})
    info = json.loads(item["Item"]["Info"]["S"])
    assert info["Path"] == f"{bucket}/pfx/team/app.tfstate"
    assert info["ID"] == lock.id and info["Who"] == "tf@ci"
    # A second client is told the holder with that Path, as Terraform's backend "s3" tells it.
    other = LockInfo.new("OperationTypePlan", "other@host")
    conflict = httpx.request("LOCK", url, content=other.body, timeout=30)
    assert conflict.status_code == 423 and conflict.json()["Path"] == info["Path"]

    # The lock as stored is the lock the holder releases (the delete is conditioned on it).
    assert httpx.request("UNLOCK", url, content=lock.body, timeout=30).status_code == 200
    assert "Item" not in ddb.get_item(
        TableName=table, Key={"LockID": {"S": f"{bucket}/pfx/team/app.tfstate"}}
    )

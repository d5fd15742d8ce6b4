"""The global options on S3 and DynamoDB (a moto server): AWS_REGION, the store's audit
trail, TOML lock lists, and doctor's duration."""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from statekeeper.testing.processes import MotoServer
from statekeeper.testing.statefiles import state_bytes

pytestmark = [pytest.mark.aws]

CliFn = Callable[..., Any]
WHO = f"{getpass.getuser()}@{socket.gethostname()}"
BUCKET = "paths-tfstate"
TABLE = "paths-locks"
NAME = "team/app.tfstate"


def _bucket_and_table(moto: MotoServer, region: str) -> None:
    import boto3

    kw: dict[str, Any] = {
        "endpoint_url": moto.url,
        "region_name": region,
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }
    s3 = boto3.client("s3", **kw)
    config = {} if region == "us-east-1" else {"LocationConstraint": region}
    s3.create_bucket(Bucket=BUCKET, **({"CreateBucketConfiguration": config} if config else {}))
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    boto3.client("dynamodb", **kw).create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _state(tmp_path: Path, serial: int = 1) -> str:
    path = tmp_path / f"s{serial}.tfstate"
    path.write_bytes(state_bytes(serial))
    return str(path)


def test_aws_region_alone_reaches_the_table(
    moto: MotoServer, cli_process: CliFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _bucket_and_table(moto, "eu-west-1")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    store = ["--store", f"s3://{BUCKET}", "--locks", f"dynamodb://{TABLE}"]
    pushed = cli_process(*store, "push", NAME, _state(tmp_path))
    assert pushed.exit_code == 0, pushed.stderr
    listed = cli_process("states", "--json", *store)
    assert listed.exit_code == 0, listed.stderr
    assert [r["name"] for r in json.loads(listed.stdout)] == [NAME]
    # bootstrap and doctor resolve the region the same way
    report = cli_process("bootstrap", "--bucket", "fresh-bucket", "--dry-run", "--json")
    assert report.exit_code == 0, report.stderr
    assert json.loads(report.stdout)["region"] == "eu-west-1"


def test_audit_reads_the_trail_of_the_store_given(
    moto: MotoServer, cli_process: CliFn, tmp_path: Path
) -> None:
    _bucket_and_table(moto, "us-east-1")
    store = ["--store", f"s3://{BUCKET}/states", "--locks", f"dynamodb://{TABLE}"]
    assert cli_process(*store, "push", NAME, _state(tmp_path)).exit_code == 0
    r = cli_process("--store", f"s3://{BUCKET}/states", "audit", "--json")
    assert r.exit_code == 0, r.stderr
    events = json.loads(r.stdout)
    assert [(e["action"], e["state"], e["actor"]) for e in events if e["state"]] == [
        ("push", NAME, WHO)
    ]


def test_toml_lock_list(moto: MotoServer, cli_process: CliFn, tmp_path: Path) -> None:
    _bucket_and_table(moto, "us-east-1")
    config = tmp_path / "statekeeper.toml"
    config.write_text(
        f'store = "s3://{BUCKET}"\nlocks = ["dynamodb://{TABLE}", "s3lock://{BUCKET}"]\n'
    )
    pushed = cli_process("--config", str(config), "push", NAME, _state(tmp_path))
    assert pushed.exit_code == 0, pushed.stderr
    shown = cli_process("show", NAME, "--json", "--config", str(config))
    assert json.loads(shown.stdout)["version"]["serial"] == 1
    config.write_text(f'store = "s3://{BUCKET}"\nlock = "dynamodb://{TABLE}"\n')
    refused = cli_process("--config", str(config), "states")
    assert refused.exit_code == 2
    assert "unknown setting 'lock'" in refused.stderr


def test_doctor_reads_weeks(moto: MotoServer, cli_process: CliFn) -> None:
    _bucket_and_table(moto, "us-east-1")
    r = cli_process(
        "doctor",
        "--bucket",
        BUCKET,
        "--table",
        TABLE,
        "--stale-after",
        "1w",
        "--json",
    )
    assert r.exit_code in (0, 1), r.stderr
    checks = {c["check"]: c for c in json.loads(r.stdout)["checks"]}
    assert "older than 1w" in checks["locks.stale"]["summary"]


def test_a_table_missing_in_the_region_asked_names_the_region(
    moto: MotoServer, cli_process: CliFn
) -> None:
    _bucket_and_table(moto, "us-east-1")
    locks = f"dynamodb://{TABLE}?region=eu-west-1"
    result = cli_process("--store", f"s3://{BUCKET}", "--locks", locks, "locks")
    assert result.exit_code == 1
    assert f"the DynamoDB table {TABLE!r} does not exist in eu-west-1" in result.stderr
    assert f"dynamodb://{TABLE}?region=REGION" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_write_without_the_digest_table_says_the_digest_is_stale(
    moto: MotoServer, cli_process: CliFn, tmp_path: Path
) -> None:
    _bucket_and_table(moto, "us-east-1")
    store = ["--store", f"s3://{BUCKET}"]
    first = cli_process(*store, "--locks", f"dynamodb://{TABLE}", "push", NAME, _state(tmp_path))
    assert first.exit_code == 0, first.stderr

    # --store alone: the lock table (and its digest item) is not known
    pushed = cli_process(*store, "push", NAME, _state(tmp_path, 2))
    assert pushed.exit_code == 0, pushed.stderr
    assert f"the DynamoDB digest of {NAME} was not updated" in pushed.stderr
    assert f"statekeeper doctor --bucket {BUCKET} --table TABLE --fix" in pushed.stderr
    rolled = cli_process(*store, "rollback", NAME, "--to", "serial:1", "--yes")
    assert rolled.exit_code == 0, rolled.stderr
    assert "was not updated" in rolled.stderr
    assert cli_process(*store, "delete", NAME).exit_code == 0
    restored = cli_process(*store, "trash", "restore", NAME)
    assert restored.exit_code == 0, restored.stderr
    assert "was not updated" in restored.stderr

    # with the table given the digest is kept, and nothing is said
    kept = cli_process(
        *store, "--locks", f"dynamodb://{TABLE}", "rollback", NAME, "--to", "serial:2", "--yes"
    )
    assert kept.exit_code == 0, kept.stderr
    assert "digest" not in kept.stderr
    current = moto.client("s3").get_object(Bucket=BUCKET, Key=NAME)["Body"].read()
    item = moto.client("dynamodb").get_item(
        TableName=TABLE, Key={"LockID": {"S": f"{BUCKET}/{NAME}-md5"}}
    )["Item"]
    assert item["Digest"]["S"] == hashlib.md5(current).hexdigest()

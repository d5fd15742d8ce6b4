"""What the AWS drivers write is Terraform's own layout, read back with plain boto3."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest

from statekeeper.errors import (
    CapabilityMissing,
    ConfigError,
    LockConflict,
    LockNotFound,
    StorageError,
)
from statekeeper.state.version import StateVersion
from statekeeper.storage.aws.dynamodb import DynamoLocks
from statekeeper.storage.aws.s3 import S3Store
from statekeeper.storage.aws.s3lock import S3LockFiles
from statekeeper.storage.aws.s3parts import PART_SIZE
from statekeeper.storage.base import LockTable
from statekeeper.storage.dual import DualLocks
from statekeeper.storage.registry import open_locks, open_store
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.workspaces import list_workspaces, workspace_of, workspace_state
from statekeeper.testing.contracts import STATE
from statekeeper.times import utcnow


def _s3_store(url: str) -> S3Store:
    store = open_store(url)
    assert isinstance(store, S3Store)
    return store


def test_state_object_key_metadata_and_encryption(bucket: str, s3: Any) -> None:
    store = _s3_store(f"s3://{bucket}/team?sse=AES256")
    meta = StateVersion(
        name="app.tfstate",
        version_id="",
        size=len(STATE),
        created=utcnow(),
        serial=2,
        lineage="stub-lineage",
        lock_id="abc",
        actor="alice@example.com",
        sha256=hashlib.sha256(STATE).hexdigest(),
    ).to_metadata()
    info = store.put("app.tfstate", STATE, meta)
    assert store.full_key("app.tfstate") == "team/app.tfstate"
    assert store.lock_namespace == bucket
    obj = s3.get_object(Bucket=bucket, Key="team/app.tfstate")
    assert obj["Body"].read() == STATE
    assert obj["VersionId"] == info.version_id
    assert obj["ServerSideEncryption"] == "AES256"
    assert obj["ContentType"] == "application/json"
    assert StateVersion.metadata_fields(obj["Metadata"]) == {
        "serial": 2,
        "lineage": "stub-lineage",
        "lock_id": "abc",
        "actor": "alice@example.com",
        "sha256": hashlib.sha256(STATE).hexdigest(),
    }


def test_versions_carry_metadata_and_skip_delete_markers(bucket: str) -> None:
    store = _s3_store(f"s3://{bucket}")
    for serial in (1, 2):
        store.put("h.tfstate", STATE, {"serial": str(serial)})
    store.delete("h.tfstate")
    store.put("h.tfstate", STATE, {"serial": "3"})
    versions = store.versions("h.tfstate")
    assert [v.metadata.get("serial") for v in versions] == ["3", "2", "1"]
    assert all(v.has_metadata for v in versions)
    assert [v.is_latest for v in versions] == [True, False, False]


def test_unversioned_bucket_writes_but_has_no_history(plain_bucket: str) -> None:
    store = _s3_store(f"s3://{plain_bucket}")
    assert store.versioning_status == "Disabled"
    store.put("u.tfstate", STATE, {})
    got = store.get("u.tfstate")
    assert got is not None and got.data == STATE
    with pytest.raises(CapabilityMissing, match="put-bucket-versioning"):
        store.versions("u.tfstate")
    assert store.history_warning is not None and plain_bucket in store.history_warning


def test_large_state_multipart_and_ranged_read(bucket: str, s3: Any) -> None:
    store = _s3_store(f"s3://{bucket}?sse=AES256")
    body = os.urandom(2 * PART_SIZE + 12345)
    info = store.put("big.tfstate", body, {"serial": "9"})
    head = s3.head_object(Bucket=bucket, Key="big.tfstate", PartNumber=1)
    assert head.get("PartsCount") == 3  # it went up in parts
    assert s3.head_object(Bucket=bucket, Key="big.tfstate")["Metadata"] == {"serial": "9"}
    got = store.get("big.tfstate")
    assert got is not None and got.data == body
    assert got.info.version_id == info.version_id
    old = store.get("big.tfstate", info.version_id)
    assert old is not None and old.data == body and old.info.is_latest


def test_zero_length_object_is_no_state(bucket: str, s3: Any) -> None:
    s3.put_object(Bucket=bucket, Key="empty.tfstate", Body=b"")
    store = _s3_store(f"s3://{bucket}")
    assert store.get("empty.tfstate") is None
    assert store.head("empty.tfstate") is None
    assert [i.key for i in store.scan()] == []


def test_scan_skips_lock_files_and_other_prefixes(bucket: str, s3: Any) -> None:
    for key in ("p/a.tfstate", "p/a.tfstate.tflock", "p/env:/dev/a.tfstate", "other/b.tfstate"):
        s3.put_object(Bucket=bucket, Key=key, Body=STATE)
    store = _s3_store(f"s3://{bucket}/p")
    assert [i.key for i in store.scan()] == ["a.tfstate", "env:/dev/a.tfstate"]
    assert [i.key for i in store.scan("env:/")] == ["env:/dev/a.tfstate"]


def test_dynamodb_items_are_terraforms(bucket: str, table: str, ddb: Any) -> None:
    store = _s3_store(f"s3://{bucket}/team")
    locks = open_locks(f"dynamodb://{table}", store)
    lock = LockInfo.new("OperationTypeApply", "root@vm", version="1.15.5").with_facts(
        "alice", "10.0.0.1"
    )
    locks.acquire("app.tfstate", lock)
    item = ddb.get_item(
        TableName=table, Key={"LockID": {"S": f"{bucket}/team/app.tfstate"}}, ConsistentRead=True
    )["Item"]
    # As sent, with Path as Terraform's backend "s3" fills it (the http backend sends "").
    stored = json.loads(item["Info"]["S"])
    assert stored == {**json.loads(lock.body), "Path": f"{bucket}/team/app.tfstate"}
    assert list(stored) == ["ID", "Operation", "Info", "Who", "Version", "Created", "Path"]
    assert item["Actor"]["S"] == "alice" and item["RemoteAddr"]["S"] == "10.0.0.1"
    held = locks.read("app.tfstate")
    assert held is not None and held.actor == "alice" and held.acquired is not None
    locks.put_digest("app.tfstate", hashlib.md5(STATE).hexdigest())
    digest = ddb.get_item(TableName=table, Key={"LockID": {"S": f"{bucket}/team/app.tfstate-md5"}})[
        "Item"
    ]
    assert digest["Digest"]["S"] == hashlib.md5(STATE).hexdigest()
    # Items of other buckets, digests and items outside the prefix are not listed.
    ddb.put_item(
        TableName=table, Item={"LockID": {"S": "other-bucket/team/x"}, "Info": item["Info"]}
    )
    ddb.put_item(
        TableName=table, Item={"LockID": {"S": f"{bucket}/elsewhere/y"}, "Info": item["Info"]}
    )
    assert [name for name, _ in locks.scan()] == ["app.tfstate"]


def test_dynamodb_releases_a_lock_terraform_wrote(bucket: str, table: str, ddb: Any) -> None:
    # Terraform's items carry only LockID and Info.
    info = LockInfo.new("OperationTypePlan", "tf@host", path=f"{bucket}/k.tfstate")
    ddb.put_item(
        TableName=table,
        Item={"LockID": {"S": f"{bucket}/k.tfstate"}, "Info": {"S": info.body.decode()}},
    )
    locks = open_locks(f"dynamodb://{table}", _s3_store(f"s3://{bucket}"))
    with pytest.raises(LockConflict) as conflict:
        locks.acquire("k.tfstate", LockInfo.new("test", "us"))
    assert conflict.value.holder.body == info.body
    assert locks.release("k.tfstate", info.id).id == info.id
    assert "Item" not in ddb.get_item(TableName=table, Key={"LockID": {"S": f"{bucket}/k.tfstate"}})


def test_lock_file_body_path_and_release(bucket: str, s3: Any) -> None:
    store = _s3_store(f"s3://{bucket}/team")
    locks = open_locks("s3lock://", store)
    assert isinstance(locks, S3LockFiles)
    lock = LockInfo.new("OperationTypeApply", "root@vm")
    locks.acquire("app.tfstate", lock)
    raw = s3.get_object(Bucket=bucket, Key="team/app.tfstate.tflock")["Body"].read()
    sent, stored = json.loads(lock.body), json.loads(raw)
    assert stored == {**sent, "Path": f"{bucket}/team/app.tfstate"}
    assert list(stored) == ["ID", "Operation", "Info", "Who", "Version", "Created", "Path"]
    assert b" " not in raw  # compact, as Terraform writes it
    locks.release("app.tfstate", lock.id)
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key="team/app.tfstate.tflock")


def test_both_locks_give_back_the_lock_file_when_dynamodb_is_held(
    bucket: str, table: str, s3: Any, ddb: Any
) -> None:
    store = _s3_store(f"s3://{bucket}")
    dynamo_only = open_locks(f"dynamodb://{table}", store)
    both = open_locks([f"dynamodb://{table}", f"s3lock://{bucket}"], store)
    assert isinstance(both, DualLocks)
    assert [t.scheme for t in both.tables] == ["s3lock", "dynamodb"]
    assert both.keeps_digests
    held = LockInfo.new("OperationTypeApply", "dynamo-only")
    dynamo_only.acquire("s.tfstate", held)
    with pytest.raises(LockConflict) as conflict:
        both.acquire("s.tfstate", LockInfo.new("test", "both"))
    assert conflict.value.holder.id == held.id
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert [o["Key"] for o in listed] == []  # upstream LockFileCleanupOnDynamoDBLock


def test_both_locks_release_reports_the_one_that_failed(
    bucket: str, table: str, s3: Any, ddb: Any
) -> None:
    store = _s3_store(f"s3://{bucket}")
    both: LockTable = open_locks(f"s3lock://{bucket},dynamodb://{table}", store)
    lock = LockInfo.new("test", "both")
    both.acquire("s.tfstate", lock)
    # The DynamoDB item is deleted out of band (upstream testBackendStateLockDeletedOutOfBand).
    ddb.delete_item(TableName=table, Key={"LockID": {"S": f"{bucket}/s.tfstate"}})
    with pytest.raises(LockNotFound, match="failed to unlock the DynamoDB lock"):
        both.release("s.tfstate", lock.id)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # lock file still removed


def test_workspace_state_names(bucket: str) -> None:
    assert str(workspace_state("proj/terraform.tfstate")) == "proj/terraform.tfstate"
    assert (
        str(workspace_state("proj/terraform.tfstate", "dev")) == "env:/dev/proj/terraform.tfstate"
    )
    assert str(workspace_state("k", "ws1", prefix="")) == "ws1/k"
    # Upstream TestKeyEnv.
    assert workspace_of("ws1/some/paths/tfstate", "some/paths/tfstate", "") == "ws1"
    assert workspace_of("some/paths/tfstate", "some/paths/tfstate", "") == "default"
    assert workspace_of("project/env:/ws1/k", "k", "project/env:") == "ws1"
    assert workspace_of("env:/ws1/other", "k") is None
    store = _s3_store(f"s3://{bucket}")
    for name in (
        "proj/terraform.tfstate",
        "env:/dev/proj/terraform.tfstate",
        "env:/prod/proj/terraform.tfstate",
        "env:/dev/other.tfstate",
    ):
        store.put(name, STATE, {})
    assert list_workspaces((i.key for i in store.scan()), "proj/terraform.tfstate") == [
        "default",
        "dev",
        "prod",
    ]
    assert list_workspaces((i.key for i in store.scan()), "other.tfstate") == ["default", "dev"]


def test_missing_bucket_and_table_are_named(bucket: str) -> None:
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        open_store("s3://no-such-bucket/p")
    with pytest.raises(StorageError, match="DynamoDB table 'no-such-table' does not exist"):
        open_locks("dynamodb://no-such-table", _s3_store(f"s3://{bucket}"))
    with pytest.raises(StorageError, match="does not exist"):
        open_locks("s3lock://no-such-bucket", _s3_store(f"s3://{bucket}"))


def test_dynamodb_locks_are_per_store_prefix(bucket: str, table: str) -> None:
    a = open_locks(f"dynamodb://{table}", _s3_store(f"s3://{bucket}/a"))
    b = open_locks(f"dynamodb://{table}", _s3_store(f"s3://{bucket}/b"))
    assert isinstance(a, DynamoLocks) and isinstance(b, DynamoLocks)
    a.acquire("x.tfstate", LockInfo.new("test", "a"))
    b.acquire("x.tfstate", LockInfo.new("test", "b"))  # another key: no conflict
    assert [n for n, _ in a.scan()] == ["x.tfstate"]


def test_s3_store_without_lock_url_uses_lock_files(bucket: str, s3: Any) -> None:
    # What `serve --store s3://…` with no --locks does: Terraform's use_lockfile layout.
    store = _s3_store(f"s3://{bucket}/p?sse=AES256")
    locks = open_locks(f"s3://{bucket}/p?sse=AES256", store)
    assert isinstance(locks, S3LockFiles)
    lock = LockInfo.new("test", "default")
    locks.acquire("x.tfstate", lock)
    held = s3.get_object(Bucket=bucket, Key="p/x.tfstate.tflock")
    assert held["ServerSideEncryption"] == "AES256"
    locks.release("x.tfstate", lock.id)


def test_kms_encryption_on_states_and_lock_files(bucket: str, s3: Any, kms: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["Arn"]
    url = f"s3://{bucket}/k?kms_key_id={key_id}"
    store = _s3_store(url)
    store.put("enc.tfstate", STATE, {})
    locks = open_locks(url, store)
    locks.acquire("enc.tfstate", LockInfo.new("test", "kms"))
    for key in ("k/enc.tfstate", "k/enc.tfstate.tflock"):
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == key_id
    with pytest.raises(ConfigError, match="kms_key_id needs sse=aws:kms"):
        open_store(f"s3://{bucket}?sse=AES256&kms_key_id={key_id}")

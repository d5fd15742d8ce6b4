"""Compaction on S3 (moto): off by default, and with compact = true it deletes the object
versions of a released lock's intermediate snapshots, recording the count beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from statekeeper.app import Services
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings
from statekeeper.state.hygiene import parse_history
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.statefiles import state_bytes

pytestmark = pytest.mark.aws

NAME = StateName("team/app.tfstate")
CALLER = Caller(actor="alice@laptop")


def run(tmp_path: Path, bucket: str, history: str) -> Services:
    s = Services.build(
        Settings(data_dir=tmp_path, store=f"s3://{bucket}", history=parse_history(history))
    )
    lock = LockInfo.new("OperationTypeApply", CALLER.actor)
    s.locks.lock(NAME, lock.body, CALLER)
    for serial in (1, 2, 3):
        s.states.write(NAME, state_bytes(serial), CALLER, lock_id=lock.id)
    s.locks.unlock(NAME, lock.body, CALLER)
    return s


def object_versions(s3: Any, bucket: str) -> int:
    listed = s3.list_object_versions(Bucket=bucket, Prefix=str(NAME))
    return sum(1 for v in listed.get("Versions", []) if v["Key"] == str(NAME))


def test_off_by_default_on_s3(tmp_path: Path, bucket: str, s3: Any) -> None:
    s = run(tmp_path, bucket, "")
    try:
        assert object_versions(s3, bucket) == 3
    finally:
        s.close()


def test_compact_true_deletes_the_intermediate_object_versions(
    tmp_path: Path, bucket: str, s3: Any
) -> None:
    s = run(tmp_path, bucket, "compact = true")
    try:
        assert object_versions(s3, bucket) == 1
        (kept,) = s.history.versions(NAME, CALLER)
        assert (kept.serial, kept.replaced, kept.is_current) == (3, 2, True)
        got = s3.get_object(Bucket=bucket, Key=str(NAME))["Body"].read()
        assert got == state_bytes(3)
    finally:
        s.close()

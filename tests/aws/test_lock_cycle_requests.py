"""The requests one lock cycle makes to S3 and DynamoDB, counted on the wire (botocore's
``before-send``): Terraform's own ``backend "s3"`` makes 7 for LOCK → read → write →
UNLOCK; statekeeper makes 8 (its write reads the lock it is fenced by)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statekeeper.app import Services
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName

NAME = StateName("team/app.tfstate")
CI = Caller("ci", "127.0.0.1")


def _state(serial: int) -> bytes:
    doc = {"version": 4, "serial": serial, "lineage": "L", "outputs": {}, "resources": []}
    return json.dumps(doc).encode()


@pytest.fixture
def services(tmp_path: Path, bucket: str, table: str) -> Iterator[Services]:
    settings = load_settings(
        {"data_dir": tmp_path, "store": f"s3://{bucket}", "locks": f"dynamodb://{table}"},
        env={},
    )
    built = Services.build(settings)
    yield built
    built.close()


class Wire:
    """The requests the services' S3 and DynamoDB clients send for states and their locks
    (statekeeper's own objects, such as the audit trail's batches, are left out)."""

    def __init__(self, *clients: Any) -> None:
        self.sent: list[str] = []
        for client in clients:
            client.meta.events.register("before-send", self._record)

    def _record(self, request: Any, **_: Any) -> None:
        target = request.headers.get("X-Amz-Target")
        if target:  # DynamoDB: the operation is in a header
            self.sent.append(target.decode().rsplit(".", 1)[1])
        elif "/statekeeper%21/" not in request.url and "/statekeeper!/" not in request.url:
            self.sent.append(f"{request.method} s3")

    def take(self) -> list[str]:
        sent, self.sent = self.sent, []
        return sent


def test_a_lock_cycle_makes_one_request_more_than_terraform(services: Services) -> None:
    wire = Wire(services.store.inner.where.client, services.lock_table.client)  # type: ignore[attr-defined]
    # The first cycle writes the state's first version (another path); count the second.
    for serial in (1, 2):
        lock = LockInfo.new("ci", "OperationTypeApply")
        wire.take()
        services.locks.lock(NAME, lock.body, CI)
        locked = wire.take()
        services.states.read(NAME, CI)
        read = wire.take()
        services.states.write(NAME, _state(serial), CI, lock_id=lock.id)
        written = wire.take()
        services.locks.unlock(NAME, lock.body, CI)
        unlocked = wire.take()
    assert locked == ["PutItem"]  # conditioned on the lock's absence
    assert read == ["GET s3"]
    # The fence (whose lock is it), the version (If-Match on the one read), the digest.
    assert written == ["GetItem", "PUT s3", "PutItem"]
    # The holder, the delete conditioned on it, and whether any plan shares the state.
    assert unlocked == ["GetItem", "DeleteItem", "GetItem"]

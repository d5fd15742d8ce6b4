"""The requests one lock cycle makes to S3 and DynamoDB, counted on the wire (botocore's
``before-send``), and the paths an UNLOCK falls back to when what it remembers is not so.

Terraform's own ``backend "s3"`` makes 7 requests for LOCK → read → write → UNLOCK;
statekeeper makes 6. Its write reads the lock it is fenced by (Terraform trusts its own
lock), and its UNLOCK of a lock this server granted is one conditional DeleteItem where
Terraform reads the holder first: the lock as granted, deleted only if it is still
exactly that one and no plan's hold was marked on it. When that condition fails, or the
server does not know the lock (restarted, another replica), the UNLOCK reads and
answers as it always did.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from statekeeper.app import Services
from statekeeper.errors import LockMismatch, LockNotFound
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.storage.aws.dynamodb import DynamoLocks
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName

NAME = StateName("team/app.tfstate")
CI = Caller("ci", "127.0.0.1")
OPERATOR = Caller("operator", "127.0.0.1")

Build = Callable[..., Services]


def _state(serial: int) -> bytes:
    doc = {"version": 4, "serial": serial, "lineage": "L", "outputs": {}, "resources": []}
    return json.dumps(doc).encode()


@pytest.fixture
def build(tmp_path: Path, bucket: str, table: str) -> Iterator[Build]:
    """Services on the bucket and table, as one server process has them; each call is
    another process (a replica, or the same server after a restart)."""
    built: list[Services] = []

    def make(mode: str = "shared-plans") -> Services:
        settings = load_settings(
            {
                "data_dir": tmp_path / f"replica-{len(built)}",
                "store": f"s3://{bucket}",
                "locks": f"dynamodb://{table}",
                "lock_policy": {"mode": mode},
            },
            env={},
        )
        built.append(Services.build(settings))
        return built[-1]

    yield make
    for services in built:
        services.close()


class Wire:
    """The requests the services' S3 and DynamoDB clients send for states and their locks
    (statekeeper's own objects under ``statekeeper!/``, such as the audit trail's batches
    and the webhook subscriptions a process lists at its first event, are left out)."""

    def __init__(self, services: Services) -> None:
        self.sent: list[str] = []
        clients = (services.store.inner.where.client, services.lock_table.client)  # type: ignore[attr-defined]
        for client in clients:
            client.meta.events.register("before-send", self._record)

    def _record(self, request: Any, **_: Any) -> None:
        target = request.headers.get("X-Amz-Target")
        if target:  # DynamoDB: the operation is in a header
            self.sent.append(target.decode().rsplit(".", 1)[1])
        elif "statekeeper%21" not in request.url and "statekeeper!" not in request.url:
            self.sent.append(f"{request.method} s3")

    def take(self) -> list[str]:
        sent, self.sent = self.sent, []
        return sent


def _cycle(services: Services, wire: Wire, serial: int) -> list[list[str]]:
    """One LOCK → GET → POST → UNLOCK; the requests of each step."""
    lock = LockInfo.new("OperationTypeApply", "ci")
    wire.take()
    steps = []
    services.locks.lock(NAME, lock.body, CI)
    steps.append(wire.take())
    services.states.read(NAME, CI)
    steps.append(wire.take())
    services.states.write(NAME, _state(serial), CI, lock_id=lock.id)
    steps.append(wire.take())
    services.locks.unlock(NAME, lock.body, CI)
    steps.append(wire.take())
    return steps


def test_a_lock_cycle_makes_one_request_fewer_than_terraform(build: Build) -> None:
    services = build()
    wire = Wire(services)
    _cycle(services, wire, 1)  # the state's first version is another path; count the second
    locked, read, written, unlocked = _cycle(services, wire, 2)
    assert locked == ["PutItem"]  # conditioned on the lock's absence
    assert read == ["GET s3"]
    # The fence (whose lock is it), the version (If-Match on the one read), the digest.
    assert written == ["GetItem", "PUT s3", "PutItem"]
    # The lock as granted, deleted only if still so and no plan shares it.
    assert unlocked == ["DeleteItem"]
    assert services.locks.read(NAME) is None


def test_under_the_exclusive_policy_the_unlock_is_one_conditional_delete(build: Build) -> None:
    services = build("exclusive")
    wire = Wire(services)
    assert _cycle(services, wire, 1)[3] == ["DeleteItem"]  # no plan can share the state
    assert services.locks.read(NAME) is None


def test_an_unlock_after_a_force_unlock_and_a_new_lock_names_the_new_holder(
    build: Build,
) -> None:
    server, replica = build(), build()
    wire = Wire(server)
    mine, theirs = LockInfo.new("OperationTypeApply", "ci"), LockInfo.new("OperationTypeApply", "b")
    server.locks.lock(NAME, mine.body, CI)
    replica.locks.force_unlock(NAME, OPERATOR, lock_id=None)
    replica.locks.lock(NAME, theirs.body, OPERATOR)
    wire.take()
    with pytest.raises(LockMismatch) as refused:
        server.locks.unlock(NAME, mine.body, CI)
    assert refused.value.holder.id == theirs.id  # named in the answer, as before
    sent = wire.take()
    assert sent[0] == "DeleteItem" and "GetItem" in sent[1:]  # read only on failure
    holder = replica.locks.read(NAME)
    assert holder is not None and holder.id == theirs.id  # untouched


def test_an_unlock_after_a_force_unlock_finds_nothing_held(build: Build) -> None:
    server, replica = build("exclusive"), build("exclusive")
    mine = LockInfo.new("OperationTypeApply", "ci")
    server.locks.lock(NAME, mine.body, CI)
    replica.locks.force_unlock(NAME, OPERATOR, lock_id=mine.id)
    with pytest.raises(LockNotFound):
        server.locks.unlock(NAME, mine.body, CI)


def test_a_write_under_a_force_unlocked_lock_is_refused(build: Build) -> None:
    server, replica = build(), build()
    mine = LockInfo.new("OperationTypeApply", "ci")
    server.locks.lock(NAME, mine.body, CI)
    replica.locks.force_unlock(NAME, OPERATOR, lock_id=None)
    with pytest.raises(LockNotFound):
        server.states.write(NAME, _state(1), CI, lock_id=mine.id)
    assert server.store.get(str(NAME)) is None


def test_the_plans_sharing_a_lock_keep_it_when_its_holder_unlocks(build: Build) -> None:
    services = build()
    wire = Wire(services)
    first, second = (LockInfo.new("OperationTypePlan", w) for w in ("alice", "bob"))
    services.locks.lock(NAME, first.body, CI)
    services.locks.lock(NAME, second.body, CI)  # shares: a hold and the marker
    wire.take()
    services.locks.unlock(NAME, first.body, CI)
    sent = wire.take()
    assert sent[0] == "DeleteItem"  # refused: the second plan marked the lock; read, promote
    holder = services.locks.read(NAME)
    assert holder is not None and holder.id == second.id  # the lock Terraform sees
    services.locks.unlock(NAME, second.body, CI)
    assert services.locks.read(NAME) is None
    assert list(services.lock_table.scan(str(NAME))) == []  # no hold, no marker left


def test_a_writer_that_took_the_lock_from_a_plan_hands_it_back(build: Build) -> None:
    services = build()
    plan = LockInfo.new("OperationTypePlan", "alice")
    apply = LockInfo.new("OperationTypeApply", "bob")
    services.locks.lock(NAME, plan.body, CI)
    services.locks.lock(NAME, apply.body, CI)  # the plan becomes a shared hold
    services.locks.unlock(NAME, apply.body, CI)
    holder = services.locks.read(NAME)
    assert holder is not None and holder.id == plan.id
    services.locks.unlock(NAME, plan.body, CI)
    assert list(services.lock_table.scan(str(NAME))) == []


def test_a_writer_that_took_the_lock_in_a_promotion_hands_it_to_the_plans(
    build: Build,
) -> None:
    """The lock Terraform sees goes between a holder's release and the promotion of a
    plan sharing it, and a writer on another replica takes it at its first try: the
    promotion marks the writer's lock, so that the writer's UNLOCK promotes the plan."""
    server, replica = build(), build()
    first, second = (LockInfo.new("OperationTypePlan", w) for w in ("alice", "bob"))
    apply = LockInfo.new("OperationTypeApply", "carol")
    server.locks.lock(NAME, first.body, CI)
    server.locks.lock(NAME, second.body, CI)  # a hold beside the first
    # The first's release, up to the moment before the promotion:
    assert server.lock_table.delete_if_held_by(str(NAME), first.id)
    replica.locks.lock(NAME, apply.body, CI)  # at the first try: the replica knows it
    server.locks.keeper.promote(NAME)  # loses to the writer, and marks its lock
    wire = Wire(replica)
    replica.locks.unlock(NAME, apply.body, CI)
    assert wire.take()[0] == "DeleteItem"  # refused by the mark: then read and promote
    holder = replica.locks.read(NAME)
    assert holder is not None and holder.id == second.id
    server.locks.unlock(NAME, second.body, CI)
    assert list(server.lock_table.scan(str(NAME))) == []


def test_a_restarted_server_reads_the_lock_it_unlocks(build: Build) -> None:
    before = build()
    lock = LockInfo.new("OperationTypeApply", "ci")
    before.locks.lock(NAME, lock.body, CI)
    before.close()
    after = build()  # knows nothing of the lock
    wire = Wire(after)
    after.locks.unlock(NAME, lock.body, CI)
    # The holder, the delete conditioned on it, and whether any plan shares the state.
    assert wire.take() == ["GetItem", "DeleteItem", "GetItem"]
    assert after.locks.read(NAME) is None


@pytest.fixture
def table_handle(build: Build) -> DynamoLocks:
    handle = build().lock_table
    assert isinstance(handle, DynamoLocks)
    return handle


def test_a_conditional_release_spares_a_lock_with_the_same_body_from_another_taker(
    table_handle: DynamoLocks,
) -> None:
    lock = LockInfo.new("OperationTypeApply", "ci")
    key = str(NAME)
    table_handle.acquire(key, lock.with_facts("bob", "10.0.0.2"))
    assert not table_handle.release_exactly(key, lock.with_facts("alice", "10.0.0.1"))
    assert not table_handle.release_exactly(key, lock)  # no taker: Terraform's own lock
    held = table_handle.read(key)
    assert held is not None and held.actor == "bob"
    assert table_handle.release_exactly(key, lock.with_facts("bob", "10.0.0.3"))
    assert table_handle.read(key) is None


def test_a_lock_marked_shared_is_not_released_exactly(table_handle: DynamoLocks) -> None:
    lock = LockInfo.new("OperationTypePlan", "ci").with_facts("ci", None)
    key = str(NAME)
    assert not table_handle.mark_shared(key)  # nothing held
    table_handle.acquire(key, lock)
    assert table_handle.mark_shared(key)
    assert not table_handle.release_exactly(key, lock)
    held = table_handle.read(key)
    assert held is not None and held.actor == "ci"  # unchanged
    assert held.body == lock.body_with_path(table_handle.lock_id(key))
    table_handle.release(key, lock.id)  # the reading path releases it
    assert table_handle.read(key) is None


def test_terraforms_own_lock_is_released_exactly_when_it_names_no_taker(
    table_handle: DynamoLocks,
) -> None:
    lock = LockInfo.new("OperationTypeApply", "ci")  # no actor: as Terraform writes it
    key = str(NAME)
    table_handle.acquire(key, lock)
    assert not table_handle.release_exactly(key, lock.with_facts("ci", None))
    assert table_handle.release_exactly(key, lock)

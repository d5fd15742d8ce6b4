"""On S3, ``statekeeper states`` and ``GET /api/v1/states`` answer from the inventory index
while it is fresh: no bucket listing, serials known, the same rows as a listing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from statekeeper.app import Services
from statekeeper.cli.context import LocalBackend
from statekeeper.security.caller import Caller
from statekeeper.server.app import create_app
from statekeeper.settings import load_settings
from statekeeper.state.listing import list_states
from statekeeper.telemetry.metrics import Metrics
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import MotoServer
from statekeeper.testing.statefiles import state_bytes

pytestmark = pytest.mark.aws

OPERATOR = Caller(actor="operator:test")
BUCKET = "listing"
TABLE = "listing-locks"


@pytest.fixture
def s3(moto: MotoServer) -> Any:
    moto.versioned_bucket(BUCKET)
    moto.lock_table(TABLE)
    return moto.client("s3")


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def services(
    s3: Any, moto: MotoServer, tmp_path: Path, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Services]:
    for k, v in moto.env().items():
        monkeypatch.setenv(k, v)
    settings = load_settings(
        {"store": f"s3://{BUCKET}", "locks": f"dynamodb://{TABLE}", "data_dir": tmp_path / "d"},
        env={"STATEKEEPER_INVENTORY_REFRESH": "2"},
    )
    built = Services.build(settings, metrics=metrics)
    yield built
    built.close()


def _scans(metrics: Metrics) -> float:
    """Bucket listings so far (the metered store's ``scan``: ListObjectsV2 pages)."""
    value = metrics.registry.get_sample_value(
        "statekeeper_storage_operation_duration_seconds_count",
        {"driver": "s3", "operation": "scan"},
    )
    return value or 0.0


def _rows(services: Services, caller: Caller = OPERATOR) -> list[tuple[str, int | None, bool]]:
    listed = LocalBackend(services, caller).list_states("", False)
    return [(r.name, r.serial, r.serial_known) for r in listed]


def _ageless(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows without the lock's age (it grows between two listings)."""
    return [{**r, "lock": r["lock"] and {**r["lock"], "age_seconds": None}} for r in rows]


def test_a_state_terraforms_backend_wrote_is_listed_within_the_bound(
    services: Services, s3: Any
) -> None:
    services.inventory()  # the index a server keeps (a CLI uses one already on disk)
    services.states.write(StateName("ours.tfstate"), state_bytes(7), OPERATOR)
    assert _rows(services) == [("ours.tfstate", 7, True)]
    # Terraform's own backend "s3": straight into the bucket, no event, no metadata.
    s3.put_object(Bucket=BUCKET, Key="team/app.tfstate", Body=state_bytes(4))
    s3.put_object(Bucket=BUCKET, Key="env:/dev/team/app.tfstate", Body=state_bytes(2))
    time.sleep(2.1)  # past inventory_refresh: the next listing catches up first
    assert _rows(services) == [
        ("ours.tfstate", 7, True),
        ("team/app.tfstate", 4, True),
        ("env:/dev/team/app.tfstate", 2, True),
    ], "the serials come from the index, the workspace state follows its key"
    s3.delete_object(Bucket=BUCKET, Key="ours.tfstate")
    time.sleep(2.1)
    assert [name for name, _, _ in _rows(services)] == [
        "team/app.tfstate",
        "env:/dev/team/app.tfstate",
    ]


def test_a_fresh_index_answers_without_listing_the_bucket(
    services: Services, s3: Any, metrics: Metrics
) -> None:
    for name in ("team/app.tfstate", "other/app.tfstate", "env:/dev/team/app.tfstate"):
        services.states.write(StateName(name), state_bytes(3), OPERATOR)
    lock = LockInfo.new("OperationTypeApply", "ci@runner", path="team/app.tfstate")
    services.locks.lock(StateName("team/app.tfstate"), lock.body, OPERATOR)
    # What a listing of the bucket says, the index must say too (serials aside).
    listed = list_states(services.store, services.lock_table, services.policy, OPERATOR)
    services.inventory().fresh()  # caught up: fresh for the next 2 s
    before = _scans(metrics)

    backend = LocalBackend(services, OPERATOR)
    rows = backend.list_states("", False)
    scoped = _rows(services, Caller(actor="t", scopes=("team/*:read",)))
    under = backend.list_states("team/", False)
    with TestClient(create_app(services), base_url="http://localhost") as client:
        api = client.get("/api/v1/states").json()
    assert _scans(metrics) == before, "a fresh index lists nothing on S3"

    assert [(r.name, r.size, r.last_modified, r.workspace) for r in rows] == [
        (s.name, s.size, s.view().last_modified, s.workspace) for s in listed
    ]
    assert [(r.serial, r.serial_known) for r in rows] == [(3, True)] * 3
    assert [s.serial for s in listed] == [None] * 3, "a listing of S3 knows no serial"
    locked = next(r for r in rows if r.name == "team/app.tfstate")
    assert locked.locked and locked.lock is not None and locked.lock.id == lock.id
    assert scoped == [("team/app.tfstate", 3, True)], "only what the caller may read"
    assert [(r.name, r.workspace) for r in under] == [
        ("team/app.tfstate", None),
        ("env:/dev/team/app.tfstate", "dev"),
    ]
    assert _ageless(api) == _ageless([r.model_dump(mode="json") for r in rows])

    # Details read every state anyway: they list the bucket as before.
    backend.list_states("", True)
    assert _scans(metrics) > before


def test_a_cli_run_builds_no_index_just_to_list(services: Services, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="team/app.tfstate", Body=state_bytes(4))
    assert _rows(services) == [("team/app.tfstate", None, False)], "one listing, nothing read"
    assert not services.inventory_path.exists()


def test_the_ui_states_page_uses_a_fresh_index_and_never_waits_for_a_stale_one(
    services: Services, s3: Any, metrics: Metrics
) -> None:
    services.states.write(StateName("team/app.tfstate"), state_bytes(3), OPERATOR)
    inventory = services.inventory()
    inventory.fresh()  # caught up: fresh for the next 2 s
    before = _scans(metrics)
    with TestClient(create_app(services), base_url="http://localhost") as client:
        page = client.get("/")
        assert page.status_code == 200 and "team/app.tfstate" in page.text
        assert _scans(metrics) == before, "a fresh index: the page lists nothing on S3"
        # Terraform's own backend writes; the index is stale now, and busy catching up.
        s3.put_object(Bucket=BUCKET, Key="other/app.tfstate", Body=state_bytes(4))
        time.sleep(2.1)
        with inventory._sync:  # a catch-up under way: the page must not wait for it
            started = time.monotonic()
            page = client.get("/")
            assert time.monotonic() - started < 10
        assert "other/app.tfstate" in page.text, "a stale index: one listing of the bucket"
        assert _scans(metrics) > before

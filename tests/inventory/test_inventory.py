"""The inventory index: kept by the write path, caught up with the store, permissions applied."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from statekeeper.app import Services
from statekeeper.inventory import Inventory
from statekeeper.inventory.views import search
from statekeeper.security.caller import Caller
from statekeeper.server.app import create_app
from statekeeper.settings import load_settings
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import MotoServer
from statekeeper.testing.statefiles import instance, state_bytes
from statekeeper.testing.terraform import Terraform

OPERATOR = Caller(actor="operator:test")
SECRET = "db-pa55word-xyz"


def _state(serial: int, bucket: str, *, with_db: bool = True) -> bytes:
    resources = [
        instance(
            "aws_s3_bucket",
            "logs",
            {"bucket": bucket, "arn": f"arn:aws:s3:::{bucket}", "tags": {"team": "platform"}},
        )
    ]
    if with_db:
        resources.append(
            instance(
                "aws_db_instance",
                "main",
                {"identifier": "main-db", "password": SECRET, "url": f"pg://u:{SECRET}@h"},
                sensitive=[[{"type": "get_attr", "value": "password"}]],
                module="module.data",
            )
        )
    for r in resources:
        r["provider"] = 'provider["registry.terraform.io/hashicorp/aws"]'
    return state_bytes(serial, resources=resources)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = Services.build(load_settings({"data_dir": tmp_path / "data"}, env={}))
    yield built
    built.close()


def _addresses(inventory: Inventory, query: str, scopes: tuple[str, ...] | None = None) -> set[str]:
    from statekeeper.security.grants import ScopePolicy

    caller = Caller(actor="t", scopes=scopes)
    found = search(inventory, ScopePolicy(), caller, query, 100).hits
    return {f"{h.state}:{h.address}" for h in found}


def test_every_accepted_write_updates_the_index(services: Services) -> None:
    inventory = services.inventory()
    name = StateName("team/app.tfstate")
    services.states.write(name, _state(1, "logs-eu-1"), OPERATOR)
    assert _addresses(inventory, "arn:aws:s3:::logs-eu-1") == {
        "team/app.tfstate:aws_s3_bucket.logs"
    }
    assert _addresses(inventory, "type:aws_db_instance") == {
        "team/app.tfstate:module.data.aws_db_instance.main"
    }
    assert _addresses(inventory, "main-db provider:hashicorp/aws") != set()
    services.states.write(name, _state(2, "logs-eu-2", with_db=False), OPERATOR)
    assert _addresses(inventory, "logs-eu-1") == set()
    assert _addresses(inventory, "logs-eu-2") == {"team/app.tfstate:aws_s3_bucket.logs"}
    assert _addresses(inventory, "type:aws_db_instance") == set()
    services.states.delete(name, OPERATOR)
    assert _addresses(inventory, "logs-eu-2") == set()


def test_sensitive_values_are_never_indexed(services: Services, tmp_path: Path) -> None:
    inventory = services.inventory()
    services.states.write(StateName("team/app.tfstate"), _state(1, "logs-eu-1"), OPERATOR)
    assert _addresses(inventory, SECRET) == set()
    assert _addresses(inventory, "pg") == set()  # the URL holds the secret: left out whole
    inventory.close()
    services._inventory = None
    for path in (tmp_path / "data").glob("inventory.db*"):
        assert SECRET.encode() not in path.read_bytes(), path


def test_search_shows_only_states_the_caller_may_read(services: Services) -> None:
    for name in ("team/app.tfstate", "other/app.tfstate", "env:/dev/team/app.tfstate"):
        services.states.write(StateName(name), _state(1, "shared-bucket"), OPERATOR)
    inventory = services.inventory()
    everything = _addresses(inventory, "shared-bucket")
    assert len(everything) == 3
    assert _addresses(inventory, "shared-bucket", ("team/*:read",)) == {
        "team/app.tfstate:aws_s3_bucket.logs"
    }
    assert _addresses(inventory, "shared-bucket", ("team/*:outputs",)) == set()
    assert _addresses(inventory, "shared-bucket state:env:/**") == {
        "env:/dev/team/app.tfstate:aws_s3_bucket.logs"
    }


def test_the_search_api_answers_with_the_callers_grants(services: Services) -> None:
    services.states.write(StateName("team/app.tfstate"), _state(1, "b1"), OPERATOR)
    services.states.write(StateName("other/app.tfstate"), _state(1, "b1"), OPERATOR)
    secret = services.tokens.create(OPERATOR, "reader", ["team/*:read"], None).secret
    services.tokens.create(OPERATOR, "viewer", ["team/*:outputs"], None)
    with TestClient(create_app(services), base_url="http://localhost") as client:
        auth = {"Authorization": f"Bearer {secret}"}
        r = client.get("/api/v1/search", params={"q": "b1"}, headers=auth)
        assert r.status_code == 200, r.text
        assert [h["state"] for h in r.json()["hits"]] == ["team/app.tfstate"]
        counts = client.get("/api/v1/inventory", headers=auth).json()
        assert counts["resource_types"] == {"aws_db_instance": 1, "aws_s3_bucket": 1}
        assert counts["terraform_versions"] == {"1.15.0": 1}
        assert client.get("/api/v1/search", params={"q": '"open'}, headers=auth).status_code == 400
        assert client.get("/api/v1/search", params={"q": "b1"}).status_code == 401


def test_the_cli_searches_its_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from statekeeper.cli import app

    monkeypatch.chdir(tmp_path)
    services = Services.build(load_settings({"data_dir": tmp_path / ".statekeeper"}, env={}))
    services.states.write(StateName("team/app.tfstate"), _state(1, "cli-bucket"), OPERATOR)
    services.close()  # written while no index was open: the CLI catches up
    found = CliRunner().invoke(app, ["search", "cli-bucket", "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["hits"][0]["address"] == "aws_s3_bucket.logs"
    missing = CliRunner().invoke(app, ["search", "nothing-like-it"])
    assert missing.exit_code == 1


@pytest.mark.aws
def test_s3_index_catches_up_with_writes_past_the_server_within_the_bound(
    moto: MotoServer, tmp_path: Path
) -> None:
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="inv")
    s3.put_bucket_versioning(Bucket="inv", VersioningConfiguration={"Status": "Enabled"})
    settings = load_settings(
        {"store": "s3://inv", "data_dir": tmp_path / "replica"},
        env={"STATEKEEPER_INVENTORY_REFRESH": "2"},
    )
    services = Services.build(settings)
    try:
        inventory = services.inventory()
        services.states.write(StateName("a.tfstate"), _state(1, "via-server"), OPERATOR)
        assert _addresses(inventory, "via-server") == {"a.tfstate:aws_s3_bucket.logs"}
        # Another writer (Terraform's backend "s3", another replica) puts straight into S3.
        s3.put_object(Bucket="inv", Key="b.tfstate", Body=_state(1, "direct-put"))
        s3.put_object(Bucket="inv", Key="a.tfstate", Body=_state(2, "overwritten"))
        time.sleep(2.1)  # past the refresh bound: the next search lists the bucket first
        assert _addresses(inventory, "direct-put") == {"b.tfstate:aws_s3_bucket.logs"}
        assert _addresses(inventory, "via-server") == set()
        assert _addresses(inventory, "overwritten") == {"a.tfstate:aws_s3_bucket.logs"}
        s3.delete_object(Bucket="inv", Key="b.tfstate")
        report = inventory.catch_up()
        assert (report.listed, report.updated, report.removed) == (1, 0, 1)
    finally:
        services.close()
    # Derived data: thrown away and rebuilt from the bucket alone.
    for path in (tmp_path / "replica").glob("inventory.db*"):
        path.unlink()
    rebuilt = Services.build(settings)
    try:
        assert _addresses(rebuilt.inventory(), "overwritten") == {"a.tfstate:aws_s3_bucket.logs"}
    finally:
        rebuilt.close()


@pytest.mark.aws
@pytest.mark.terraform
def test_a_state_terraform_writes_with_its_own_s3_backend_is_found(
    moto: MotoServer, tmp_path: Path
) -> None:
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="tfinv")
    tf = Terraform(tmp_path / "tf").write(
        moto.s3_backend_block("tfinv", "net/terraform.tfstate")
        + 'resource "terraform_data" "vpc" { input = "vpc-0abc123def" }\n'
    )
    tf.run("init").check()
    tf.run("apply").check()
    settings = load_settings({"store": "s3://tfinv", "data_dir": tmp_path / "replica"}, env={})
    services = Services.build(settings)
    try:
        assert _addresses(services.inventory(), "vpc-0abc123def") == {
            "net/terraform.tfstate:terraform_data.vpc"
        }
    finally:
        services.close()


def test_a_state_over_the_parse_limit_is_listed_without_its_resources(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsing a state for its resources holds several times its size: over the
    limit, the index keeps what the version's metadata says and nothing to search."""
    import statekeeper.inventory.index as index

    inventory = services.inventory()
    small, large = StateName("team/small.tfstate"), StateName("team/large.tfstate")
    services.states.write(small, _state(1, "logs-small"), OPERATOR)
    monkeypatch.setattr(index, "PARSE_LIMIT", len(_state(1, "logs-small")) + 10)
    services.states.write(large, _state(7, "logs-large-" + "x" * 400), OPERATOR)
    assert _addresses(inventory, "logs-small") == {"team/small.tfstate:aws_s3_bucket.logs"}
    assert _addresses(inventory, "type:aws_s3_bucket") == {"team/small.tfstate:aws_s3_bucket.logs"}
    listed = {s.name: s for s in inventory.summaries("team/")}
    assert listed["team/large.tfstate"].serial == 7


def test_a_large_index_write_gives_its_log_space_back(services: Services) -> None:
    """``inventory.db`` is opened like ``statekeeper.db`` (``wal_mode``): a catch-up's
    batch larger than the log's limit takes ``inventory.db-wal`` past it, and the next
    index writes cut it back to the limit once that batch is checkpointed (without the
    limit the file kept its peak, some 90 MB here)."""
    from statekeeper.storage.sqlite.database import WAL_SIZE_LIMIT

    # Written before the index opens: the catch-up then indexes them in one transaction.
    # 16 random values of 512 characters, the most text a resource keeps (MAX_TEXT).
    for k in range(5):
        resources = [
            instance("null_resource", f"r{i}", {f"v{j}": os.urandom(256).hex() for j in range(16)})
            for i in range(1000)
        ]
        services.states.write(
            StateName(f"big/{k}.tfstate"), state_bytes(1, resources=resources), OPERATOR
        )
    inventory = services.inventory()
    assert inventory.catch_up().updated == 5
    wal = services.inventory_path.with_name("inventory.db-wal")
    peak = wal.stat().st_size
    assert peak > WAL_SIZE_LIMIT, f"the catch-up left a log of {peak} bytes"
    # SQLite cuts the log at the first commit after a checkpoint that copied it whole
    # (a reader still in the log may delay that).
    sizes = []
    for serial in range(1, 21):
        services.states.write(StateName("team/app.tfstate"), _state(serial, "logs"), OPERATOR)
        assert inventory.queue.settle()
        sizes.append(wal.stat().st_size)
        if sizes[-1] <= WAL_SIZE_LIMIT:
            break
    assert sizes[-1] <= WAL_SIZE_LIMIT, f"the log stayed at {sizes} bytes (peak {peak})"
    assert "big/0.tfstate:null_resource.r0" in _addresses(inventory, "type:null_resource")

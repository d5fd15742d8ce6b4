"""States Terraform's own ``backend "s3"`` keeps under keys that are no statekeeper name
are named by every listing that leaves them out, and never copied silently (a moto
server; real Terraform writes the odd key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.cli.conftest import CliFn

from statekeeper.testing.processes import MotoServer, StatekeeperServer
from statekeeper.testing.statefiles import instance, state_bytes
from statekeeper.testing.terraform import Terraform

pytestmark = [pytest.mark.aws]

BUCKET = "odd-tfstate"
TABLE = "odd-locks"
#: Where Terraform's own backend puts the state: a key with a space.
SPACED = "team/my app.tfstate"
#: Other keys Terraform's backend accepts and statekeeper's name rules do not.
ODD = ["odd/a@b.tfstate", "odd//double.tfstate", "/lead.tfstate", "odd/ünï.tfstate"]
VALID = "team/ok.tfstate"
RESOURCES = 'resource "terraform_data" "a" { input = "x" }\n'


def _lock(lock_id: str) -> str:
    return json.dumps(
        {
            "ID": lock_id,
            "Operation": "OperationTypeApply",
            "Info": "",
            "Who": "tf@ci",
            "Version": "1.15.5",
            "Created": "2026-01-01T10:00:00Z",
            "Path": f"{BUCKET}/{SPACED}",
        }
    )


@pytest.fixture
def odd_bucket(moto: MotoServer, terraform: Callable[..., Terraform]) -> dict[str, Any]:
    """A bucket and table as Terraform's backend "s3" leaves them: a state under a key with
    a space (written by Terraform), more odd keys, one valid state, and a lock Terraform
    holds on the spaced key. Returns boto3 clients on them."""
    moto.versioned_bucket(BUCKET)
    moto.lock_table(TABLE)
    block = moto.s3_backend_block(BUCKET, SPACED, f'dynamodb_table = "{TABLE}"')
    tf = terraform().write(block + RESOURCES)
    tf.run("init").check()
    tf.run("apply").check()
    s3, ddb = moto.client("s3"), moto.client("dynamodb")
    body = state_bytes(1, resources=[instance("terraform_data", "a", {"id": "x"})])
    for key in [*ODD, VALID]:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        digest = hashlib.md5(body).hexdigest()
        ddb.put_item(
            TableName=TABLE,
            Item={"LockID": {"S": f"{BUCKET}/{key}-md5"}, "Digest": {"S": digest}},
        )
    ddb.put_item(
        TableName=TABLE,
        Item={"LockID": {"S": f"{BUCKET}/{SPACED}"}, "Info": {"S": _lock("tf-held")}},
    )
    return {"s3": s3, "ddb": ddb}


STORE = ["--store", f"s3://{BUCKET}", "--locks", f"dynamodb://{TABLE}"]


@pytest.mark.terraform
def test_every_listing_names_the_keys_it_leaves_out(
    odd_bucket: dict[str, Any], cli: CliFn, tmp_path: Path
) -> None:
    listed = cli(*STORE, "states", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert [r["name"] for r in json.loads(listed.stdout)] == [VALID]  # the JSON keeps its shape
    assert "5 key(s) left out" in listed.stderr
    assert repr(SPACED) in listed.stderr
    assert "docs/cli.md#state-names" in listed.stderr

    # Terraform holds a lock: never "no locks held"
    locks = cli(*STORE, "locks")
    assert locks.exit_code == 0
    assert "no locks held on a state statekeeper can address" in locks.stderr
    assert f"1 lock(s) left out: {SPACED!r}" in locks.stderr
    assert f"1 lock(s) left out: {SPACED!r}" in cli(*STORE, "locks", "--json").stderr

    reaped = cli(*STORE, "locks", "reap", "--older-than", "1h", "--dry-run")
    assert "no lock on a state statekeeper can address is old enough" in reaped.stderr
    assert f"1 lock(s) left out: {SPACED!r}" in reaped.stderr
    assert (
        odd_bucket["ddb"]
        .get_item(TableName=TABLE, Key={"LockID": {"S": f"{BUCKET}/{SPACED}"}})
        .get("Item")
    )

    found = cli(*STORE, "search", "terraform_data", "--json")
    assert found.exit_code == 0, found.stderr
    result = json.loads(found.stdout)
    assert sorted(result["unaddressable"]) == sorted([SPACED, *ODD])
    assert [h["state"] for h in result["hits"]] == [VALID]
    assert "5 key(s) left out" in found.stderr


@pytest.mark.terraform
def test_prune_keeps_going_past_them_and_names_them(
    odd_bucket: dict[str, Any], cli: CliFn, tmp_path: Path
) -> None:
    odd_bucket["s3"].put_object(Bucket=BUCKET, Key=VALID, Body=state_bytes(2))
    config = tmp_path / "statekeeper.toml"
    config.write_text('[history]\n[[history.retention]]\nstates = "**"\nkeep_last = 1\n')
    pruned = cli("--config", str(config), *STORE, "prune", "--dry-run")
    assert pruned.exit_code == 0, pruned.stderr
    assert f"{VALID}: would remove 1 version(s)" in pruned.stdout
    assert "5 state(s) left out" in pruned.stderr


@pytest.mark.terraform
def test_migrate_refuses_each_key_it_cannot_copy_and_fails(
    odd_bucket: dict[str, Any], cli: CliFn, tmp_path: Path
) -> None:
    dest = f"sqlite:///{tmp_path / 'backup.db'}"
    args = ("migrate", "--from", f"s3://{BUCKET}", "--to", dest, "--with-history")
    dry = cli(*args, "--dry-run")
    assert dry.exit_code == 1
    assert f"{SPACED!r}: would not be copied" in dry.stdout

    run = cli(*args)
    assert run.exit_code == 1  # never a success that left a state behind
    assert f"{VALID}: copied 1 version(s)" in run.stdout
    for key in [SPACED, *ODD]:
        assert f"{key!r}: not copied: not a state name statekeeper can address" in run.stdout
    assert "Error: 5 source state(s) left out" in run.stderr

    as_json = cli(*args, "--json")
    assert as_json.exit_code == 1
    assert sorted(json.loads(as_json.stdout)["unaddressable"]) == sorted([SPACED, *ODD])

    only_odd = cli("migrate", "--from", f"s3://{BUCKET}", "--to", dest, "--prefix", "odd/")
    assert only_odd.exit_code == 1
    assert "0 state(s)" in only_odd.stdout


@pytest.mark.terraform
def test_through_a_server_the_listing_names_them_too(
    odd_bucket: dict[str, Any],
    cli: CliFn,
    moto: MotoServer,
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve(*STORE, env=moto.env())
    remote = ["--server", server.url]
    locks = cli(*remote, "locks")
    assert f"1 lock(s) left out: {SPACED!r}" in locks.stderr
    states = cli(*remote, "states", "--json")
    assert [r["name"] for r in json.loads(states.stdout)] == [VALID]
    assert "5 key(s) left out" in states.stderr

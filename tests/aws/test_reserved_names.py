"""A state name never reaches another state's lock file or digest; damaged locks are listed.

Against a real ``statekeeper serve`` on moto's S3 and DynamoDB, the names
Terraform's layout derives (``KEY.tflock``, ``BUCKET/KEY-md5``) are looked at
with plain boto3 after each attempt: they must be exactly as the holder left
them. The suffixes are spelled out here (and in ``tests.aws.helpers``) on purpose:
this pins Terraform's layout independently of ``statekeeper.terraform.layout``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.aws.helpers import S3Backend

from statekeeper.errors import InvalidStateName
from statekeeper.terraform import layout
from statekeeper.terraform.names import StateName
from statekeeper.testing.contracts import STATE
from statekeeper.testing.processes import SRC, MotoServer, StatekeeperServer
from statekeeper.testing.terraform import Terraform

pytestmark = pytest.mark.aws

NAME = "team/app.tfstate"
HOLDER = (
    b'{"ID":"holder-1","Operation":"OperationTypeApply","Info":"","Who":"alice@ci",'
    b'"Version":"1.15.0","Created":"2026-11-23T11:13:27.558548621Z","Path":""}'
)
LOCKS = {
    "s3lock": ["s3lock://{bucket}"],
    "dynamodb": ["dynamodb://{table}"],
    "both": ["s3lock://{bucket}", "dynamodb://{table}"],
}


def _lock_urls(on: S3Backend, locks: str) -> list[str]:
    return [url.format(bucket=on.bucket, table=on.table) for url in LOCKS[locks]]


def _lock_args(on: S3Backend, locks: str) -> list[str]:
    """The CLI's options for the same store and lock tables as the server's."""
    return ["--store", f"s3://{on.bucket}"] + [
        arg for url in _lock_urls(on, locks) for arg in ("--locks", url)
    ]


def _held(on: S3Backend) -> tuple[bytes | None, dict[str, Any] | None, dict[str, Any] | None]:
    """``NAME``'s lock file, lock item and digest item, as they are now."""
    return (
        on.lock_file(NAME),
        on.item(f"{on.bucket}/{NAME}"),
        on.item(f"{on.bucket}/{NAME}-md5"),
    )


@pytest.mark.parametrize("locks", ["s3lock", "dynamodb", "both"])
def test_no_request_on_a_reserved_name_touches_the_lock_or_digest(
    locks: str,
    serve: Callable[..., StatekeeperServer],
    s3_backend: S3Backend,
) -> None:
    server = s3_backend.serve(serve, *_lock_urls(s3_backend, locks))
    with httpx.Client(timeout=60) as client:
        assert client.request("LOCK", server.state_url(NAME), content=HOLDER).status_code == 200
        wrote = client.post(server.state_url(NAME), params={"ID": "holder-1"}, content=STATE)
        assert wrote.status_code == 200, wrote.text
        lock_file, lock_item, digest = _held(s3_backend)
        if locks != "dynamodb":
            assert lock_file is not None
        if locks != "s3lock":
            assert lock_item is not None and digest is not None

        for target, rule in ((NAME + ".tflock", "'.tflock'"), (NAME + "-md5", "'-md5'")):
            attempts = [
                client.post(server.state_url(target), content=STATE),
                client.put(server.state_url(target), content=STATE),
                client.delete(server.state_url(target)),
                client.get(server.state_url(target)),
                client.request("LOCK", server.state_url(target), content=HOLDER),
                client.request("UNLOCK", server.state_url(target), content=b""),
                client.put(f"{server.url}/api/v1/content/{target}", content=STATE),
            ]
            for response in attempts:
                assert response.status_code == 400, (target, response.request.method, response.text)
                assert response.json()["error"] == "invalid_state_name"
                assert rule in response.json()["message"]
                assert "reserved" in response.json()["message"]

        # The holder's lock and the digest are exactly as they were.
        assert _held(s3_backend) == (lock_file, lock_item, digest)
        # And the lock still holds: a write without its ID is refused.
        assert client.post(server.state_url(NAME), content=STATE).status_code in (409, 423)
        assert client.request("UNLOCK", server.state_url(NAME), content=HOLDER).status_code == 200


def _cli(moto: MotoServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")},
        **moto.env(),
        "PYTHONPATH": str(SRC),
    }
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _damage(kind: str, on: S3Backend) -> None:
    """A lock for ``NAME`` that is not a LockInfo, as a hand edit or another tool leaves it."""
    s3, ddb, bucket, table = on.s3, on.ddb, on.bucket, on.table
    if kind == "s3lock":
        s3.put_object(Bucket=bucket, Key=NAME + ".tflock", Body=b"\x00 not a lock")
    elif kind == "dynamodb":
        ddb.put_item(
            TableName=table,
            Item={"LockID": {"S": f"{bucket}/{NAME}"}, "Info": {"S": '{"ID": 7'}},
        )
    else:  # an item with no Info at all, which is not a digest either
        ddb.put_item(TableName=table, Item={"LockID": {"S": f"{bucket}/{NAME}"}})


@pytest.mark.parametrize("kind", ["s3lock", "dynamodb", "dynamodb-no-info"])
def test_listings_report_a_damaged_lock_instead_of_failing(
    kind: str,
    serve: Callable[..., StatekeeperServer],
    s3_backend: S3Backend,
) -> None:
    locks = "s3lock" if kind == "s3lock" else "dynamodb"
    server = s3_backend.serve(serve, *_lock_urls(s3_backend, locks))
    with httpx.Client(timeout=60) as client:
        for name in (NAME, "team/other.tfstate"):
            assert client.post(server.state_url(name), content=STATE).status_code == 200
        _damage(kind, s3_backend)

        listed = client.get(f"{server.url}/api/v1/locks")
        assert listed.status_code == 200, listed.text
        [row] = listed.json()
        assert row["name"] == NAME
        assert "not a Terraform lock" in row["damaged"]
        assert "delete" in row["damaged"]

        states = client.get(f"{server.url}/api/v1/states")
        assert states.status_code == 200, states.text
        by_name = {s["name"]: s for s in states.json()}
        assert set(by_name) == {NAME, "team/other.tfstate"}
        assert by_name[NAME]["lock"]["damaged"] == row["damaged"]
        assert by_name["team/other.tfstate"]["lock"] is None

    for command in ("locks", "states"):
        run = _cli(s3_backend.moto, *_lock_args(s3_backend, locks), command, "--json")
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr
        rows = json.loads(run.stdout)
        damaged = [r.get("damaged") or (r.get("lock") or {}).get("damaged") for r in rows]
        assert any(d and "not a Terraform lock" in d for d in damaged), rows
    table_run = _cli(s3_backend.moto, *_lock_args(s3_backend, locks), "locks")
    assert table_run.returncode == 0, table_run.stderr
    assert "DAMAGED" in table_run.stdout


@pytest.mark.terraform
def test_terraform_writes_no_key_but_the_states_and_what_the_layout_reserves(
    moto: MotoServer,
    bucket: str,
    table: str,
    s3: Any,
    ddb: Any,
    terraform: Callable[..., Terraform],
) -> None:
    """Real Terraform with both lock kinds and two workspaces: every object and item it
    leaves is a state, or a lock file or digest of one, as ``layout`` derives them."""
    key = "team/app.tfstate"
    tf = terraform()
    tf.write(
        moto.s3_backend_block(bucket, key, f'dynamodb_table = "{table}"', "use_lockfile = true")
        + 'resource "terraform_data" "a" { input = terraform.workspace }\n'
    )
    tf.run("init").check()
    tf.run("apply").check()
    tf.run("workspace", "new", "dev").check()
    tf.run("apply").check()
    states = {key, "env:/dev/" + key}

    listed = s3.list_object_versions(Bucket=bucket)
    keys = {v["Key"] for v in listed.get("Versions", []) + listed.get("DeleteMarkers", [])}
    assert states <= keys
    for k in keys - states:
        assert layout.is_lock_file(k) and layout.state_of_lock_file(k) in states, k
        with pytest.raises(InvalidStateName):
            StateName(k)
    lock_ids = {i["LockID"]["S"] for i in ddb.scan(TableName=table)["Items"]}
    assert lock_ids == {layout.digest_id(bucket, s) for s in states}
    for lock_id in lock_ids:
        with pytest.raises(InvalidStateName):
            StateName(lock_id.removeprefix(bucket + "/"))


# Names made of a victim's name and the pieces of the layout's suffixes.
_PIECES = st.sampled_from(["team/app.tfstate", ".tflock", "-md5", "app", "/", ".", "x", "env:"])
_NAMES = st.lists(_PIECES, min_size=1, max_size=5).map("".join)


def test_no_name_reaches_a_held_lock_or_its_digest(
    serve: Callable[..., StatekeeperServer],
    s3_backend: S3Backend,
) -> None:
    """Property: whatever name a writer picks, the victim's lock file, lock item and
    digest are exactly as the victim left them, and the victim still holds its lock."""
    server = s3_backend.serve(serve, *_lock_urls(s3_backend, "both"))
    client = httpx.Client(timeout=60)
    assert client.request("LOCK", server.state_url(NAME), content=HOLDER).status_code == 200
    assert client.post(server.state_url(NAME), params={"ID": "holder-1"}, content=STATE).is_success
    before = _held(s3_backend)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(name=_NAMES, method=st.sampled_from(["POST", "DELETE", "LOCK", "UNLOCK"]))
    def attack(name: str, method: str) -> None:
        if name == NAME:
            return  # the victim's own name is guarded by its lock, not by the layout
        body = {"POST": STATE, "LOCK": HOLDER, "UNLOCK": b""}.get(method, b"")
        response = client.request(method, server.state_url(name), content=body)
        assert response.status_code < 500, (name, method, response.text)
        reserved = layout.reserved_reason(name.strip("/")) is not None
        if reserved and response.status_code != 404:
            assert response.json()["error"] == "invalid_state_name", (name, response.text)
        assert _held(s3_backend) == before, (name, method)

    try:
        attack()
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["s3lock", "dynamodb", "dynamodb-no-info"])
def test_a_damaged_lock_is_removed_by_a_forced_unlock_only(
    kind: str,
    serve: Callable[..., StatekeeperServer],
    s3_backend: S3Backend,
) -> None:
    locks = "s3lock" if kind == "s3lock" else "dynamodb"
    server = s3_backend.serve(serve, *_lock_urls(s3_backend, locks))
    with httpx.Client(timeout=60) as client:
        assert client.post(server.state_url(NAME), content=STATE).status_code == 200
        _damage(kind, s3_backend)
        # It still excludes: no write and no new lock gets past it.
        blocked = client.request("LOCK", server.state_url(NAME), content=HOLDER)
        assert blocked.status_code == 503 and "not a Terraform lock" in blocked.text
        reaped = client.post(f"{server.url}/api/v1/reap", json={"older_than": "0s"})
        assert reaped.status_code == 200 and reaped.json() == []

        run = _cli(s3_backend.moto, *_lock_args(s3_backend, locks), "unlock", NAME, "--force")
        assert run.returncode == 0, run.stderr
        assert client.get(f"{server.url}/api/v1/locks").json() == []
        assert client.request("LOCK", server.state_url(NAME), content=HOLDER).status_code == 200

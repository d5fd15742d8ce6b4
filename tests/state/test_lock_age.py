"""A lock's age is the server's clock, not the client's (#11.11).

A client whose clock says 2000 must not have its lock reaped at once, nor one
saying 9999 keep it forever. Locks written by Terraform's own backend "s3"
carry no server time: their age is the client's ``Created``, and listings say so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from statekeeper.app import Services
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings, load_settings
from statekeeper.state.listing import list_locks
from statekeeper.state.reap import reap
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import SRC, MotoServer, StatekeeperServer
from statekeeper.times import utcnow

OPERATOR = Caller(actor="operator")


def _lock_body(lock_id: str, created: str) -> bytes:
    return json.dumps(
        {
            "ID": lock_id,
            "Operation": "OperationTypeApply",
            "Info": "",
            "Who": "skewed@vm",
            "Version": "1.15.0",
            "Created": created,
            "Path": "",
        }
    ).encode()


def _cli(workdir: Path, *args: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "statekeeper", *args, "--json"],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_client_clock_neither_ages_nor_preserves_a_lock(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    workdir = tmp_path / "server"
    server = serve(workdir=workdir)
    for name, lock_id, created in (
        ("past.tfstate", "lock-2000", "2000-01-01T00:00:00Z"),
        ("future.tfstate", "lock-9999", "9999-12-31T23:59:59Z"),
    ):
        r = httpx.request("LOCK", server.state_url(name), content=_lock_body(lock_id, created))
        assert r.status_code == 200, r.text
    listed = {row["name"]: row for row in _cli(workdir, "locks")}
    for row in listed.values():
        assert row["age_source"] == "server"
        assert row["age_seconds"] < 120
    assert listed["past.tfstate"]["created"].startswith("2000-01-01")  # shown as sent
    assert _cli(workdir, "locks", "reap", "--older-than", "1h") == []

    server.stop()
    services = Services.build(Settings(data_dir=workdir / ".statekeeper"))
    try:
        later = utcnow() + timedelta(hours=2)
        reaped = reap(services.locks, OPERATOR, older_than=timedelta(hours=1), now=later)
        assert sorted(r.lock.id for r in reaped) == ["lock-2000", "lock-9999"]
    finally:
        services.close()


@pytest.mark.aws
def test_a_lock_terraform_wrote_itself_is_aged_by_its_created(moto: MotoServer) -> None:
    s3, ddb = moto.client("s3"), moto.client("dynamodb")
    s3.create_bucket(Bucket="ages")
    moto.lock_table("ages-locks")
    created = utcnow() - timedelta(hours=3)
    body = _lock_body("tf-own", created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")).decode()
    # What Terraform's backend "s3" writes: LockID and Info, nothing else.
    ddb.put_item(
        TableName="ages-locks",
        Item={"LockID": {"S": "ages/team/a.tfstate"}, "Info": {"S": body}},
    )
    settings = load_settings({"store": "s3://ages", "locks": "dynamodb://ages-locks"}, env={})
    services = Services.build(settings)
    try:
        services.locks.lock(
            StateName("team/b.tfstate"), _lock_body("ours", "2000-01-01T00:00:00Z"), OPERATOR
        )
        rows = {
            r.name: r.view().model_dump(mode="json")
            for r in list_locks(services.lock_table, services.policy, OPERATOR, "")
        }
        assert rows["team/a.tfstate"]["age_source"] == "client"
        assert rows["team/a.tfstate"]["acquired"] is None
        assert 3 * 3600 - 60 < rows["team/a.tfstate"]["age_seconds"] < 3 * 3600 + 60
        assert rows["team/b.tfstate"]["age_source"] == "server"
        assert rows["team/b.tfstate"]["age_seconds"] < 120
    finally:
        services.close()

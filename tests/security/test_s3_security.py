"""Stateless replicas on S3 (moto): tokens from a file, audit objects, encrypted states."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from tests.security.support import basic, state_json

from statekeeper.security.tokens import issue
from statekeeper.security.tokenstores import FileTokenStore
from statekeeper.testing.processes import MotoServer, StatekeeperServer

pytestmark = pytest.mark.aws

BUCKET = "secure-states"
SECRET = b"db-password-42"


@pytest.fixture
def s3(moto: MotoServer) -> Any:
    client = boto3.client(  # type: ignore[call-overload]
        "s3", endpoint_url=moto.url, region_name="us-east-1"
    )
    moto.versioned_bucket(BUCKET)
    return client


def _all_bytes(s3: Any) -> dict[str, bytes]:
    """Every version of every object in the bucket."""
    out = {}
    for v in s3.list_object_versions(Bucket=BUCKET).get("Versions", []):
        body = s3.get_object(Bucket=BUCKET, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
        out[f"{v['Key']}@{v['VersionId']}"] = body
    return out


def test_replicas_on_s3_encrypt_and_audit(
    tmp_path: Path, moto: MotoServer, s3: Any, serve: Callable[..., StatekeeperServer]
) -> None:
    tokens_file = tmp_path / "tokens.toml"
    issued = {n: issue(n, [f"team/*:{p}"]) for n, p in (("ci", "write"), ("viewer", "outputs"))}
    for token in issued.values():
        FileTokenStore(tokens_file).add(token.record)
    key = base64.b64encode(os.urandom(32)).decode()
    args = ("--store", f"s3://{BUCKET}/states", "--tokens-file", str(tokens_file))
    env = {**moto.env(), "STATEKEEPER_MASTER_KEY": key, "STATEKEEPER_RATE_LIMIT": "0"}
    a = serve(*args, env=env, workdir=tmp_path / "a")
    b = serve(*args, env=env, workdir=tmp_path / "b")
    ci = basic("ci", issued["ci"].secret)

    for serial in (1, 2):
        r = httpx.post(a.state_url("team/app.tfstate"), content=state_json(serial), headers=ci)
        assert r.status_code == 200, r.text
    assert httpx.get(b.state_url("team/app.tfstate"), headers=ci).content == state_json(2)
    viewer = httpx.get(
        b.state_url("team/app.tfstate"), headers=basic("viewer", issued["viewer"].secret)
    )
    assert viewer.json()["resources"] == [] and SECRET not in viewer.content
    assert httpx.get(a.state_url("team/app.tfstate")).status_code == 401

    # Audit events are written in batches; stopping the replicas writes what is pending.
    a.stop()
    b.stop()
    stored = _all_bytes(s3)
    states = {k: v for k, v in stored.items() if k.startswith("states/team/app.tfstate@")}
    assert len(states) == 2
    assert not any(SECRET in body for body in stored.values())
    assert all(body.startswith(b"SKE1") for body in states.values())
    assert any(k.startswith("states/statekeeper!/keys/") for k in stored)

    audit = [
        json.loads(line)
        for k, body in stored.items()
        if k.startswith("states/statekeeper!/audit/") and k.split("@")[0].endswith(".jsonl")
        for line in body.decode().splitlines()
    ]
    seen = {(e["actor"], e["action"], e["outcome"]) for e in audit}
    assert ("ci", "write", "ok") in seen
    assert ("viewer", "read", "ok") in seen
    assert ("anonymous", "authenticate", "unauthenticated") in seen
    assert not any(issued["ci"].secret in json.dumps(e) for e in audit)
    # Replicas keep nothing locally.
    for name in ("a", "b"):
        assert not (tmp_path / name / ".statekeeper").exists()

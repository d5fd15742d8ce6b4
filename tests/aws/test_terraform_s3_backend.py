"""Our server and Terraform's own ``backend "s3"`` on one bucket and table (moto over HTTP).

Each case runs in both of Terraform's locking modes: the DynamoDB table
(``dynamodb_table``) and the S3 lock file (``use_lockfile``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.aws.helpers import MODES, S3Backend

from statekeeper.storage.registry import open_store
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.workspaces import list_workspaces, workspace_state
from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.terraform import Terraform

pytestmark = [pytest.mark.terraform, pytest.mark.aws]

KEY = "proj/terraform.tfstate"
RESOURCES = """
resource "terraform_data" "a" { input = "x" }
output "o" { value = terraform_data.a.output }
"""
SLOW = """
resource "terraform_data" "slow" {
  input = "y"
  provisioner "local-exec" { command = "sleep 8" }
}
"""


@pytest.fixture
def server(
    request: pytest.FixtureRequest,
    serve: Callable[..., StatekeeperServer],
    s3_backend: S3Backend,
) -> StatekeeperServer:
    mode: str = request.param
    started = s3_backend.serve(serve, s3_backend.lock_url(mode))
    started.mode = mode  # type: ignore[attr-defined]
    return started


def _held_by_terraform(mode: str, on: S3Backend) -> bytes | None:
    """The lock bytes Terraform stored, or None while it holds none."""
    if mode == "dynamodb":
        item = on.item(f"{on.bucket}/{KEY}")
        return item["Info"]["S"].encode() if item else None
    return on.lock_file(KEY)


def _terraform_on_s3(
    terraform: Callable[..., Terraform], on: S3Backend, mode: str, config: str
) -> Terraform:
    """Terraform with its own ``backend "s3"`` locking by ``mode``, initialised."""
    tf = terraform().write(on.block(KEY, mode) + config)
    tf.run("init").check()
    return tf


def _lock_through(server: StatekeeperServer, name: str = KEY) -> LockInfo:
    """An apply's lock on ``name``, taken through the server."""
    ours = LockInfo.new("OperationTypeApply", "ci@statekeeper")
    taken = httpx.request("LOCK", server.state_url(name), content=ours.body, timeout=30)
    assert taken.status_code == 200, taken.text
    return ours


def _wait_for(check: Callable[[], bytes | None], proc: Any, what: str) -> bytes:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"terraform ended before {what}: {proc.communicate()}")
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_lock_through_server_meets_terraforms_lock(
    server: StatekeeperServer,
    terraform: Callable[..., Terraform],
    s3_backend: S3Backend,
) -> None:
    mode = server.mode  # type: ignore[attr-defined]
    tf = _terraform_on_s3(terraform, s3_backend, mode, SLOW)
    apply = tf.start("apply")
    stored = _wait_for(lambda: _held_by_terraform(mode, s3_backend), apply, "Terraform's lock")
    ours = LockInfo.new("OperationTypeApply", "ci@statekeeper")
    answer = httpx.request("LOCK", server.state_url(KEY), content=ours.body, timeout=30)
    assert answer.status_code == 423, answer.text
    holder = json.loads(answer.content)
    terraforms = json.loads(stored)
    assert {k: holder[k] for k in terraforms} == terraforms  # Terraform's own LockInfo
    assert holder["Operation"] == "OperationTypeApply"
    assert holder["Who"] and holder["Who"] != "ci@statekeeper"
    assert holder["Path"] == f"{s3_backend.bucket}/{KEY}"
    tf.wait(apply, ("apply",)).check()
    assert _held_by_terraform(mode, s3_backend) is None


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_terraform_meets_a_lock_held_through_server(
    server: StatekeeperServer,
    terraform: Callable[..., Terraform],
    s3_backend: S3Backend,
) -> None:
    tf = _terraform_on_s3(terraform, s3_backend, server.mode, RESOURCES)  # type: ignore[attr-defined]
    ours = _lock_through(server)
    plan = tf.run("plan")
    assert plan.returncode != 0
    assert "Error acquiring the state lock" in plan.output
    assert ours.id in plan.output and "ci@statekeeper" in plan.output
    freed = httpx.request("UNLOCK", server.state_url(KEY), content=ours.body, timeout=30)
    assert freed.status_code == 200, freed.text
    tf.run("plan").check()


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_state_written_through_server_is_read_by_terraform_s3(
    server: StatekeeperServer,
    terraform: Callable[..., Terraform],
    s3_backend: S3Backend,
    tmp_path: Path,
) -> None:
    mode = server.mode  # type: ignore[attr-defined]
    bucket, s3 = s3_backend.bucket, s3_backend.s3
    backend = s3_backend.block(KEY, mode)
    via_s3 = terraform("s3").write(backend + RESOURCES)
    via_s3.run("init").check()
    via_s3.run("apply").check()  # Terraform writes the state (and its digest)
    changed = RESOURCES.replace('input = "x"', 'input = "changed"')
    via_http = terraform("http").write(server.backend_block(KEY) + changed)
    via_http.run("init").check()
    via_http.run("apply").check()  # we replace it: the digest must follow
    stored = s3.get_object(Bucket=bucket, Key=KEY)["Body"].read()
    assert b'"changed"' in stored
    if mode == "dynamodb":
        digest = s3_backend.item(f"{bucket}/{KEY}-md5")
        assert digest is not None
        assert digest["Digest"]["S"] == hashlib.md5(stored).hexdigest()
    via_s3.write(backend + changed)
    plan = via_s3.run("plan", "-detailed-exitcode")
    assert plan.returncode == 0, plan.output
    assert "No changes" in plan.stdout
    assert "checksum" not in plan.output.lower()
    # Nothing of ours on local disk: the server keeps everything in S3 and DynamoDB.
    assert not (tmp_path / "server" / ".statekeeper").exists()


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_state_written_by_terraform_s3_is_served_verbatim(
    server: StatekeeperServer,
    terraform: Callable[..., Terraform],
    s3_backend: S3Backend,
) -> None:
    tf = _terraform_on_s3(terraform, s3_backend, server.mode, RESOURCES)  # type: ignore[attr-defined]
    tf.run("apply").check()
    stored = s3_backend.s3.get_object(Bucket=s3_backend.bucket, Key=KEY)["Body"].read()
    served = httpx.get(server.state_url(KEY), timeout=30)
    assert served.status_code == 200
    assert served.content == stored
    # And the http backend sees the same infrastructure.
    via_http = Terraform(tf.workdir.parent / "http").write(server.backend_block(KEY) + RESOURCES)
    via_http.run("init").check()
    plan = via_http.run("plan", "-detailed-exitcode")
    assert plan.returncode == 0, plan.output


def test_terraform_workspaces_are_states_of_ours(
    serve: Callable[..., StatekeeperServer],
    terraform: Callable[..., Terraform],
    s3_backend: S3Backend,
) -> None:
    bucket, s3 = s3_backend.bucket, s3_backend.s3
    tf = _terraform_on_s3(terraform, s3_backend, "lockfile", RESOURCES)
    tf.run("apply").check()
    tf.run("workspace", "new", "dev").check()
    tf.run("apply").check()
    dev = workspace_state(KEY, "dev")
    assert str(dev) == f"env:/dev/{KEY}"
    server = s3_backend.serve(serve)  # lock files by default
    served = httpx.get(server.state_url(str(dev)), timeout=30)
    assert served.status_code == 200
    assert served.content == s3.get_object(Bucket=bucket, Key=str(dev))["Body"].read()
    assert list_workspaces((i.key for i in open_store(f"s3://{bucket}").scan()), KEY) == [
        "default",
        "dev",
    ]
    # A lock taken through the server on the workspace state stops Terraform in that workspace.
    _lock_through(server, str(dev))
    plan = tf.run("plan")
    assert plan.returncode != 0 and "Error acquiring the state lock" in plan.output
    tf.run("workspace", "select", "default").check()
    tf.run("plan").check()


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_terraform_force_unlocks_a_lock_taken_through_server(
    server: StatekeeperServer,
    terraform: Callable[..., Terraform],
    s3_backend: S3Backend,
) -> None:
    # Upstream TestForceUnlock: another client removes the lock by its ID.
    mode = server.mode  # type: ignore[attr-defined]
    tf = _terraform_on_s3(terraform, s3_backend, mode, RESOURCES)
    ours = _lock_through(server)
    tf.run("force-unlock", "-force", ours.id).check()
    assert _held_by_terraform(mode, s3_backend) is None
    tf.run("apply").check()

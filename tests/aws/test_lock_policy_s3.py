"""Shared plans on a bucket Terraform's own ``backend "s3"`` uses too (moto over HTTP).

Whatever holders share a state through the server, a Terraform client reading
the DynamoDB item or the ``.tflock`` file directly must find the state locked,
by a holder it can name, until the last of them leaves.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from tests.aws.helpers import MODES, S3Backend
from tests.aws.test_terraform_s3_backend import KEY, RESOURCES

from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.terraform import Terraform

pytestmark = [pytest.mark.terraform, pytest.mark.aws]


def _send(server: StatekeeperServer, method: str, lock: LockInfo) -> httpx.Response:
    return httpx.request(method, server.state_url(KEY), content=lock.body, timeout=30)


def _terraform_is_refused_by(tf: Terraform, lock: LockInfo) -> None:
    plan = tf.run("plan")
    assert plan.returncode != 0, plan.output
    assert "Error acquiring the state lock" in plan.output
    assert lock.id in plan.output  # the holder Terraform sees, by its ID


@pytest.mark.parametrize("mode", MODES)
def test_terraform_s3_sees_the_state_locked_while_any_holder_shares_it(
    mode: str,
    serve: Callable[..., StatekeeperServer],
    terraform: Callable[..., Terraform],
    s3_backend: S3Backend,
) -> None:
    server = s3_backend.serve(serve, s3_backend.lock_url(mode))
    tf = terraform().write(s3_backend.block(KEY, mode) + RESOURCES)
    tf.run("init").check()
    first, second = (LockInfo.new("OperationTypePlan", w) for w in ("alice@ci", "bob@ci"))
    apply = LockInfo.new("OperationTypeApply", "carol@ci")
    for lock in (first, second):
        assert _send(server, "LOCK", lock).status_code == 200

    _terraform_is_refused_by(tf, first)
    assert _send(server, "UNLOCK", first).status_code == 200
    _terraform_is_refused_by(tf, second)  # the lock Terraform sees passed to the second
    assert _send(server, "LOCK", apply).status_code == 200  # takes it from the plan
    _terraform_is_refused_by(tf, apply)
    listed = httpx.get(f"{server.url}/api/v1/locks", timeout=30).json()
    assert [(r["id"], r["mode"], r["primary"]) for r in listed] == [
        (apply.id, "exclusive", True),
        (second.id, "shared", False),
    ]
    assert _send(server, "UNLOCK", apply).status_code == 200
    _terraform_is_refused_by(tf, second)  # the plan still running keeps it locked
    assert _send(server, "UNLOCK", second).status_code == 200

    tf.run("apply").check()  # free: Terraform's own backend takes and releases it
    if mode == "lockfile":
        listed = s3_backend.s3.list_objects_v2(Bucket=s3_backend.bucket)
        keys = [o["Key"] for o in listed.get("Contents", [])]
        left = [k for k in keys if k.endswith(".tflock")]
    else:
        items = s3_backend.ddb.scan(TableName=s3_backend.table, ConsistentRead=True)["Items"]
        left = [i["LockID"]["S"] for i in items if not i["LockID"]["S"].endswith("-md5")]
    assert left == []  # no lock, no shared hold, no marker left behind

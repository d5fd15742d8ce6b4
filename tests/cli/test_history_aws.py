"""History hygiene on S3 (a moto server): the trash is the delete marker, versions go one
by one, and Terraform's own ``backend "s3"`` sees a restored workspace as it was."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from statekeeper.testing.processes import MotoServer
from statekeeper.testing.terraform import Terraform

pytestmark = [pytest.mark.terraform, pytest.mark.aws]

CliFn = Callable[..., Any]
BUCKET = "hygiene-tfstate"
KEY = "team/app.tfstate"
CONFIG = """
variable "v" {
  type = string
}
resource "terraform_data" "a" { input = var.v }
output "o" { value = terraform_data.a.output }
"""


@pytest.fixture
def bucket(moto: MotoServer) -> Any:
    moto.versioned_bucket(BUCKET)
    return moto.client("s3")


def ok(run: Any) -> Any:
    assert run.exit_code == 0, run.stdout + run.stderr
    return run


def test_workspace_delete_then_trash_restore(
    bucket: Any, moto: MotoServer, terraform: Callable[..., Terraform], cli_process: CliFn
) -> None:
    tf = terraform().write(moto.s3_backend_block(BUCKET, KEY, "use_lockfile = true") + CONFIG)
    tf.run("init").check()
    tf.run("workspace", "new", "dev").check()
    tf.run("apply", "-var", "v=one").check()
    tf.run("apply", "-var", "v=two").check()
    name = f"env:/dev/{KEY}"
    before = bucket.get_object(Bucket=BUCKET, Key=name)["Body"].read()
    tf.run("workspace", "select", "default").check()
    tf.run("workspace", "delete", "-force", "dev").check()
    assert "dev" not in tf.run("workspace", "list").check().stdout

    store = ["--store", f"s3://{BUCKET}", "--locks", f"s3lock://{BUCKET}"]
    env = moto.env()
    listed = json.loads(ok(cli_process(*store, "trash", "list", "--json", env=env)).stdout)
    assert [t["name"] for t in listed] == [name]
    ok(cli_process(*store, "trash", "restore", name, env=env))
    assert bucket.get_object(Bucket=BUCKET, Key=name)["Body"].read() == before
    assert "dev" in tf.run("workspace", "list").check().stdout
    tf.run("workspace", "select", "dev").check()
    assert tf.run("plan", "-var", "v=two", "-detailed-exitcode").returncode == 0

    # Versions go one at a time (prune), never the current one; purge empties the key.
    config = tf.workdir / "statekeeper.toml"
    config.write_text('[history]\n[[history.retention]]\nstates = "**"\nkeep_last = 1\n')
    listed_before = [
        v
        for v in bucket.list_object_versions(Bucket=BUCKET, Prefix=name)["Versions"]
        if v["Key"] == name
    ]
    # workspace new wrote an empty state, then the two applies: all but the current go.
    assert len(listed_before) == 3
    pruned = ok(cli_process(*store, "--config", str(config), "prune", "--json", env=env))
    assert [(p["name"], len(p["removed"])) for p in json.loads(pruned.stdout)] == [(name, 2)]
    versions = bucket.list_object_versions(Bucket=BUCKET, Prefix=name)
    assert [v["IsLatest"] for v in versions["Versions"] if v["Key"] == name] == [True]
    assert bucket.get_object(Bucket=BUCKET, Key=name)["Body"].read() == before
    tf.run("workspace", "select", "default").check()
    tf.run("workspace", "delete", "-force", "dev").check()
    ok(cli_process(*store, "trash", "purge", name, env=env))
    after = bucket.list_object_versions(Bucket=BUCKET, Prefix=name)
    left = after.get("Versions", []) + after.get("DeleteMarkers", [])
    assert [e for e in left if e["Key"] == name] == []
    assert json.loads(ok(cli_process(*store, "trash", "list", "--json", env=env)).stdout) == []

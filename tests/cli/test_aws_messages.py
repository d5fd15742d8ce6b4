"""What the operator commands say on S3 + DynamoDB (a moto server), as real processes:
bad regions and endpoints, read-only credentials and the audit trail, migrate's dry
run, and the small messages of unlock, show, states, push and doctor."""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from statekeeper.testing.processes import MotoServer, free_port
from statekeeper.testing.statefiles import state_bytes

pytestmark = [pytest.mark.aws]

CliFn = Callable[..., Any]
BUCKET = "msgs-tfstate"
TABLE = "msgs-locks"
NAME = "team/app.tfstate"
STORE = ["--store", f"s3://{BUCKET}", "--locks", f"dynamodb://{TABLE}"]


@pytest.fixture
def aws(moto: MotoServer) -> tuple[Any, Any]:
    moto.versioned_bucket(BUCKET)
    moto.lock_table(TABLE)
    return moto.client("s3"), moto.client("dynamodb")


def _terraform_lock(ddb: Any, bucket: str, table: str, key: str) -> None:
    """A lock as Terraform's backend "s3" takes it (dynamodb_table)."""
    info = {
        "ID": "tf-lock-1",
        "Operation": "OperationTypeApply",
        "Info": "",
        "Who": "tf@ci",
        "Version": "1.15.5",
        "Created": "2026-01-02T10:00:00Z",
        "Path": f"{bucket}/{key}",
    }
    ddb.put_item(
        TableName=table,
        Item={"LockID": {"S": f"{bucket}/{key}"}, "Info": {"S": json.dumps(info)}},
    )


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    assert stderr.startswith("Error: ") and stderr.count("\n") == 1, stderr
    return stderr.removeprefix("Error: ").rstrip("\n")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--store", f"s3://{BUCKET}?region=eu_west_1", "states"],
            {},
            "'eu_west_1' (from the URL's ?region=) is not an AWS region name "
            "(e.g. us-east-1, eu-west-2)",
        ),
        (
            ["--store", f"s3://{BUCKET}", "--locks", f"dynamodb://{TABLE}?region=a%20b", "locks"],
            {},
            "'a b' (from the URL's ?region=) is not an AWS region name (e.g. us-east-1, eu-west-2)",
        ),
        (
            ["--store", f"s3://{BUCKET}", "states"],
            {"AWS_REGION": "eu_west_1"},
            "'eu_west_1' (from AWS_REGION) is not an AWS region name (e.g. us-east-1, eu-west-2)",
        ),
        (
            ["doctor", "--bucket", BUCKET, "--table", TABLE],
            {"AWS_REGION": "eu_west_1"},
            "'eu_west_1' (from AWS_REGION) is not an AWS region name (e.g. us-east-1, eu-west-2)",
        ),
        (
            ["doctor", "--bucket", BUCKET, "--table", TABLE],
            {"AWS_REGION": "", "AWS_DEFAULT_REGION": "eu_west_1"},
            "'eu_west_1' (from AWS_DEFAULT_REGION) is not an AWS region name "
            "(e.g. us-east-1, eu-west-2)",
        ),
        (
            # A port of its own: serve binds before it opens the store, and 8080 may be
            # anyone's.
            ["serve", "--port", str(free_port()), "--store", f"s3://{BUCKET}?region=eu_west_1"],
            {},
            "'eu_west_1' (from the URL's ?region=) is not an AWS region name "
            "(e.g. us-east-1, eu-west-2)",
        ),
        (
            ["migrate", "--from", f"s3://{BUCKET}?region=eu_west_1", "--to", "sqlite:///x.db"],
            {},
            "'eu_west_1' (from the URL's ?region=) is not an AWS region name "
            "(e.g. us-east-1, eu-west-2)",
        ),
        (
            ["--store", f"s3://{BUCKET}", "states"],
            {"AWS_ENDPOINT_URL": "127.0.0.1:4566"},
            "AWS_ENDPOINT_URL '127.0.0.1:4566' is not a URL; write http(s)://HOST:PORT",
        ),
        (
            ["--store", f"s3://{BUCKET}", "states"],
            {"AWS_ENDPOINT_URL": "admin:hunter2@127.0.0.1:4566"},
            "AWS_ENDPOINT_URL 'admin:***@127.0.0.1:4566' is not a URL; write http(s)://HOST:PORT",
        ),
        (
            ["--store", "s3://tf_b!!", "states"],
            {},
            "'tf_b!!' is not a valid bucket name: use 3-63 lowercase letters, digits, "
            "hyphens and dots, starting and ending with a letter or digit",
        ),
    ],
    ids=[
        "store-url",
        "lock-url",
        "AWS_REGION",
        "doctor-AWS_REGION",
        "doctor-AWS_DEFAULT_REGION",
        "serve",
        "migrate",
        "endpoint",
        "endpoint-password",
        "bucket-name",
    ],
)
def test_a_bad_region_endpoint_or_bucket_is_one_line_and_exit_2(
    aws: tuple[Any, Any], cli_process: CliFn, args: list[str], env: dict[str, str], message: str
) -> None:
    done = cli_process(*args, env=env)
    assert done.exit_code == 2, done.stderr
    assert _one_error_line(done.stderr) == message


def test_a_password_in_the_endpoint_is_masked_when_it_cannot_be_reached(
    aws: tuple[Any, Any], cli_process: CliFn
) -> None:
    # Port 9 (discard) on loopback: nothing listens, so botocore quotes the URL it called.
    done = cli_process(
        "--store",
        f"s3://{BUCKET}",
        "states",
        env={"AWS_ENDPOINT_URL": "http://u:hunter2@127.0.0.1:9"},
    )
    assert done.exit_code == 1
    assert "hunter2" not in done.stderr
    assert (
        'could not reach AWS: Could not connect to the endpoint URL: "http://u:***@127.0.0.1:9/'
        in (_one_error_line(done.stderr))
    )


def test_read_only_credentials_are_told_in_one_line_what_the_audit_trail_needs(
    aws: tuple[Any, Any], cli_process: CliFn, tmp_path: Path
) -> None:
    s3, _ = aws
    s3.put_object(Bucket=BUCKET, Key=f"ro/{NAME}", Body=state_bytes(1))
    # The read-only policy's one write is where the audit trail writes what a read did.
    policy = cli_process("iam-policy", "--bucket", BUCKET, "--prefix", "ro/", "--read-only")
    (granted,) = [
        s["Resource"]
        for s in json.loads(policy.stdout)["Statement"]
        if s["Action"] == "s3:PutObject"
    ]
    read = cli_process("--store", f"s3://{BUCKET}/ro", "show", NAME)
    assert read.exit_code == 0, read.stderr
    written = [
        o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="ro/statekeeper!/")["Contents"]
    ]
    assert written and all(
        fnmatch.fnmatchcase(f"arn:aws:s3:::{BUCKET}/{k}", granted) for k in written
    )

    # Credentials without that permission: each read answers, and says so in one line.
    s3.put_bucket_policy(
        Bucket=BUCKET,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:PutObject",
                        "Resource": f"arn:aws:s3:::{BUCKET}/*",
                    }
                ],
            }
        ),
    )
    for command in (["show", NAME], ["pull", NAME], ["history", NAME]):
        read = cli_process("--store", f"s3://{BUCKET}/ro", *command)
        assert read.exit_code == 0, read.stderr
        assert read.stderr == (
            "the audit trail could not be written: reads are audited too, by writing under "
            "ro/statekeeper!/audit/ in the store, and AWS denied these credentials "
            "s3:PutObject there; grant it on that prefix (`statekeeper iam-policy "
            "--read-only` includes it); 1 event(s) not recorded\n"
        )


def test_the_dry_run_refuses_what_the_real_run_refuses_and_goes_on(
    aws: tuple[Any, Any], cli_process: CliFn, tmp_path: Path
) -> None:
    s3, ddb = aws
    good, bad = "a/app.tfstate", "b/app.tfstate"
    s3.put_object(Bucket=BUCKET, Key=good, Body=state_bytes(1))
    version = s3.put_object(Bucket=BUCKET, Key=bad, Body=b"written by hand")["VersionId"]
    to = ["--to", f"sqlite:///{tmp_path / 'copy.db'}"]

    dry = cli_process("migrate", "--from", f"s3://{BUCKET}", *to, "--with-history", "--dry-run")
    assert dry.exit_code == 1, dry.stderr
    assert dry.stdout.splitlines() == [
        f"{good}: would copy 1 version(s), 0 present",
        f"{bad}: would be refused: not a state ({version}: the state could not be parsed as "
        "JSON: Expecting value: line 1 column 1 (char 0))",
        "2 state(s): would copy 1 version(s), 0 already present",
    ]
    real = cli_process("migrate", "--from", f"s3://{BUCKET}", *to, "--with-history")
    assert real.exit_code == 1, "the source's data is at fault, not the command"
    assert real.stderr.startswith(f"Error: {bad} (from {version}): the state could not be parsed")

    # A destination state locked by a Terraform run.
    source = tmp_path / "imported.tfstate"
    source.write_bytes(state_bytes(1))
    _terraform_lock(ddb, BUCKET, TABLE, "imp.tfstate")
    into = ["--from", str(source), "--name", "imp.tfstate", "--to", f"s3://{BUCKET}"]
    into += ["--to-locks", f"dynamodb://{TABLE}"]
    dry = cli_process("migrate", *into, "--dry-run")
    assert dry.exit_code == 1, dry.stderr
    assert dry.stdout.splitlines()[0] == (
        "imp.tfstate: would be refused: locked by ID tf-lock-1 held by tf@ci for "
        "OperationTypeApply since 2026-01-02T10:00:00Z"
    )
    real = cli_process("migrate", *into)
    assert real.exit_code == 3
    assert real.stderr.startswith("Error: imp.tfstate is locked by ID tf-lock-1 held by tf@ci")


def test_lock_conflicts_of_push_and_rollback_name_the_state(
    aws: tuple[Any, Any], cli_process: CliFn, tmp_path: Path
) -> None:
    _, ddb = aws
    for serial in (1, 2):
        path = tmp_path / f"s{serial}.tfstate"
        path.write_bytes(state_bytes(serial))
        assert cli_process(*STORE, "push", NAME, str(path)).exit_code == 0
    _terraform_lock(ddb, BUCKET, TABLE, NAME)
    for command in (
        ["push", NAME, str(tmp_path / "s2.tfstate")],
        ["rollback", NAME, "--to", "serial:1", "--yes"],
    ):
        done = cli_process(*STORE, *command)
        assert done.exit_code == 3
        assert done.stderr.startswith(f"Error: {NAME} is locked by ID tf-lock-1"), done.stderr


def test_states_keeps_a_migrated_versions_own_time(
    aws: tuple[Any, Any], cli_process: CliFn, tmp_path: Path
) -> None:
    source = tmp_path / "old.tfstate"
    source.write_bytes(state_bytes(1))
    written = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    os.utime(source, (written.timestamp(), written.timestamp()))
    assert cli_process(*STORE, "migrate", "--from", str(source), "--name", NAME).exit_code == 0
    copy = ["--store", f"sqlite:///{tmp_path / 'copy.db'}"]
    migrated = cli_process("migrate", "--from", f"s3://{BUCKET}", "--to", copy[1], "--with-history")
    assert migrated.exit_code == 0, migrated.stderr

    for store, details in ((STORE, ["--details"]), (copy, []), (copy, ["--details"])):
        (row,) = json.loads(cli_process(*store, "states", *details, "--json").stdout)
        (current,) = json.loads(cli_process(*store, "history", NAME, "--json").stdout)
        assert row["last_modified"] == current["created"] == "2024-03-01T12:00:00Z", store


def test_small_messages(
    aws: tuple[Any, Any], cli_process: CliFn, moto: MotoServer, tmp_path: Path
) -> None:
    s3, ddb = aws
    # A lock item that is not a Terraform lock: removed by --force, and said so plainly.
    ddb.put_item(
        TableName=TABLE, Item={"LockID": {"S": f"{BUCKET}/{NAME}"}, "Info": {"S": "garbage"}}
    )
    done = cli_process(*STORE, "unlock", NAME, "--force")
    assert done.exit_code == 0, done.stderr
    assert (
        done.stdout == f"removed the damaged lock on {NAME} (it named no ID, operation or holder)\n"
    )

    # A state that is not one: show names the state and version, exit 1.
    version = s3.put_object(Bucket=BUCKET, Key=NAME, Body=b"not json")["VersionId"]
    done = cli_process(*STORE, "show", NAME)
    assert done.exit_code == 1
    assert _one_error_line(done.stderr) == (
        f"version {version} of {NAME} is not a state: the state could not be parsed as JSON: "
        "Expecting value: line 1 column 1 (char 0)"
    )
    # --details read it: the footnote no longer sends the operator to --details.
    done = cli_process(*STORE, "states", "--details")
    assert done.stderr == (
        "? 1 serial(s) unknown: the current version records none and its bytes show none "
        "(encrypted by OpenTofu, or not a state)\n"
    )
    assert "--details" in cli_process(*STORE, "states").stderr

    # A push to a bucket without versioning names no "null" version, and warns.
    s3.create_bucket(Bucket="msgs-plain")
    path = tmp_path / "s1.tfstate"
    path.write_bytes(state_bytes(1))
    done = cli_process("--store", "s3://msgs-plain", "push", NAME, str(path))
    assert done.exit_code == 0, done.stderr
    assert done.stdout.startswith(f"pushed {NAME}: serial 1, ") and "null" not in done.stdout
    assert (
        "warning: the bucket 'msgs-plain' keeps no state history (bucket versioning is "
        "Disabled): every write replaces the previous state for good."
    ) in done.stderr
    pushed = json.loads(
        cli_process("--store", "s3://msgs-plain", "push", NAME, str(path), "--json").stdout
    )
    assert pushed["created"] is False and pushed["history_warning"] is None

    # Doctor skips an empty object, saying so, and writes it no digest.
    s3.put_object(Bucket=BUCKET, Key="empty/app.tfstate", Body=b"")
    doctor = ["doctor", "--bucket", BUCKET, "--table", TABLE, "--skip", "bucket.policy-*"]
    done = cli_process(*doctor, "--fix")
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    assert (
        "SKIP states.digest [empty/app.tfstate] an empty object, which is no state: "
        "no digest checked or written"
    ) in lines, done.stdout
    digest = {"LockID": {"S": f"{BUCKET}/empty/app.tfstate-md5"}}
    assert "Item" not in ddb.get_item(TableName=TABLE, Key=digest)

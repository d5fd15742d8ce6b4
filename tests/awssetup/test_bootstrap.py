"""bootstrap against the moto server: creates everything, is idempotent, dry-runs."""

from __future__ import annotations

import json

import pytest
from tests.awssetup.helpers import Aws, cli, cli_process, statuses

pytestmark = pytest.mark.aws


def test_bootstrap_on_an_empty_account_creates_everything(aws: Aws) -> None:
    first = cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks", "--json")
    assert first.exit_code == 0, first.output
    report = first.json()
    assert report["changed"] is True
    assert report["region"] == "us-east-1"

    s3, ddb = aws.s3, aws.ddb
    # us-east-1: created without a LocationConstraint
    assert s3.get_bucket_location(Bucket="tf-state")["LocationConstraint"] is None
    ownership = s3.get_bucket_ownership_controls(Bucket="tf-state")["OwnershipControls"]
    assert ownership["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert s3.get_bucket_versioning(Bucket="tf-state")["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket="tf-state")["ServerSideEncryptionConfiguration"]
    assert rules["Rules"][0]["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    block = s3.get_public_access_block(Bucket="tf-state")["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    statements = {s["Sid"]: s for s in aws.policy("tf-state")["Statement"]}
    tls = statements["StatekeeperDenyInsecureTransport"]
    assert tls["Effect"] == "Deny" and tls["Action"] == "s3:*"
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert set(tls["Resource"]) == {"arn:aws:s3:::tf-state", "arn:aws:s3:::tf-state/*"}
    uploads = statements["StatekeeperDenyUnencryptedUploads"]
    assert uploads["Action"] == "s3:PutObject"
    assert uploads["Condition"] == {"Null": {"s3:x-amz-server-side-encryption": "true"}}
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket="tf-state")["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == 90
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}

    table = ddb.describe_table(TableName="tf-locks")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "LockID", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "LockID", "AttributeType": "S"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSEDescription"]["Status"] == "ENABLED"
    assert table["DeletionProtectionEnabled"] is True
    backups = ddb.describe_continuous_backups(TableName="tf-locks")["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"

    # The block for the current Terraform: lock files only, the table named in its comment.
    settings = {
        name: value
        for name, _, value in (
            line.strip().partition(" = ")
            for line in report["backend_block"].splitlines()
            if " = " in line and not line.strip().startswith("#")
        )
    }
    assert {k.strip(): v for k, v in settings.items()} == {
        "bucket": '"tf-state"',
        "key": '"project/terraform.tfstate"',
        "region": '"us-east-1"',
        "encrypt": "true",
        "use_lockfile": "true",
    }
    comment = " ".join(
        line.strip().removeprefix("# ")
        for line in report["backend_block"].splitlines()
        if "#" in line
    )
    assert 'dynamodb_table = "tf-locks"' in comment
    assert report["serve_command"].startswith("statekeeper serve --store 's3://tf-state?")
    assert "--locks 'dynamodb://tf-locks?region=us-east-1'" in report["serve_command"]

    policy_before = aws.policy("tf-state")
    second = cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks")
    assert second.exit_code == 0, second.output
    assert "Nothing to change." in second.output
    assert "SET" not in second.output.split()
    assert aws.policy("tf-state") == policy_before
    again = cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks", "--json").json()
    assert again["changed"] is False
    assert all(c["changed"] == "" for c in again["checks"])


def test_dry_run_changes_nothing(aws: Aws) -> None:
    plan = cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks", "--dry-run")
    assert plan.exit_code == 0, plan.output
    assert "would: create bucket tf-state in us-east-1" in plan.output
    assert "would: enable versioning" in plan.output
    assert "would: create table tf-locks" in plan.output
    assert "nothing was changed" in plan.output
    assert aws.s3.list_buckets()["Buckets"] == []
    assert aws.ddb.list_tables()["TableNames"] == []

    # On a half-configured bucket the plan names only the differences.
    aws.s3.create_bucket(Bucket="tf-state")
    aws.s3.put_bucket_versioning(Bucket="tf-state", VersioningConfiguration={"Status": "Enabled"})
    plan = cli("bootstrap", "--bucket", "tf-state", "--lockfile", "--dry-run", "--json").json()
    changes = {c["check"]: c["changed"] for c in plan["checks"] if c["changed"]}
    assert "bucket.versioning" not in changes
    assert changes["bucket.encryption"] == "set default encryption to AES256 (SSE-S3)"
    assert not any(check.startswith("table.") for check in statuses(plan))
    with pytest.raises(aws.s3.exceptions.ClientError):
        aws.s3.get_bucket_encryption(Bucket="tf-state")
    assert aws.ddb.list_tables()["TableNames"] == []


def test_lockfile_mode_prints_lockfile_block_and_s3lock_command(aws: Aws) -> None:
    result = cli("bootstrap", "--bucket", "tf-state", "--lockfile", "--json")
    assert result.exit_code == 0, result.output
    report = result.json()
    assert report["table"] is None
    assert "use_lockfile = true" in report["backend_block"]
    assert "dynamodb_table" not in report["backend_block"]
    assert "--locks 's3lock://tf-state?region=us-east-1&sse=AES256'" in report["serve_command"]
    assert "dynamodb://" not in report["serve_command"]
    assert aws.ddb.list_tables()["TableNames"] == []


def test_default_table_name_and_region_outside_us_east_1(aws: Aws) -> None:
    result = cli("bootstrap", "--bucket", "tf-state-eu", "--region", "eu-west-1", "--json")
    assert result.exit_code == 0, result.output
    assert result.json()["table"] == "tf-state-eu-locks"
    eu = Aws("eu-west-1")
    assert eu.s3.get_bucket_location(Bucket="tf-state-eu")["LocationConstraint"] == "eu-west-1"
    assert eu.ddb.describe_table(TableName="tf-state-eu-locks")["Table"]["TableArn"].startswith(
        "arn:aws:dynamodb:eu-west-1:"
    )
    # Without --region the existing bucket's region is used.
    again = cli("bootstrap", "--bucket", "tf-state-eu", "--json").json()
    assert again["region"] == "eu-west-1"
    assert again["changed"] is False
    # A contradicting --region is refused, naming the bucket's region.
    wrong = cli_process("bootstrap", "--bucket", "tf-state-eu", "--region", "us-west-2")
    assert wrong.returncode == 2
    assert "already exists in eu-west-1" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_kms_key_sets_sse_kms_with_bucket_key(aws: Aws) -> None:
    key = aws.kms.create_key()["KeyMetadata"]["Arn"]
    aws.kms.create_alias(AliasName="alias/tf-state", TargetKeyId=key)
    result = cli("bootstrap", "--bucket", "tf-state", "--kms-key", "alias/tf-state", "--json")
    assert result.exit_code == 0, result.output
    report = result.json()
    rule = aws.s3.get_bucket_encryption(Bucket="tf-state")["ServerSideEncryptionConfiguration"][
        "Rules"
    ][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": "alias/tf-state",
    }
    assert rule["BucketKeyEnabled"] is True
    statements = {s["Sid"]: s for s in aws.policy("tf-state")["Statement"]}
    assert statements["StatekeeperDenyUnencryptedUploads"]["Condition"] == {
        "StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}
    }
    assert 'kms_key_id   = "alias/tf-state"' in report["backend_block"]
    assert "sse=aws%3Akms&kms_key_id=alias%2Ftf-state" in report["serve_command"]
    again = cli("bootstrap", "--bucket", "tf-state", "--kms-key", "alias/tf-state", "--json")
    assert again.json()["changed"] is False

    # Upgrading an AES256 bucket to the key is a change; a missing key is refused up front.
    missing = cli_process("bootstrap", "--bucket", "tf-state", "--kms-key", "alias/nope")
    assert missing.returncode == 2
    assert "alias/nope does not exist in us-east-1" in missing.stderr


def test_log_bucket_and_replica(aws: Aws) -> None:
    aws.s3.create_bucket(Bucket="org-logs", ObjectOwnership="BucketOwnerEnforced")
    args = (
        "bootstrap",
        "--bucket",
        "tf-state",
        "--table",
        "tf-locks",
        "--log-bucket",
        "org-logs",
        "--replica-region",
        "us-west-2",
        "--json",
    )
    result = cli(*args)
    assert result.exit_code == 0, result.output
    checks = statuses(result.json())
    assert all(status == "pass" for status in checks.values()), checks

    logging = aws.s3.get_bucket_logging(Bucket="tf-state")["LoggingEnabled"]
    assert logging == {"TargetBucket": "org-logs", "TargetPrefix": "tf-state/"}
    grant = aws.policy("org-logs")["Statement"][0]
    assert grant["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert grant["Resource"] == "arn:aws:s3:::org-logs/tf-state/*"

    west = Aws("us-west-2")
    replica = "tf-state-replica"
    assert west.s3.get_bucket_location(Bucket=replica)["LocationConstraint"] == "us-west-2"
    assert west.s3.get_bucket_versioning(Bucket=replica)["Status"] == "Enabled"
    assert {s["Sid"] for s in west.policy(replica)["Statement"]} == {
        "StatekeeperDenyInsecureTransport",
        "StatekeeperDenyUnencryptedUploads",
    }
    config = aws.s3.get_bucket_replication(Bucket="tf-state")["ReplicationConfiguration"]
    assert config["Role"].endswith(":role/statekeeper-replication-tf-state")
    (rule,) = config["Rules"]
    assert rule["Destination"]["Bucket"] == f"arn:aws:s3:::{replica}"
    assert rule["DeleteMarkerReplication"] == {"Status": "Disabled"}
    role = aws.iam.get_role(RoleName="statekeeper-replication-tf-state")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "s3.amazonaws.com"
    }
    document = aws.iam.get_role_policy(
        RoleName="statekeeper-replication-tf-state", PolicyName="statekeeper-replication"
    )["PolicyDocument"]
    if isinstance(document, str):
        document = json.loads(document)
    resources = {s["Sid"]: s["Resource"] for s in document["Statement"]}
    assert resources["WriteReplica"] == f"arn:aws:s3:::{replica}/*"

    again = cli(*args).json()
    assert again["changed"] is False, [c for c in again["checks"] if c["changed"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--bucket", "Bad_Bucket"), "not a valid bucket name"),
        (("--bucket", "tf-state", "--table", "t", "--lockfile"), "exclude each other"),
        (("--bucket", "tf-state", "--noncurrent-days", "0"), "at least 1"),
        (("--bucket", "tf-state", "--log-bucket", "tf-state"), "must be another bucket"),
        (
            ("--bucket", "tf-state", "--kms-key", "alias/k", "--replica-region", "us-west-2"),
            "--replica-kms-key",
        ),
    ],
)
def test_bad_input_is_a_clear_error(aws: Aws, args: tuple[str, ...], message: str) -> None:
    result = cli_process("bootstrap", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert aws.s3.list_buckets()["Buckets"] == []

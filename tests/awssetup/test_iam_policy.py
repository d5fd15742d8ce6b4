"""iam-policy: valid IAM JSON naming exactly the resources given."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.awssetup.helpers import Aws, cli, cli_process


def policy(*args: str) -> dict[str, Any]:
    result = cli("iam-policy", *args)
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.output)
    assert parsed["Version"] == "2012-10-17"
    for statement in parsed["Statement"]:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        assert statement["Sid"].isalnum()
    return parsed


def actions_on(doc: dict[str, Any]) -> dict[str, set[str]]:
    """resource -> actions allowed on it."""
    out: dict[str, set[str]] = {}
    for statement in doc["Statement"]:
        actions = statement["Action"]
        for resource in [statement["Resource"]]:
            out.setdefault(resource, set()).update(
                actions if isinstance(actions, list) else [actions]
            )
    return out


def test_bucket_and_table() -> None:
    doc = policy("--bucket", "tf-state", "--table", "tf-locks")
    assert actions_on(doc) == {
        # GetBucketVersioning: without it the server takes the bucket for one without
        # versions (no history; records it removes leave their versions behind).
        "arn:aws:s3:::tf-state": {
            "s3:ListBucket",
            "s3:ListBucketVersions",
            "s3:GetBucketVersioning",
        },
        "arn:aws:s3:::tf-state/*": {"s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"},
        "arn:aws:s3:::tf-state/*.tflock": {"s3:DeleteObject"},
        # Delivered webhook outbox entries and the expired delivery log, erased with their
        # versions (a store without a database keeps them there).
        "arn:aws:s3:::tf-state/statekeeper!/hooks/*": {
            "s3:DeleteObject",
            "s3:DeleteObjectVersion",
        },
        # Expired UI sign-outs, erased the same way.
        "arn:aws:s3:::tf-state/statekeeper!/signouts/*": {
            "s3:DeleteObject",
            "s3:DeleteObjectVersion",
        },
        "arn:aws:dynamodb:*:*:table/tf-locks": {
            "dynamodb:DescribeTable",
            "dynamodb:GetItem",
            "dynamodb:Scan",
            "dynamodb:PutItem",
            "dynamodb:DeleteItem",
        },
    }
    assert not any("Condition" in s for s in doc["Statement"])


def test_prefix_limits_listing_and_objects() -> None:
    doc = policy(
        "--bucket",
        "tf-state",
        "--prefix",
        "team-a/",
        "--region",
        "eu-west-1",
        "--account",
        "111122223333",
        "--table",
        "tf-locks",
    )
    resources = actions_on(doc)
    assert set(resources) == {
        "arn:aws:s3:::tf-state",
        "arn:aws:s3:::tf-state/team-a/*",
        "arn:aws:s3:::tf-state/team-a/*.tflock",
        "arn:aws:s3:::tf-state/team-a/statekeeper!/hooks/*",
        "arn:aws:s3:::tf-state/team-a/statekeeper!/signouts/*",
        "arn:aws:dynamodb:eu-west-1:111122223333:table/tf-locks",
    }
    for statement in doc["Statement"]:
        if statement["Resource"] != "arn:aws:s3:::tf-state":
            continue
        if statement["Action"] == "s3:GetBucketVersioning":
            # The call carries no s3:prefix: under the condition it would always be denied.
            assert "Condition" not in statement
        else:
            assert statement["Condition"] == {"StringLike": {"s3:prefix": ["team-a/*"]}}


def test_kms_key_by_arn_and_by_alias() -> None:
    arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    doc = policy("--bucket", "tf-state", "--kms-key", arn)
    kms = next(s for s in doc["Statement"] if s["Sid"] == "UseStateKey")
    assert kms["Resource"] == arn
    assert set(kms["Action"]) == {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"}
    assert "Condition" not in kms

    doc = policy("--bucket", "tf-state", "--kms-key", "alias/tf-state", "--region", "us-east-1")
    kms = next(s for s in doc["Statement"] if s["Sid"] == "UseStateKey")
    assert kms["Resource"] == "arn:aws:kms:us-east-1:*:key/*"
    assert kms["Condition"] == {
        "ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/tf-state"}
    }


def test_read_only_drops_every_write_but_the_audit_trails() -> None:
    arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    doc = policy(
        "--bucket", "tf-state", "--prefix", "p/", "--table", "tf-locks", "--kms-key", arn,
        "--read-only",
    )  # fmt: skip
    allowed = set().union(*actions_on(doc).values())
    assert allowed == {
        "s3:ListBucket",
        "s3:ListBucketVersions",
        "s3:GetBucketVersioning",
        "s3:GetObject",
        "s3:GetObjectVersion",
        # Reads are audited: on S3 by writing objects under the audit prefix, encrypted.
        "s3:PutObject",
        "dynamodb:DescribeTable",
        "dynamodb:GetItem",
        "dynamodb:Scan",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }
    writes = [r for r, actions in actions_on(doc).items() if "s3:PutObject" in actions]
    assert writes == ["arn:aws:s3:::tf-state/p/statekeeper!/audit/*"]
    assert "arn:aws:s3:::tf-state/p/*.tflock" not in actions_on(doc)


def test_allow_delete_adds_state_deletes() -> None:
    doc = policy("--bucket", "tf-state", "--allow-delete")
    assert "s3:DeleteObject" in actions_on(doc)["arn:aws:s3:::tf-state/*"]
    assert (
        "s3:DeleteObject"
        not in actions_on(policy("--bucket", "tf-state"))["arn:aws:s3:::tf-state/*"]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--bucket", "x"), "not a valid bucket name"),
        (("--bucket", "tf-state", "--prefix", "a*"), "must not contain IAM wildcards"),
        (("--bucket", "tf-state", "--read-only", "--allow-delete"), "contradict"),
    ],
)
def test_bad_input(args: tuple[str, ...], message: str) -> None:
    result = cli_process("iam-policy", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.aws
@pytest.mark.parametrize(
    "args",
    [
        ("--bucket", "tf-state"),
        (
            "--bucket",
            "tf-state",
            "--prefix",
            "team-a/",
            "--table",
            "tf-locks",
            "--kms-key",
            "alias/tf-state",
            "--region",
            "eu-west-1",
            "--account",
            "111122223333",
        ),
        (
            "--bucket",
            "tf-state",
            "--table",
            "tf-locks",
            "--read-only",
            "--kms-key",
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        ),
    ],
)
def test_iam_accepts_the_policy(aws: Aws, args: tuple[str, ...]) -> None:
    """moto's IAM runs AWS's syntax checks on policy documents (not their semantics)."""
    document = cli("iam-policy", *args).output
    created = aws.iam.create_policy(PolicyName="statekeeper", PolicyDocument=document)
    assert created["Policy"]["Arn"].endswith(":policy/statekeeper")

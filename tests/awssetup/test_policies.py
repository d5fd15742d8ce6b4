"""Doctor's reading of bucket policies written by hand."""

from __future__ import annotations

from typing import Any

import pytest

from statekeeper.awssetup import policies
from statekeeper.awssetup.context import BucketRef

PLAIN = BucketRef("tf-state", "us-east-1")
KMS = BucketRef("tf-state", "us-east-1", kms_key="alias/k")
ARN = "arn:aws:s3:::tf-state"


def deny(action: Any, resource: Any, condition: Any, principal: Any = "*") -> dict[str, Any]:
    statement = {
        "Effect": "Deny",
        "Principal": principal,
        "Action": action,
        "Resource": resource,
        "Condition": condition,
    }
    return {"Version": "2012-10-17", "Statement": [statement]}


INSECURE = {"Bool": {"aws:SecureTransport": "false"}}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (deny("s3:*", [ARN, f"{ARN}/*"], INSECURE), True),
        (deny("s3:*", [ARN, f"{ARN}/*"], {"Bool": {"aws:SecureTransport": False}}), True),
        (deny("s3:*", [ARN, f"{ARN}/*"], INSECURE, {"AWS": "*"}), True),
        (deny("s3:*", "*", INSECURE), True),
        (deny("s3:*", f"{ARN}/*", INSECURE), False),  # the bucket itself is not covered
        (deny("s3:PutObject", [ARN, f"{ARN}/*"], INSECURE), False),  # reads not covered
        (deny("s3:*", [ARN, f"{ARN}/*"], {"Bool": {"aws:SecureTransport": "true"}}), False),
        (deny("s3:*", [ARN, f"{ARN}/*"], INSECURE, {"AWS": "arn:aws:iam::1:root"}), False),
        (
            deny("s3:*", [ARN, f"{ARN}/*"], {**INSECURE, "IpAddress": {"aws:SourceIp": "1.2.3.4"}}),
            False,
        ),
        (policies.parse_policy(None), False),
    ],
)
def test_denies_insecure_transport(policy: dict[str, Any], expected: bool) -> None:
    assert policies.denies_insecure_transport(policy, PLAIN) is expected


SSE = "s3:x-amz-server-side-encryption"


@pytest.mark.parametrize(
    ("policy", "bucket", "expected"),
    [
        (deny("s3:PutObject", f"{ARN}/*", {"Null": {SSE: "true"}}), PLAIN, True),
        (deny("s3:PutObject", f"{ARN}/*", {"StringNotEquals": {SSE: "AES256"}}), PLAIN, True),
        (
            deny("s3:PutObject", f"{ARN}/*", {"StringNotEquals": {SSE: ["AES256", "aws:kms"]}}),
            PLAIN,
            True,
        ),
        (deny("s3:PutObject", f"{ARN}/*", {"StringNotEquals": {SSE: "aws:kms"}}), KMS, True),
        # with a key, a policy that still lets AES256 uploads through does not pass
        (deny("s3:PutObject", f"{ARN}/*", {"Null": {SSE: "true"}}), KMS, False),
        (deny("s3:PutObject", f"{ARN}/other/*", {"Null": {SSE: "true"}}), PLAIN, False),
        (deny("s3:GetObject", f"{ARN}/*", {"Null": {SSE: "true"}}), PLAIN, False),
    ],
)
def test_denies_unencrypted_uploads(
    policy: dict[str, Any], bucket: BucketRef, expected: bool
) -> None:
    assert policies.denies_unencrypted_uploads(policy, bucket) is expected


def test_our_statements_pass_our_own_tests_and_merge_by_sid() -> None:
    theirs = {
        "Sid": "Theirs",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::1:root"},
        "Action": "s3:GetObject",
        "Resource": f"{ARN}/*",
    }
    policy = {"Version": "2012-10-17", "Statement": [theirs]}
    for bucket in (PLAIN, KMS):
        merged = policies.merge_statement(policy, policies.tls_statement(bucket))
        merged = policies.merge_statement(merged, policies.encrypted_uploads_statement(bucket))
        merged = policies.merge_statement(merged, policies.tls_statement(bucket))
        assert [s["Sid"] for s in merged["Statement"]] == [
            "Theirs",
            policies.ENCRYPTED_UPLOADS_SID,
            policies.TLS_SID,
        ]
        assert policies.denies_insecure_transport(merged, bucket)
        assert policies.denies_unencrypted_uploads(merged, bucket)

"""Policy documents bootstrap writes, and the tests doctor applies to them.

Bucket-policy statements carry our own ``Sid`` so that bootstrap can replace
them without touching statements someone else added. Doctor does not insist
on our Sids: a statement with the same effect written by hand passes.
"""

from __future__ import annotations

import json
from typing import Any

from statekeeper.awssetup.context import BucketRef, partition

__all__ = [
    "ENCRYPTED_UPLOADS_SID",
    "TLS_SID",
    "denies_insecure_transport",
    "denies_unencrypted_uploads",
    "encrypted_uploads_statement",
    "log_delivery_statement",
    "merge_statement",
    "parse_policy",
    "replication_role_policy",
    "replication_trust_policy",
    "tls_statement",
]

TLS_SID = "StatekeeperDenyInsecureTransport"
ENCRYPTED_UPLOADS_SID = "StatekeeperDenyUnencryptedUploads"
_SSE_KEY = "s3:x-amz-server-side-encryption"


def tls_statement(bucket: BucketRef) -> dict[str, Any]:
    """Deny every S3 action on the bucket and its objects over plain HTTP."""
    return {
        "Sid": TLS_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket.arn, f"{bucket.arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def encrypted_uploads_statement(bucket: BucketRef) -> dict[str, Any]:
    """Deny PutObject that does not ask for server-side encryption.

    Without a KMS key: the ``x-amz-server-side-encryption`` header must be
    present (AES256 or aws:kms). With a key: it must be ``aws:kms``, so nobody
    can downgrade a state to SSE-S3. Terraform sends the header when
    ``encrypt = true``.
    """
    condition: dict[str, Any]
    if bucket.kms_key:
        condition = {"StringNotEquals": {_SSE_KEY: "aws:kms"}}
    else:
        condition = {"Null": {_SSE_KEY: "true"}}
    return {
        "Sid": ENCRYPTED_UPLOADS_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObject",
        "Resource": f"{bucket.arn}/*",
        "Condition": condition,
    }


def parse_policy(text: str | None) -> dict[str, Any]:
    """A bucket policy as a dict with a list of statements (empty if there is none)."""
    if not text:
        return {"Version": "2012-10-17", "Statement": []}
    policy: dict[str, Any] = json.loads(text)
    statements = policy.get("Statement", [])
    policy["Statement"] = statements if isinstance(statements, list) else [statements]
    return policy


def merge_statement(policy: dict[str, Any], statement: dict[str, Any]) -> dict[str, Any]:
    """The policy with ``statement`` replacing any statement of the same Sid."""
    kept = [s for s in policy.get("Statement", []) if s.get("Sid") != statement["Sid"]]
    return {**policy, "Version": "2012-10-17", "Statement": [*kept, statement]}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _everyone(statement: dict[str, Any]) -> bool:
    principal = statement.get("Principal")
    return principal == "*" or (isinstance(principal, dict) and principal.get("AWS") == "*")


def _covers(statement: dict[str, Any], action: str) -> bool:
    service = action.split(":", 1)[0]
    return any(a in (action, f"{service}:*", "*") for a in _as_list(statement.get("Action")))


def _denies(policy: dict[str, Any], action: str, condition_ok: Any) -> set[str]:
    """Resources that a Deny-to-everyone statement for ``action`` covers, given its condition."""
    covered: set[str] = set()
    for statement in policy.get("Statement", []):
        if statement.get("Effect") != "Deny" or not _everyone(statement):
            continue
        if not _covers(statement, action) or not condition_ok(statement.get("Condition") or {}):
            continue
        covered.update(_as_list(statement.get("Resource")))
    return covered


def denies_insecure_transport(policy: dict[str, Any], bucket: BucketRef) -> bool:
    """Some statement denies everyone everything on the bucket and its objects without TLS."""

    def plain_http(condition: dict[str, Any]) -> bool:
        value = condition.get("Bool", {}).get("aws:SecureTransport")
        return str(value).lower() == "false" and len(condition) == 1

    covered = _denies(policy, "s3:GetObject", plain_http)
    return {bucket.arn, f"{bucket.arn}/*"} <= covered or "*" in covered


def denies_unencrypted_uploads(policy: dict[str, Any], bucket: BucketRef) -> bool:
    """Some statement denies uploads without the SSE header (aws:kms ones if a key is set)."""

    def no_sse(condition: dict[str, Any]) -> bool:
        if len(condition) != 1:
            return False
        if not bucket.kms_key and str(condition.get("Null", {}).get(_SSE_KEY)).lower() == "true":
            return True
        allowed = _as_list(condition.get("StringNotEquals", {}).get(_SSE_KEY))
        if bucket.kms_key:
            return allowed == ["aws:kms"]
        return bool(allowed) and set(allowed) <= {"AES256", "aws:kms", "aws:kms:dsse"}

    covered = _denies(policy, "s3:PutObject", no_sse)
    return bool({f"{bucket.arn}/*", "*"} & covered)


def log_delivery_statement(source: BucketRef, log_bucket: str, account: str) -> dict[str, Any]:
    """Let S3's logging service write ``<source>/`` objects into the log bucket.

    Log buckets with ACLs disabled (BucketOwnerEnforced) take logs only
    through a bucket-policy grant like this one.
    """
    sid = "StatekeeperAccessLogs" + "".join(c for c in source.name if c.isalnum())
    return {
        "Sid": sid[:100],
        "Effect": "Allow",
        "Principal": {"Service": "logging.s3.amazonaws.com"},
        "Action": "s3:PutObject",
        "Resource": f"arn:{partition(source.region)}:s3:::{log_bucket}/{source.name}/*",
        "Condition": {
            "ArnLike": {"aws:SourceArn": source.arn},
            "StringEquals": {"aws:SourceAccount": account},
        },
    }


def replication_trust_policy() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def replication_role_policy(source: BucketRef, replica: BucketRef) -> dict[str, Any]:
    """What S3 replication needs: read the source's versions, write the replica's."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ReadReplicationConfiguration",
            "Effect": "Allow",
            "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
            "Resource": source.arn,
        },
        {
            "Sid": "ReadSourceVersions",
            "Effect": "Allow",
            "Action": [
                "s3:GetObjectVersionForReplication",
                "s3:GetObjectVersionAcl",
                "s3:GetObjectVersionTagging",
            ],
            "Resource": f"{source.arn}/*",
        },
        {
            "Sid": "WriteReplica",
            "Effect": "Allow",
            "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
            "Resource": f"{replica.arn}/*",
        },
    ]
    if source.kms_key and replica.kms_key:
        statements += [
            {
                "Sid": "DecryptSource",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": source.kms_key if source.kms_key.startswith("arn:") else "*",
                "Condition": {
                    "StringLike": {"kms:ViaService": f"s3.{source.region}.amazonaws.com"}
                },
            },
            {
                "Sid": "EncryptReplica",
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:GenerateDataKey"],
                "Resource": replica.kms_key if replica.kms_key.startswith("arn:") else "*",
                "Condition": {
                    "StringLike": {"kms:ViaService": f"s3.{replica.region}.amazonaws.com"}
                },
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}

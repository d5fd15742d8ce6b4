"""``iam-policy``: the least-privilege IAM policy for Terraform and statekeeper serve.

What each statement is for:

- ``ListStates`` — ``s3:ListBucket`` on the bucket: Terraform lists workspaces
  (``env:/…``) and S3 answers 404 rather than 403 for a missing state only to
  callers who may list. With ``prefix`` it is limited by an ``s3:prefix``
  condition, so ``workspace_key_prefix`` must then lie under the prefix too.
- ``ListStateHistory`` — ``s3:ListBucketVersions``: statekeeper's history.
- ``ReadVersioning`` — ``s3:GetBucketVersioning`` on the bucket: a server asks at
  start whether the bucket keeps versions. Denied, it takes the bucket for one
  that keeps none: no history, and the records it removes (webhook outbox
  entries, sign-outs) are deleted rather than erased, their versions left
  behind. Not under the ``s3:prefix`` condition, which this call does not carry.
- ``ReadStates`` — ``s3:GetObject`` and ``s3:GetObjectVersion`` on ``B/P*``.
- ``WriteStates`` — ``s3:PutObject`` on ``B/P*`` (states and lock files).
- ``ReleaseLockFiles`` — ``s3:DeleteObject`` only on ``B/P*`` + ``LOCK_FILE_SUFFIX``: releasing a
  lock file is the only delete Terraform makes in normal runs.
- ``DeliverWebhooks`` — ``s3:DeleteObject`` and ``s3:DeleteObjectVersion`` on ``B/P`` +
  ``WEBHOOKS_PREFIX``: a server erases an outbox entry once delivered (with its
  versions: each claim and retry wrote one), and the expired delivery log, and
  ``hooks remove`` a subscription.
- ``ExpireSignOuts`` — the same on ``B/P`` + ``SIGNOUTS_PREFIX``: a server erases the
  record of a UI sign-out once the session's cookie has expired.
- ``DeleteStates`` (only with ``allow_delete``) — ``s3:DeleteObject`` on states:
  ``terraform workspace delete`` and statekeeper's state delete. In a versioned
  bucket this adds a delete marker; older versions stay.
- ``Locks`` — DynamoDB ``GetItem``/``PutItem``/``DeleteItem``/``DescribeTable``
  (and ``Scan`` to list locks) on the table: locks and digest items.
- ``UseStateKey`` — ``kms:Encrypt``/``Decrypt``/``GenerateDataKey`` on the key.
  A key named by alias is matched with the ``kms:ResourceAliases`` condition,
  because IAM resources for KMS are key ARNs.

``read_only`` keeps the list, read, versioning and ``Decrypt`` permissions (plus
``GetItem``/``DescribeTable``/``Scan``) and drops every write but one:

- ``AuditReads`` (only with ``read_only``) — ``s3:PutObject`` on ``B/P`` +
  ``AUDIT_PREFIX``: every read is audited, on S3 by writing an object there
  (the full policy grants it with ``WriteStates``); with a key, ``GenerateDataKey``
  to encrypt it.
"""

from __future__ import annotations

from typing import Any

from statekeeper.awssetup.context import partition
from statekeeper.errors import BadRequest
from statekeeper.storage.aws.names import validate_bucket_name, validate_table_name
from statekeeper.terraform.layout import (
    AUDIT_PREFIX,
    LOCK_FILE_SUFFIX,
    SIGNOUTS_PREFIX,
    WEBHOOKS_PREFIX,
)

__all__ = ["iam_policy"]


def _kms_statement(
    key: str, region: str, account: str, part: str, actions: list[str]
) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": "UseStateKey", "Effect": "Allow", "Action": actions}
    if key.startswith("arn:"):
        if ":alias/" in key:
            alias = key.split(":", 5)[-1]
            statement["Resource"] = f"arn:{part}:kms:{region}:{account}:key/*"
            statement["Condition"] = {"ForAnyValue:StringEquals": {"kms:ResourceAliases": alias}}
        else:
            statement["Resource"] = key
    elif key.startswith("alias/"):
        statement["Resource"] = f"arn:{part}:kms:{region}:{account}:key/*"
        statement["Condition"] = {"ForAnyValue:StringEquals": {"kms:ResourceAliases": key}}
    else:  # a bare key ID
        statement["Resource"] = f"arn:{part}:kms:{region}:{account}:key/{key}"
    return statement


def iam_policy(
    bucket: str,
    *,
    prefix: str = "",
    table: str | None = None,
    kms_key: str | None = None,
    read_only: bool = False,
    region: str | None = None,
    account: str | None = None,
    allow_delete: bool = False,
) -> dict[str, Any]:
    """The IAM policy document (Version 2012-10-17) for the given bucket, prefix, table and key."""
    validate_bucket_name(bucket)
    if table is not None:
        validate_table_name(table)
    if prefix.startswith("/"):
        raise BadRequest("--prefix is an S3 key prefix and must not start with '/'")
    if "*" in prefix or "?" in prefix:
        raise BadRequest("--prefix must not contain IAM wildcards ('*' or '?')")
    if read_only and allow_delete:
        raise BadRequest("--read-only and --allow-delete contradict each other")
    part = partition(region or "us-east-1")
    where, who = region or "*", account or "*"
    bucket_arn = f"arn:{part}:s3:::{bucket}"
    objects = f"{bucket_arn}/{prefix}*"

    listing: dict[str, Any] = {}
    if prefix:
        listing = {"Condition": {"StringLike": {"s3:prefix": [f"{prefix}*"]}}}
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ListStates",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket_arn,
            **listing,
        },
        {
            "Sid": "ListStateHistory",
            "Effect": "Allow",
            "Action": "s3:ListBucketVersions",
            "Resource": bucket_arn,
            **listing,
        },
        {
            "Sid": "ReadVersioning",
            "Effect": "Allow",
            "Action": "s3:GetBucketVersioning",
            "Resource": bucket_arn,
        },
        {
            "Sid": "ReadStates",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
            "Resource": objects,
        },
    ]
    if read_only:
        statements.append(
            {
                "Sid": "AuditReads",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": f"{bucket_arn}/{prefix}{AUDIT_PREFIX}*",
            }
        )
    else:
        statements += [
            {
                "Sid": "WriteStates",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": objects,
            },
            {
                "Sid": "ReleaseLockFiles",
                "Effect": "Allow",
                "Action": "s3:DeleteObject",
                "Resource": f"{bucket_arn}/{prefix}*{LOCK_FILE_SUFFIX}",
            },
            {
                "Sid": "DeliverWebhooks",
                "Effect": "Allow",
                "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
                "Resource": f"{bucket_arn}/{prefix}{WEBHOOKS_PREFIX}*",
            },
            {
                "Sid": "ExpireSignOuts",
                "Effect": "Allow",
                "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
                "Resource": f"{bucket_arn}/{prefix}{SIGNOUTS_PREFIX}*",
            },
        ]
        if allow_delete:
            statements.append(
                {
                    "Sid": "DeleteStates",
                    "Effect": "Allow",
                    "Action": "s3:DeleteObject",
                    "Resource": objects,
                }
            )
    if table is not None:
        actions = ["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:Scan"]
        if not read_only:
            actions += ["dynamodb:PutItem", "dynamodb:DeleteItem"]
        statements.append(
            {
                "Sid": "Locks",
                "Effect": "Allow",
                "Action": actions,
                "Resource": f"arn:{part}:dynamodb:{where}:{who}:table/{table}",
            }
        )
    if kms_key:
        # GenerateDataKey for every object written encrypted, the audit trail's included.
        actions = (
            ["kms:Decrypt", "kms:GenerateDataKey"]
            if read_only
            else ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]
        )
        statements.append(_kms_statement(kms_key, where, who, part, actions))
    return {"Version": "2012-10-17", "Statement": statements}

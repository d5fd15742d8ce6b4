"""Doctor's digest check: every state's MD5 against its DynamoDB digest item.

Terraform reads the digest item (lock path + ``DIGEST_SUFFIX``) after each read and fails
with "state data in S3 does not have the expected content" on a mismatch;
this finds that first. ``fix`` rewrites a digest to the object's current MD5
(after a hand restore), never while the state is locked.
"""

from __future__ import annotations

import hashlib
import re

from statekeeper.awssetup.checks import Finding, Status, aws_call
from statekeeper.awssetup.context import Aws, Target
from statekeeper.awssetup.inventory import Inventory
from statekeeper.terraform.layout import digest_id, lock_file_key

__all__ = ["check_digests"]

_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _md5(aws: Aws, target: Target, key: str, etag: str, expected: str) -> str:
    """The object's MD5; the ETag is it for single-part SSE-S3 objects, saving a download."""
    if etag.strip('"') == expected:
        return expected
    got = aws_call(
        "s3:GetObject",
        f"s3://{target.bucket}/{key}",
        aws.s3(target.region).get_object,
        Bucket=target.bucket,
        Key=key,
    )
    return hashlib.md5(got["Body"].read()).hexdigest()


def check_digests(aws: Aws, target: Target, inv: Inventory, fix: bool) -> list[Finding]:
    if not target.table:
        return [
            Finding(
                "states.digest", Status.SKIP, "no lock table given (--table): digests not checked"
            )
        ]
    findings: list[Finding] = []
    checked = 0

    def write_digest(key: str, digest: str) -> None:
        aws_call(
            "dynamodb:PutItem",
            f"table {target.table}",
            aws.dynamodb(target.region).put_item,
            TableName=target.table,
            Item={
                "LockID": {"S": digest_id(target.bucket, key)},
                "Digest": {"S": digest},
            },
        )

    for key in inv.state_keys():
        obj = inv.objects.get(key)
        stored = inv.digests.get(key)
        if obj is None:
            if stored is not None:
                findings.append(
                    Finding(
                        "states.digest",
                        Status.FAIL,
                        "a digest item exists but the state object does not: Terraform will "
                        "refuse to read this state",
                        subject=key,
                        fix=f"restore s3://{target.bucket}/{key} from an older version, or delete "
                        f'the item LockID = "{digest_id(target.bucket, key)}"',
                    )
                )
            continue
        if int(obj.get("Size", 0)) == 0:
            # Every listing takes an empty object for no state: nothing to digest.
            findings.append(
                Finding(
                    "states.digest",
                    Status.SKIP,
                    "an empty object, which is no state: no digest checked or written",
                    subject=key,
                )
            )
            continue
        checked += 1
        locked = key in inv.db_locks or lock_file_key(key) in inv.objects
        if stored is None:
            current = _md5(aws, target, key, obj.get("ETag", ""), "")
            finding = Finding(
                "states.digest",
                Status.WARN,
                "no digest item: Terraform skips its consistency check",
                subject=key,
                fix="statekeeper doctor --fix (writes the digest)",
            )
            if fix and not locked:
                write_digest(key, current)
                finding = Finding(
                    "states.digest",
                    Status.PASS,
                    f"digest written: {current}",
                    subject=key,
                    changed=f"write digest {current}",
                )
            findings.append(finding)
            continue
        if not _HEX32.match(stored):
            finding = Finding(
                "states.digest",
                Status.WARN,
                f"the digest item holds {stored!r}, not an MD5: Terraform skips its check",
                subject=key,
                fix="statekeeper doctor --fix (rewrites the digest)",
            )
            if fix and not locked:
                current = _md5(aws, target, key, obj.get("ETag", ""), "")
                write_digest(key, current)
                finding = Finding(
                    "states.digest",
                    Status.PASS,
                    f"digest rewritten: {current}",
                    subject=key,
                    changed=f"rewrite digest {stored!r} -> {current}",
                )
            findings.append(finding)
            continue
        current = _md5(aws, target, key, obj.get("ETag", ""), stored)
        if current == stored:
            continue
        finding = Finding(
            "states.digest",
            Status.FAIL,
            f"state MD5 {current} does not match the digest {stored}: Terraform will fail "
            'with "state data in S3 does not have the expected content"',
            subject=key,
            fix="if the object was restored by hand, statekeeper doctor --fix (sets the digest "
            f"to {current}); otherwise find out who wrote it",
        )
        if fix and locked:
            finding = Finding(
                finding.check,
                finding.status,
                finding.summary + "; not fixed while the state is locked",
                subject=key,
                fix=finding.fix,
            )
        elif fix:
            write_digest(key, current)
            finding = Finding(
                "states.digest",
                Status.PASS,
                f"digest rewritten from {stored} to {current}",
                subject=key,
                changed=f"rewrite digest {stored} -> {current}",
            )
        findings.append(finding)
    if not any(f.status not in (Status.PASS, Status.SKIP) or f.changed for f in findings):
        findings.append(
            Finding(
                "states.digest", Status.PASS, f"{checked} state(s) match their DynamoDB digests"
            )
        )
    return findings

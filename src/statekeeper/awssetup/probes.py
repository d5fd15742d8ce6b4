"""Doctor's live probes: what the bucket and table really do, and what they hold.

- a conditional put (``If-None-Match: *``) is refused when the object exists;
- object versions can be listed;
- every state's MD5 matches its DynamoDB digest item (Terraform's
  "state data in S3 does not have the expected content", found early);
- locks older than a threshold, and states locked by only one of the two
  mechanisms where both are in use (dual-lock drift).

Probes never delete a lock. The only writes are the probe object (removed
with all its versions) and, with ``fix``, digest items set to the state's
current MD5.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from botocore.exceptions import ClientError

from statekeeper.awssetup.checks import ABSENT, Finding, Status, aws_call
from statekeeper.awssetup.context import Aws, Target
from statekeeper.awssetup.digests import check_digests
from statekeeper.awssetup.encryption import check_encryption
from statekeeper.awssetup.inventory import Inventory, take_inventory
from statekeeper.awssetup.lockscan import check_locks
from statekeeper.errors import StatekeeperError
from statekeeper.terraform.layout import PROBE_PREFIX
from statekeeper.times import utcnow

__all__ = ["run_probes"]


def _sse_args(aws: Aws, target: Target) -> dict[str, str]:
    """Encryption headers for the probe: the bucket policy may deny puts without them."""
    got = aws_call(
        "s3:GetEncryptionConfiguration",
        f"bucket {target.bucket}",
        aws.s3(target.region).get_bucket_encryption,
        Bucket=target.bucket,
        absent=("ServerSideEncryptionConfigurationNotFoundError",),
    )
    if got is not ABSENT:
        rules = got.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        default = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
        if default.get("SSEAlgorithm") == "aws:kms":
            args = {"ServerSideEncryption": "aws:kms"}
            if default.get("KMSMasterKeyID"):
                args["SSEKMSKeyId"] = default["KMSMasterKeyID"]
            return args
    return {"ServerSideEncryption": "AES256"}


def probe_conditional_put(aws: Aws, target: Target) -> list[Finding]:
    """Write a probe twice with If-None-Match: *; the second must be refused."""
    from statekeeper.storage.aws import _boto

    s3 = aws.s3(target.region)
    key = f"{PROBE_PREFIX}probe-{uuid.uuid4().hex}"
    where = f"s3://{target.bucket}/{key}"
    findings: list[Finding] = []
    sse = _sse_args(aws, target)
    aws_call(
        "s3:PutObject",
        where,
        s3.put_object,
        Bucket=target.bucket,
        Key=key,
        Body=b"statekeeper doctor probe\n",
        IfNoneMatch="*",
        **sse,
    )
    try:
        try:
            s3.put_object(Bucket=target.bucket, Key=key, Body=b"second\n", IfNoneMatch="*", **sse)
            findings.append(
                Finding(
                    "probe.conditional-put",
                    Status.FAIL,
                    "a put with If-None-Match: * overwrote an existing object",
                    fix="this store does not honour conditional writes: do not use use_lockfile "
                    "or s3lock:// here; lock with DynamoDB (--table)",
                )
            )
        except ClientError as exc:  # the refusal is the expected outcome
            code = _boto.error_code(exc)
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                findings.append(
                    Finding(
                        "probe.conditional-put",
                        Status.PASS,
                        f"a put with If-None-Match: * over an existing object is refused ({code})",
                    )
                )
            else:
                _boto.translate(exc, "s3:PutObject (If-None-Match)", where)
        versions = aws_call(
            "s3:ListBucketVersions",
            f"bucket {target.bucket}",
            s3.list_object_versions,
            Bucket=target.bucket,
            Prefix=key,
        )
        ids = [v.get("VersionId") for v in versions.get("Versions", []) if v["Key"] == key]
        if ids and all(i and i != "null" for i in ids):
            findings.append(
                Finding(
                    "probe.versions",
                    Status.PASS,
                    f"object versions can be listed ({len(ids)} of the probe)",
                )
            )
        else:
            findings.append(
                Finding(
                    "probe.versions",
                    Status.FAIL,
                    "object versions are listed without version IDs: no history is kept",
                    fix="statekeeper doctor --fix (it will enable versioning)",
                )
            )
    finally:
        findings += _remove_probe(aws, target, key)
    return findings


def _remove_probe(aws: Aws, target: Target, key: str) -> list[Finding]:
    s3 = aws.s3(target.region)
    where = f"s3://{target.bucket}/{key}"
    try:
        listed = aws_call(
            "s3:ListBucketVersions",
            f"bucket {target.bucket}",
            s3.list_object_versions,
            Bucket=target.bucket,
            Prefix=key,
        )
        entries = listed.get("Versions", []) + listed.get("DeleteMarkers", [])
        for entry in entries:
            if entry["Key"] == key:
                aws_call(
                    "s3:DeleteObjectVersion",
                    where,
                    s3.delete_object,
                    Bucket=target.bucket,
                    Key=key,
                    VersionId=entry["VersionId"],
                )
        if not entries:
            aws_call("s3:DeleteObject", where, s3.delete_object, Bucket=target.bucket, Key=key)
    except StatekeeperError as exc:
        return [
            Finding(
                "probe.cleanup",
                Status.WARN,
                f"the probe object was left behind: {exc.message}",
                fix=f"delete every version of {where}",
            )
        ]
    return []


def _guard(check: str, probe: Callable[[], list[Finding]]) -> list[Finding]:
    """A probe that AWS refuses is a failed check, not a crashed doctor."""
    try:
        return probe()
    except StatekeeperError as exc:
        return [
            Finding(
                check,
                Status.FAIL,
                exc.message,
                fix="grant the permission, or run doctor with credentials that have it",
            )
        ]


def run_probes(
    aws: Aws,
    target: Target,
    *,
    fix: bool,
    stale_after: timedelta,
    now: datetime | None = None,
    write_probe: bool = True,
) -> list[Finding]:
    """Every live probe, in order: conditional put and versions, digests, locks."""
    when = now or utcnow()
    findings: list[Finding] = []
    if write_probe:
        findings += _guard("probe.conditional-put", lambda: probe_conditional_put(aws, target))
    inventory: list[Inventory] = []

    def inv() -> Inventory:
        if not inventory:
            inventory.append(take_inventory(aws, target))
        return inventory[0]

    findings += _guard("states.digest", lambda: check_digests(aws, target, inv(), fix))
    findings += _guard("locks.stale", lambda: check_locks(aws, target, inv(), stale_after, when))
    findings += _guard("states.encryption", lambda: check_encryption(aws, target, inv()))
    return findings

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

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from statekeeper.errors import InvalidLockInfo, StatekeeperError
from statekeeper.model import LockInfo, utcnow
from statekeeper.services.awssetup.checks import ABSENT, Finding, Status, aws_call
from statekeeper.services.awssetup.context import Aws, Target

__all__ = ["PROBE_PREFIX", "Inventory", "run_probes"]

PROBE_PREFIX = ".statekeeper-doctor/"
LOCK_SUFFIX = ".tflock"
DIGEST_SUFFIX = "-md5"
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Inventory:
    """What the bucket and table hold, read once."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    db_locks: dict[str, str] = field(default_factory=dict)  # state key -> Info JSON

    def state_keys(self) -> list[str]:
        keys = {k for k in self.objects if k.endswith(".tfstate")}
        keys |= set(self.digests) | set(self.db_locks)
        keys |= {k[: -len(LOCK_SUFFIX)] for k in self.objects if k.endswith(LOCK_SUFFIX)}
        return sorted(k for k in keys if not k.startswith(PROBE_PREFIX))


def take_inventory(aws: Aws, target: Target) -> Inventory:
    inv = Inventory()
    s3 = aws.s3(target.region)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=target.bucket)
    for page in aws_call("s3:ListBucket", f"bucket {target.bucket}", lambda: list(pages)):
        for obj in page.get("Contents", []):
            inv.objects[obj["Key"]] = obj
    if target.table:
        prefix = f"{target.bucket}/"
        scan = (
            aws.dynamodb(target.region)
            .get_paginator("scan")
            .paginate(
                TableName=target.table,
                ConsistentRead=True,
                FilterExpression="begins_with(LockID, :p)",
                ExpressionAttributeValues={":p": {"S": prefix}},
            )
        )
        items = aws_call("dynamodb:Scan", f"table {target.table}", lambda: list(scan))
        for page in items:
            for item in page.get("Items", []):
                lock_id = item["LockID"]["S"][len(prefix) :]
                if lock_id.endswith(DIGEST_SUFFIX) and "Digest" in item:
                    inv.digests[lock_id[: -len(DIGEST_SUFFIX)]] = item["Digest"].get("S", "")
                elif "Info" in item:
                    inv.db_locks[lock_id] = item["Info"].get("S", "")
    return inv


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
    from statekeeper.drivers import _boto

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
                "LockID": {"S": f"{target.bucket}/{key}{DIGEST_SUFFIX}"},
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
                        f'the item LockID = "{target.bucket}/{key}{DIGEST_SUFFIX}"',
                    )
                )
            continue
        checked += 1
        locked = key in inv.db_locks or f"{key}{LOCK_SUFFIX}" in inv.objects
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
    if not any(f.status is not Status.PASS or f.changed for f in findings):
        findings.append(
            Finding(
                "states.digest", Status.PASS, f"{checked} state(s) match their DynamoDB digests"
            )
        )
    return findings


def _lock_age(
    body: str, fallback: datetime | None, now: datetime
) -> tuple[LockInfo | None, timedelta | None]:
    try:
        info = LockInfo.parse(body.encode())
    except InvalidLockInfo:
        return None, (now - fallback) if fallback else None
    when = info.created or fallback
    return info, (now - when) if when else None


def _describe(info: LockInfo | None, age: timedelta | None) -> str:
    held = f"held for {_human(age)}" if age is not None else "of unknown age"
    if info is None:
        return f"a lock with unreadable info, {held}"
    who = info.who or "someone"
    return f"locked by {who} ({info.operation or 'unknown operation'}, ID {info.id}), {held}"


def _human(age: timedelta) -> str:
    minutes = int(age.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes}m"
    hours = minutes // 60
    return f"{hours}h" if hours < 48 else f"{hours // 24}d"


def check_locks(
    aws: Aws, target: Target, inv: Inventory, stale_after: timedelta, now: datetime
) -> list[Finding]:
    findings: list[Finding] = []
    s3 = aws.s3(target.region)
    file_locks: dict[str, LockInfo | None] = {}
    for obj_key, obj in inv.objects.items():
        if not obj_key.endswith(LOCK_SUFFIX) or obj_key.startswith(PROBE_PREFIX):
            continue
        state = obj_key[: -len(LOCK_SUFFIX)]
        got = aws_call(
            "s3:GetObject",
            f"s3://{target.bucket}/{obj_key}",
            s3.get_object,
            Bucket=target.bucket,
            Key=obj_key,
            absent=("NoSuchKey",),
        )
        if got is ABSENT:  # released since the listing
            continue
        info, age = _lock_age(
            got["Body"].read().decode(errors="replace"), obj.get("LastModified"), now
        )
        file_locks[state] = info
        if age is not None and age > stale_after:
            findings.append(_stale(f"{state}{LOCK_SUFFIX}", info, age))
    db_infos: dict[str, LockInfo | None] = {}
    for state, body in inv.db_locks.items():
        info, age = _lock_age(body, None, now)
        db_infos[state] = info
        if age is not None and age > stale_after:
            findings.append(_stale(f"{target.bucket}/{state} (DynamoDB)", info, age))
    if not findings:
        findings.append(
            Finding(
                "locks.stale",
                Status.PASS,
                f"no lock is older than {_human(stale_after)} "
                f"({len(file_locks)} lock file(s), {len(db_infos)} DynamoDB "
                "lock(s))",
            )
        )
    findings += _dual_lock_drift(aws, target, inv, file_locks, db_infos)
    return findings


def _stale(subject: str, info: LockInfo | None, age: timedelta) -> Finding:
    lock_id = info.id if info else "LOCK_ID"
    return Finding(
        "locks.stale",
        Status.WARN,
        _describe(info, age),
        subject=subject,
        fix=f"if no Terraform run is still going: terraform force-unlock {lock_id} "
        "(doctor never removes locks)",
    )


def _dual_lock_drift(
    aws: Aws,
    target: Target,
    inv: Inventory,
    file_locks: dict[str, LockInfo | None],
    db_locks: dict[str, LockInfo | None],
) -> list[Finding]:
    """States locked one way but not the other, where both ways are in use for them.

    Lock files are "in use" for a state that has lock-file history (old
    ``.tflock`` versions or delete markers); DynamoDB is in use for a state
    with a digest item. Otherwise a single lock is simply the configuration.
    """
    if not target.table:
        return []
    findings: list[Finding] = []
    for state in sorted(set(file_locks) | set(db_locks)):
        in_file, in_db = state in file_locks, state in db_locks
        if in_file and in_db:
            a, b = file_locks[state], db_locks[state]
            if a and b and a.id != b.id:
                findings.append(
                    Finding(
                        "locks.dual",
                        Status.FAIL,
                        f"the lock file is held by ID {a.id} and the DynamoDB lock by ID {b.id}: "
                        "two runs hold this state at once",
                        subject=state,
                        fix="use the same locking (use_lockfile and dynamodb_table) in every "
                        "backend block for this state, then force-unlock the stale one",
                    )
                )
            continue
        if in_file and state in inv.digests:
            missing, held = "DynamoDB lock", file_locks[state]
        elif in_db and _has_lockfile_history(aws, target, state):
            missing, held = "lock file", db_locks[state]
        else:
            continue
        findings.append(
            Finding(
                "locks.dual",
                Status.WARN,
                f"{_describe(held, None)} but there is no {missing}: a client with only the other "
                "mechanism would not be excluded",
                subject=state,
                fix="if no run is in progress, force-unlock it; give every backend block for this "
                "state both use_lockfile = true and dynamodb_table",
            )
        )
    if not findings:
        findings.append(
            Finding(
                "locks.dual",
                Status.PASS,
                "no state is locked by only one of lock file and DynamoDB where both are in use",
            )
        )
    return findings


def _has_lockfile_history(aws: Aws, target: Target, state: str) -> bool:
    key = f"{state}{LOCK_SUFFIX}"
    got = aws_call(
        "s3:ListBucketVersions",
        f"bucket {target.bucket}",
        aws.s3(target.region).list_object_versions,
        Bucket=target.bucket,
        Prefix=key,
    )
    entries = got.get("Versions", []) + got.get("DeleteMarkers", [])
    return any(e["Key"] == key for e in entries)


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
    return findings

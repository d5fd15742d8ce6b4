"""Doctor's lock checks: locks older than a threshold, and dual-lock drift.

Lock items are ``LockID = "<bucket>/<key>"`` with the LockInfo JSON in
``Info``; lock files are ``<key>`` + ``LOCK_FILE_SUFFIX``. Nothing here removes a lock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from statekeeper.awssetup.checks import ABSENT, Finding, Status, aws_call
from statekeeper.awssetup.context import Aws, Target
from statekeeper.awssetup.inventory import Inventory
from statekeeper.errors import InvalidLockInfo
from statekeeper.terraform.layout import (
    PROBE_PREFIX,
    is_lock_file,
    lock_file_key,
    lock_path,
    split_shared_hold,
    state_of_lock_file,
)
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.times import format_duration

__all__ = ["check_locks"]


def _lock_age(
    body: str, fallback: datetime | None, now: datetime
) -> tuple[LockInfo | None, timedelta | None]:
    try:
        info = LockInfo.parse(body.encode())
    except InvalidLockInfo:
        return None, (now - fallback) if fallback else None
    when = info.created or fallback
    return info, (now - when) if when else None


def _is_marker(state: str) -> bool:
    """The shared-holds marker of the lock policy: a record, no holder. (A shared
    hold itself is a plan's lock and is checked like any other.)"""
    hold = split_shared_hold(state)
    return hold is not None and hold[1]


def _describe(info: LockInfo | None, age: timedelta | None) -> str:
    held = f"held for {format_duration(age)}" if age is not None else "of unknown age"
    if info is None:
        return f"a lock with unreadable info, {held}"
    who = info.who or "someone"
    return f"locked by {who} ({info.operation or 'unknown operation'}, ID {info.id}), {held}"


def check_locks(
    aws: Aws, target: Target, inv: Inventory, stale_after: timedelta, now: datetime
) -> list[Finding]:
    findings: list[Finding] = []
    s3 = aws.s3(target.region)
    file_locks: dict[str, LockInfo | None] = {}
    for obj_key, obj in inv.objects.items():
        if not is_lock_file(obj_key) or obj_key.startswith(PROBE_PREFIX):
            continue
        state = state_of_lock_file(obj_key)
        if _is_marker(state):
            continue
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
            findings.append(_stale(lock_file_key(state), info, age))
    db_infos: dict[str, LockInfo | None] = {}
    for state, body in inv.db_locks.items():
        if _is_marker(state):
            continue
        info, age = _lock_age(body, None, now)
        db_infos[state] = info
        if age is not None and age > stale_after:
            findings.append(_stale(f"{lock_path(target.bucket, state)} (DynamoDB)", info, age))
    if not findings:
        findings.append(
            Finding(
                "locks.stale",
                Status.PASS,
                f"no lock is older than {format_duration(stale_after)} "
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
    lock-file versions or delete markers); DynamoDB is in use for a state
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
    key = lock_file_key(state)
    got = aws_call(
        "s3:ListBucketVersions",
        f"bucket {target.bucket}",
        aws.s3(target.region).list_object_versions,
        Bucket=target.bucket,
        Prefix=key,
    )
    entries = got.get("Versions", []) + got.get("DeleteMarkers", [])
    return any(e["Key"] == key for e in entries)

"""Doctor's lock checks: locks older than a threshold, and dual-lock drift.

Lock items are ``LockID = "<bucket>/<key>"`` with the LockInfo JSON in
``Info``; lock files are ``<key>`` + ``LOCK_FILE_SUFFIX``. Nothing here removes a lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from statekeeper.awssetup.checks import ABSENT, Finding, Status, aws_call
from statekeeper.awssetup.context import Aws, Target
from statekeeper.awssetup.inventory import Inventory
from statekeeper.storage.aws.dynamodb import lock_of_item
from statekeeper.storage.aws.s3lock import lock_of_file
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


def _age(info: LockInfo, listed: datetime | None, now: datetime) -> timedelta | None:
    """How long ``info`` has been held, as ``statekeeper locks`` ages it (the server's
    ``Acquired`` where statekeeper took the lock, else the client's ``Created``); a lock
    with neither (an unreadable lock file) by when the object was written."""
    since = info.since or listed
    return None if since is None else max(timedelta(0), now - since)


def _describe(info: LockInfo, age: timedelta | None) -> str:
    held = f"held for {format_duration(age)}" if age is not None else "of unknown age"
    if info.damaged is not None:
        return f"a lock with unreadable info, {held}"
    who = info.who or info.actor or "someone"
    return f"locked by {who} ({info.operation or 'unknown operation'}, ID {info.id}), {held}"


def check_locks(
    aws: Aws, target: Target, inv: Inventory, stale_after: timedelta, now: datetime
) -> list[Finding]:
    findings: list[Finding] = []
    s3 = aws.s3(target.region)
    # Primary locks by state (what dual-lock drift compares); shared holds apart.
    file_locks: dict[str, LockInfo] = {}
    db_infos: dict[str, LockInfo] = {}
    held: list[_Held] = []
    for obj_key, obj in inv.objects.items():
        if not is_lock_file(obj_key) or obj_key.startswith(PROBE_PREFIX):
            continue
        where = f"s3://{target.bucket}/{obj_key}"
        got = aws_call(
            "s3:GetObject",
            where,
            s3.get_object,
            Bucket=target.bucket,
            Key=obj_key,
            absent=("NoSuchKey",),
        )
        if got is ABSENT:  # released since the listing
            continue
        info = lock_of_file(got, where, damaged_ok=True)
        held.append(_Held(state_of_lock_file(obj_key), info, obj.get("LastModified"), False))
    for lock_key, item in inv.db_locks.items():
        info = lock_of_item(item, target.table or "", damaged_ok=True)
        held.append(_Held(lock_key, info, None, True))
    shared_states: set[str] = set()
    for h in held:
        hold = split_shared_hold(h.key)
        if hold is not None:
            shared_states.add(hold[0])
        elif h.in_table:
            db_infos[h.key] = h.info
        else:
            file_locks[h.key] = h.info
    for h in held:
        hold = split_shared_hold(h.key)
        if hold is not None and hold[1]:
            continue  # the shared-holds marker: a record, no holder
        age = _age(h.info, h.listed, now)
        if age is not None and age > stale_after:
            state = h.key if hold is None else hold[0]
            findings.append(_stale(target, h, state, hold is not None, state in shared_states, age))
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


@dataclass(frozen=True)
class _Held:
    """One lock found: its lock key (a state's, or a shared hold's), what it holds, when
    its object was written (lock files), and whether it is a DynamoDB item."""

    key: str
    info: LockInfo
    listed: datetime | None
    in_table: bool


def _stale(
    target: Target, h: _Held, state: str, beside: bool, shared: bool, age: timedelta
) -> Finding:
    hold = ", shared hold" if beside else ""
    if h.in_table:
        subject = f"{lock_path(target.bucket, state)} (DynamoDB{hold})"
    else:
        subject = lock_file_key(state) + (" (shared hold)" if beside else "")
    lock_id = h.info.id or "LOCK_ID"
    if shared:
        # Plans sharing the lock (shared-plans): terraform force-unlock compares the ID
        # with the lock Terraform sees only, and cannot remove a hold beside it.
        locks = f"dynamodb://{target.table}" if h.in_table else f"s3lock://{target.bucket}"
        fix = (
            f"if no Terraform run is still going: statekeeper --store s3://{target.bucket} "
            f"--locks {locks} unlock {state} --id {lock_id} (doctor never removes locks)"
        )
    else:
        fix = (
            f"if no Terraform run is still going: terraform force-unlock {lock_id} "
            "(doctor never removes locks)"
        )
    what = "a plan sharing the lock, " if beside else ""
    return Finding(
        "locks.stale",
        Status.WARN,
        what + _describe(h.info, age),
        subject=subject,
        fix=fix,
    )


def _dual_lock_drift(
    aws: Aws,
    target: Target,
    inv: Inventory,
    file_locks: dict[str, LockInfo],
    db_locks: dict[str, LockInfo],
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
            if a.id and b.id and a.id != b.id:
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

"""``doctor``'s view of history hygiene on a bucket: intermediates held, lifecycle vs retention.

- ``history.intermediates``: how many noncurrent versions the bucket holds and
  how many of them are intermediate snapshots (written under the same lock ID
  as the version after them, which statekeeper records in each version's
  metadata; Terraform's own ``backend "s3"`` records none, so its snapshots
  count as plain noncurrent versions). Compaction is off on S3 unless
  ``history.compact = true``: this says what it would remove.
- ``history.lifecycle``: on S3, retention is the bucket's lifecycle rules. Each
  ``[[history.retention]]`` rule whose glob is a prefix (``prod/**``, ``**``)
  maps to ``NoncurrentVersionExpiration`` on that prefix: ``keep_last = N`` is
  ``NewerNoncurrentVersions = N - 1`` (the current version is not noncurrent),
  ``keep_for`` is ``NoncurrentDays`` (counted by S3 from when a version
  stopped being current, not from when it was written). A rule that disagrees
  or is missing is a warning with the rule to add.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import Any

from statekeeper.awssetup.checks import ABSENT, Finding, Status, aws_call
from statekeeper.awssetup.context import Aws, Target
from statekeeper.state.hygiene import HistoryPolicy, Retention
from statekeeper.terraform.layout import STATEKEEPER_PREFIX, is_lock_file

__all__ = ["history_findings"]

#: Versions read for their metadata at most: doctor must end on a large bucket.
MAX_HEADS = 5000


def _versions(client: Any, bucket: str) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        yield from page.get("Versions", [])


def _lock_id(client: Any, bucket: str, key: str, version_id: str) -> str | None:
    """The lock a version was written under (None: unknown, or not readable here)."""
    from statekeeper.storage.aws import _boto

    try:
        meta = client.head_object(Bucket=bucket, Key=key, VersionId=version_id)
    except _boto.AWS_ERRORS:
        return None  # a version this identity may not read counts as a plain one
    lock_id: str | None = meta.get("Metadata", {}).get("lock-id")
    return lock_id


def _intermediates(aws: Aws, target: Target) -> Finding:
    client = aws.s3(target.region)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for v in _versions(client, target.bucket):
        key = v["Key"]
        if is_lock_file(key) or key.startswith(STATEKEEPER_PREFIX) or key.endswith("/"):
            continue
        by_key.setdefault(key, []).append(v)
    noncurrent = sum(1 for vs in by_key.values() for v in vs if not v["IsLatest"])
    intermediates = heads = 0
    for key, listed in by_key.items():
        listed.sort(key=lambda v: (not v["IsLatest"], -v["LastModified"].timestamp()))
        lock_ids: list[str | None] = []
        for v in listed:
            if heads >= MAX_HEADS:
                break
            heads += 1
            lock_ids.append(_lock_id(client, target.bucket, key, v["VersionId"]))
        # Newest first: a noncurrent version is an intermediate when the one after it
        # (the previous entry) was written under the same lock.
        intermediates += sum(1 for newer, older in pairwise(lock_ids) if older and older == newer)
    partial = f" (metadata of the first {MAX_HEADS} versions read)" if heads >= MAX_HEADS else ""
    summary = (
        f"{noncurrent} noncurrent version(s) in {len(by_key)} state(s); {intermediates} are "
        f"intermediate snapshots of one lock{partial}"
    )
    fix = (
        "set history.compact = true to remove them when their lock is released "
        "(docs/operations.md#history-hygiene)"
        if intermediates
        else ""
    )
    return Finding("history.intermediates", Status.PASS, summary, fix)


def _prefix(rule: Retention) -> str | None:
    pattern = rule.glob.pattern
    if pattern == "**":
        return ""
    if pattern.endswith("/**") and not any(c in pattern[:-3] for c in "*?["):
        return pattern[:-2]
    return None


def _expected(rule: Retention) -> dict[str, int]:
    # S3 expires a version once both hold (noncurrent for NoncurrentDays and that many
    # newer noncurrent versions): the rule's "either keeps it". Without keep_for, the
    # shortest NoncurrentDays S3 takes.
    out = {"NoncurrentDays": 1 if rule.keep_for is None else max(1, rule.keep_for.days)}
    if rule.keep_last is not None:
        out["NewerNoncurrentVersions"] = rule.keep_last - 1
    return out


def _rule_prefix(rule: dict[str, Any]) -> str:
    if "Prefix" in rule:
        return str(rule["Prefix"])
    return str((rule.get("Filter") or {}).get("Prefix", ""))


def _lifecycle(aws: Aws, target: Target, history: HistoryPolicy) -> list[Finding]:
    client = aws.s3(target.region)
    got = aws_call(
        "s3:GetLifecycleConfiguration",
        f"s3://{target.bucket}",
        client.get_bucket_lifecycle_configuration,
        Bucket=target.bucket,
        absent=("NoSuchLifecycleConfiguration",),
    )
    rules = (
        [] if got is ABSENT else [r for r in got.get("Rules", []) if r.get("Status") == "Enabled"]
    )
    out = []
    for retention in history.retention:
        subject = retention.glob.pattern
        prefix = _prefix(retention)
        if prefix is None:
            out.append(
                Finding(
                    "history.lifecycle",
                    Status.WARN,
                    f"{retention.describe()}: a lifecycle rule filters by prefix only, so "
                    "this glob has no lifecycle equivalent",
                    "use a glob of the form PREFIX/** for states on S3",
                    subject,
                )
            )
            continue
        want = _expected(retention)
        have = next(
            (
                r.get("NoncurrentVersionExpiration", {})
                for r in rules
                if _rule_prefix(r) == prefix and "NoncurrentVersionExpiration" in r
            ),
            None,
        )
        if have is not None and all(have.get(k) == v for k, v in want.items()):
            out.append(
                Finding(
                    "history.lifecycle", Status.PASS, f"{retention.describe()}: {have}", "", subject
                )
            )
            continue
        rule = {
            "Status": "Enabled",
            "Filter": {"Prefix": prefix},
            "NoncurrentVersionExpiration": want,
        }
        found = "no lifecycle rule on that prefix" if have is None else f"the bucket has {have}"
        out.append(
            Finding(
                "history.lifecycle",
                Status.WARN,
                f"{retention.describe()}, but {found}",
                "add the lifecycle rule " + str(rule).replace("'", '"'),
                subject,
            )
        )
    return out


def history_findings(aws: Aws, target: Target, history: HistoryPolicy) -> list[Finding]:
    """The bucket's intermediates and, per retention rule, whether its lifecycle agrees."""
    from statekeeper.storage.aws import _boto

    try:
        intermediates = _intermediates(aws, target)
    except _boto.AWS_ERRORS as exc:
        _boto.translate(exc, "s3:ListBucketVersions", f"s3://{target.bucket}")
    return [intermediates, *_lifecycle(aws, target, history)]

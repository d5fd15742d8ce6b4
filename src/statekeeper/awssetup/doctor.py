"""``doctor``: audit the bucket and table, probe what they really do, fix what is safe.

The settings are the same checks bootstrap applies (one list, in
:mod:`statekeeper.awssetup.catalog`); the live probes are in
:mod:`statekeeper.awssetup.probes`. ``fix`` applies only the fixes
marked safe (they cannot break a working client or delete data) and rewrites
stale digests; it never removes a lock.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from statekeeper.awssetup.bootstrap import changes_detail, describe_target
from statekeeper.awssetup.bucket import bucket_region
from statekeeper.awssetup.catalog import settings_checks
from statekeeper.awssetup.checks import ABSENT, Finding, Status, run_checks
from statekeeper.awssetup.context import Aws, Target
from statekeeper.awssetup.history_probe import history_findings
from statekeeper.awssetup.probes import run_probes
from statekeeper.awssetup.replication import replica_of, role_name
from statekeeper.events import Action, EventStream
from statekeeper.security.caller import Caller
from statekeeper.state.hygiene import HistoryPolicy

__all__ = ["DoctorReport", "doctor"]


@dataclass(frozen=True)
class DoctorReport:
    target: Target
    findings: list[Finding]
    fixed: bool

    @property
    def ok(self) -> bool:
        """Nothing failed (warnings do not fail the run)."""
        return not any(f.status is Status.FAIL for f in self.findings)

    def counts(self) -> dict[str, int]:
        counted = Counter(str(f.status) for f in self.findings)
        return {str(s): counted.get(str(s), 0) for s in Status}

    def to_json(self) -> dict[str, object]:
        return {
            "bucket": self.target.bucket,
            "table": self.target.table,
            "region": self.target.region,
            "ok": self.ok,
            "fix": self.fixed,
            "counts": self.counts(),
            "checks": [f.to_json() for f in self.findings],
        }


def doctor(
    aws: Aws,
    target: Target,
    events: EventStream,
    caller: Caller,
    *,
    fix: bool = False,
    stale_after: timedelta = timedelta(hours=2),
    probes: bool = True,
    skip: Sequence[str] = (),
    now: datetime | None = None,
    history: HistoryPolicy | None = None,
) -> DoctorReport:
    """Audit every setting, then check the data (``probes``: with the write probe too);
    ``skip`` takes check-ID globs.

    With ``fix``, records one ``doctor-fix`` event naming every fix applied; an
    audit alone changes nothing and records nothing.
    """
    target.validate()
    if not fix:
        return _doctor(aws, target, False, stale_after, probes, skip, now, history)
    with events.event(Action.DOCTOR_FIX, caller) as event:
        event.detail = f"{describe_target(target)}: started"  # what a failure had in hand
        report = _doctor(aws, target, True, stale_after, probes, skip, now, history)
        event.detail = changes_detail(target, [f for f in report.findings if f.changed])
        return report


def _doctor(
    aws: Aws,
    target: Target,
    fix: bool,
    stale_after: timedelta,
    probes: bool,
    skip: Sequence[str],
    now: datetime | None,
    history: HistoryPolicy | None,
) -> DoctorReport:
    target, extra = _with_replica(aws, target)

    def skipped(check_id: str) -> bool:
        return any(fnmatch.fnmatchcase(check_id, pattern) for pattern in skip)

    checks = [c for c in settings_checks(target) if c.id not in extra]
    findings = run_checks(
        [c for c in checks if not skipped(c.id)], aws, target, "fix" if fix else "audit"
    )
    findings += [Finding(c.id, Status.SKIP, "skipped (--skip)") for c in checks if skipped(c.id)]
    order = {c.id: i for i, c in enumerate(checks)}
    findings.sort(key=lambda f: order.get(f.check, len(order)))
    if skipped("bucket.exists"):
        # Its line is left out, not the fact: the data checks below need the bucket.
        bucket_ok = bucket_region(aws, target.bucket, target.region) == target.region
        if not bucket_ok:
            findings = [_data_not_checked(f, target) for f in findings]
    else:
        bucket_ok = any(f.check == "bucket.exists" and f.status is Status.PASS for f in findings)
    if bucket_ok:
        # --no-probes leaves out the write probe only: the data checks read.
        probed = run_probes(
            aws,
            target,
            fix=fix,
            stale_after=stale_after,
            now=now,
            write_probe=probes and not skipped("probe.conditional-put"),
        )
        if not probes:
            probed.insert(
                0, Finding("probe.conditional-put", Status.SKIP, "not run (--no-probes: no write)")
            )
        findings += [
            f if not skipped(f.check) else Finding(f.check, Status.SKIP, "skipped (--skip)")
            for f in probed
        ]
    if history is not None and bucket_ok:
        findings += [
            f if not skipped(f.check) else Finding(f.check, Status.SKIP, "skipped (--skip)")
            for f in history_findings(aws, target, history)
        ]
    return DoctorReport(target, findings, fix)


def _data_not_checked(finding: Finding, target: Target) -> Finding:
    """The skipped ``bucket.exists`` line, saying that the data checks did not run."""
    if finding.check != "bucket.exists":
        return finding
    return replace(
        finding,
        summary=f"skipped (--skip); bucket {target.bucket} does not exist in {target.region}, "
        "so the data checks (states.*, locks.*, probe.*) did not run",
    )


def _with_replica(aws: Aws, target: Target) -> tuple[Target, set[str]]:
    """The target with the replica its replication rule names, so the replica is audited too.

    Returns the check IDs to leave out: the role check when the rule uses a role
    bootstrap did not make (doctor cannot know what that role should allow).
    """
    found = replica_of(aws, target)
    if found is None:
        return target, set()
    name, role_arn = found
    region = bucket_region(aws, name, target.region)
    if region is ABSENT or region == target.region:
        # Same-region replication, or a missing replica: only the rule itself is reported.
        return target, {"replication.role"}
    audited = replace(target, replica_region=str(region), replica_bucket=name)
    ours = role_arn.endswith(f":role/{role_name(target.bucket)}")
    return audited, set() if ours else {"replication.role"}

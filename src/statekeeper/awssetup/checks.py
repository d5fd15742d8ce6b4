"""The Check: one setting, read, compared with what is wanted, and applied.

Bootstrap and doctor walk the same list of checks (:func:`settings_checks`)
through :func:`run_checks`, in one of four modes:

- ``audit``: read and judge (doctor);
- ``fix``: audit, then apply the fixes marked safe (doctor ``--fix``);
- ``plan``: read, judge and say what would change (bootstrap ``--dry-run``);
- ``apply``: read, judge and change what differs (bootstrap).

A check that needs a resource (the bucket, the table) is not read when that
resource is missing; bootstrap then knows it will be set after creation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Literal, TypeVar

import botocore.exceptions

from statekeeper.awssetup.context import Aws, Target

__all__ = [
    "ABSENT",
    "Check",
    "Finding",
    "Mode",
    "Status",
    "aws_call",
    "run_checks",
]

Mode = Literal["audit", "fix", "plan", "apply"]
T = TypeVar("T")


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    #: An optional feature that is not in use, or a check that could not run.
    SKIP = "skip"


class _Absent:
    """The setting (or the resource holding it) does not exist."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Finding:
    """The outcome of one check (or one probe, for one subject).

    ``changed`` is what bootstrap or ``--fix`` did (or, in plan mode, would
    do); ``fix`` is what a person should do when it is still not right.
    """

    check: str
    status: Status
    summary: str
    fix: str = ""
    subject: str = ""
    changed: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "check": self.check,
            "subject": self.subject,
            "status": str(self.status),
            "summary": self.summary,
            "fix": self.fix,
            "changed": self.changed,
        }


def aws_call(
    action: str,
    resource: str,
    fn: Callable[..., T],
    /,
    *,
    absent: Iterable[str] = (),
    **kwargs: Any,
) -> T | Any:
    """Call boto3; error codes in ``absent`` give ABSENT, other errors become ours."""
    from statekeeper.storage.aws import _boto

    try:
        return fn(**kwargs)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        if _boto.error_code(exc) in set(absent):
            return ABSENT
        _boto.translate(exc, action, resource)


class Check(ABC):
    """One setting of one resource.

    Subclasses set ``id`` and ``title``, read the current value, say whether it
    is what the target wants, describe both, and apply the wanted value.
    """

    #: Stable ID, e.g. ``bucket.versioning``.
    id: str
    #: What "pass" means, e.g. "versioning is enabled".
    title: str
    #: The status when the setting is not as wanted.
    severity: Status = Status.FAIL
    #: Doctor ``--fix`` may apply it (it cannot break a working client or delete data).
    safe_fix: bool = True
    #: The resource that must exist before this check can be read ("bucket:NAME").
    needs: str | None = None
    #: The resource this check creates, if it is an existence check.
    creates: str | None = None

    def status_when_unsatisfied(self, target: Target) -> Status:
        """The status of a miss; SKIP marks an optional feature left off (never applied)."""
        return self.severity

    def applies(self, target: Target) -> bool:
        """False for optional features the target does not ask for."""
        return True

    @abstractmethod
    def read(self, aws: Aws, target: Target) -> Any:
        """The current value, or ABSENT."""

    @abstractmethod
    def satisfied(self, target: Target, current: Any) -> bool:
        """Whether ``current`` is good enough for the target."""

    @abstractmethod
    def describe(self, current: Any) -> str:
        """The current value in words, for the report."""

    @abstractmethod
    def change(self, target: Target, current: Any) -> str:
        """The change :meth:`apply` makes, in words ("enable versioning")."""

    @abstractmethod
    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        """Make the setting what the target wants."""

    def fix_hint(self, target: Target) -> str:
        """What a person should run or do when this check does not pass."""
        how = "statekeeper doctor --fix" if self.safe_fix else "statekeeper bootstrap"
        return f"{how} (it will {self.change(target, ABSENT)})"

    def skipped(self, target: Target) -> Finding | None:
        """The finding for a check that does not apply (None: say nothing)."""
        return None


def run_checks(checks: Sequence[Check], aws: Aws, target: Target, mode: Mode) -> list[Finding]:
    """Walk ``checks`` in order; see the module docstring for the modes."""
    findings: list[Finding] = []
    missing: set[str] = set()  # resources that do not exist (or will only after apply)
    for check in checks:
        if not check.applies(target):
            skipped = check.skipped(target)
            if skipped is not None:
                findings.append(skipped)
            continue
        if check.needs and check.needs in missing:
            findings.append(_without_resource(check, target, mode))
            continue
        current = check.read(aws, target)
        if check.satisfied(target, current):
            findings.append(Finding(check.id, Status.PASS, check.describe(current)))
            continue
        status = check.status_when_unsatisfied(target)
        finding = Finding(check.id, status, check.describe(current), fix=check.fix_hint(target))
        if status is Status.SKIP:
            findings.append(finding)
            continue
        may_apply = mode == "apply" or (mode == "fix" and check.safe_fix)
        if mode == "plan":
            finding = replace(finding, changed=check.change(target, current))
        elif may_apply:
            change = check.change(target, current)
            check.apply(aws, target, current)
            after = check.read(aws, target)
            if check.satisfied(target, after):
                finding = Finding(check.id, Status.PASS, check.describe(after), changed=change)
            else:  # the store accepted the change but does not report it back
                finding = replace(finding, summary=check.describe(after), changed=change)
        if check.creates and not (may_apply and finding.status is Status.PASS):
            missing.add(check.creates)
        findings.append(finding)
    return findings


def _without_resource(check: Check, target: Target, mode: Mode) -> Finding:
    resource = (check.needs or "").replace(":", " ")
    if mode == "plan" and check.status_when_unsatisfied(target) is not Status.SKIP:
        return Finding(
            check.id,
            check.status_when_unsatisfied(target),
            f"{resource} does not exist yet",
            changed=check.change(target, ABSENT),
        )
    return Finding(check.id, Status.SKIP, f"not checked: {resource} does not exist")

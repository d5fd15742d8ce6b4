"""How bootstrap and doctor reports look: one line per check, or stable JSON."""

from __future__ import annotations

from statekeeper.awssetup.backendblock import backend_block
from statekeeper.awssetup.bootstrap import BootstrapReport, serve_command
from statekeeper.awssetup.checks import Finding, Status
from statekeeper.awssetup.doctor import DoctorReport
from statekeeper.cli.output import err_console, print_json

__all__ = ["print_bootstrap", "print_doctor", "warn_unaudited"]


def warn_unaudited() -> None:
    """What a change to AWS recorded in no audit trail tells the operator."""
    err_console.print(
        "warning: no store was given, so these changes are in no audit trail; give "
        "--store (the servers' store) to record them there",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def _label(finding: Finding, done: str, dry_run: bool = False) -> str:
    if finding.changed:
        if dry_run:
            return "WOULD"
        return done if finding.status is Status.PASS else "TRIED"
    return {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}[str(finding.status)]


def _line(finding: Finding, width: int, done: str, dry_run: bool = False) -> list[str]:
    name = finding.check + (f" [{finding.subject}]" if finding.subject else "")
    lines = [f"{_label(finding, done, dry_run):<5}  {name:<{width}}  {finding.summary}"]
    pad = " " * (7 + width + 2)
    if finding.changed:
        verb = "would" if dry_run else "did"
        lines.append(f"{pad}{verb}: {finding.changed}")
    elif finding.status in (Status.WARN, Status.FAIL) and finding.fix:
        lines.append(f"{pad}fix: {finding.fix}")
    return lines


def _width(findings: list[Finding]) -> int:
    return max(
        (len(f.check) + (len(f.subject) + 3 if f.subject else 0) for f in findings), default=10
    )


def print_bootstrap(report: BootstrapReport, *, json_output: bool) -> None:
    if json_output:
        print_json(report.to_json())
        return
    t = report.target
    locks = f"DynamoDB table {t.table}" if t.table else "S3 lock files"
    print(f"Bucket s3://{t.bucket} in {t.region}, locks: {locks}")
    width = _width(report.findings)
    for finding in report.findings:
        for line in _line(finding, width, "SET", report.dry_run):
            print(line)
    changes = len(report.changes)
    if report.dry_run:
        print(
            f"\nDry run: {changes} change(s) would be made; nothing was changed."
            if changes
            else "\nDry run: nothing to change."
        )
    else:
        print(f"\n{changes} change(s) made." if changes else "\nNothing to change.")
    if report.unresolved:
        print(f"{len(report.unresolved)} setting(s) are still not as wanted (see above).")
    print("\nPaste this into your Terraform configuration (one key per state):\n")
    print(backend_block(t, report.terraform_version))
    print("Or serve the same bucket and locks over Terraform's http backend:\n")
    print(f"  {serve_command(t)}")


def print_doctor(report: DoctorReport, *, json_output: bool) -> None:
    if json_output:
        print_json(report.to_json())
        return
    width = _width(report.findings)
    for finding in report.findings:
        for line in _line(finding, width, "FIXED"):
            print(line)
    counts = report.counts()
    fixed = sum(1 for f in report.findings if f.changed and f.status is Status.PASS)
    summary = (
        f"\n{counts['fail']} failed, {counts['warn']} warning(s), {counts['pass']} passed, "
        f"{counts['skip']} skipped"
    )
    if report.fixed:
        summary += f"; {fixed} fixed"
    print(summary)

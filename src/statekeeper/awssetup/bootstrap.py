"""``bootstrap``: create or bring into line the bucket and table Terraform state lives in.

Walks the shared list of settings checks (:mod:`statekeeper.awssetup`)
in ``apply`` mode (or ``plan`` for a dry run) and renders what to paste next:
the ``backend "s3"`` block and the ``statekeeper serve`` command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from statekeeper.awssetup.backendblock import CURRENT_TERRAFORM, backend_block
from statekeeper.awssetup.bucket import bucket_region
from statekeeper.awssetup.catalog import settings_checks
from statekeeper.awssetup.checks import ABSENT, Finding, Status, aws_call, run_checks
from statekeeper.awssetup.context import Aws, Target
from statekeeper.errors import ConfigError
from statekeeper.events import Action, EventStream
from statekeeper.security.caller import Caller

__all__ = ["BootstrapReport", "bootstrap", "resolve_region", "serve_command"]


@dataclass(frozen=True)
class BootstrapReport:
    target: Target
    findings: list[Finding]
    dry_run: bool
    #: The Terraform release the printed backend block is for.
    terraform_version: str = CURRENT_TERRAFORM

    @property
    def changes(self) -> list[Finding]:
        return [f for f in self.findings if f.changed]

    @property
    def unresolved(self) -> list[Finding]:
        """Settings still not right after applying (never in a dry run)."""
        if self.dry_run:
            return []
        return [f for f in self.findings if f.status in (Status.FAIL, Status.WARN)]

    def to_json(self) -> dict[str, object]:
        return {
            "bucket": self.target.bucket,
            "table": self.target.table,
            "region": self.target.region,
            "dry_run": self.dry_run,
            "changed": bool(self.changes),
            "checks": [f.to_json() for f in self.findings],
            "terraform_version": self.terraform_version,
            "backend_block": backend_block(self.target, self.terraform_version),
            "serve_command": serve_command(self.target),
        }


def resolve_region(aws: Aws, bucket: str, region: str | None) -> str:
    """The region to work in: as given, else an existing bucket's, else boto3's default.

    A bucket that exists in another region than the one given is an error:
    buckets cannot move.
    """
    probe_region = region or aws.default_region()
    found = bucket_region(aws, bucket, probe_region)
    if found is ABSENT:
        return probe_region
    if region is not None and found != region:
        raise ConfigError(
            f"bucket {bucket} already exists in {found}, not {region}; pass --region {found} "
            "(a bucket cannot move between regions)"
        )
    return str(found)


def check_kms_key(aws: Aws, key: str, region: str) -> None:
    """Fail early, naming the key, when it does not exist in the region."""
    got = aws_call(
        "kms:DescribeKey",
        f"KMS key {key}",
        aws.client("kms", region).describe_key,
        KeyId=key,
        absent=("NotFoundException",),
    )
    if got is ABSENT:
        raise ConfigError(
            f"the KMS key {key} does not exist in {region}; create it or fix --kms-key"
        )


def bootstrap(
    aws: Aws,
    target: Target,
    events: EventStream,
    caller: Caller,
    *,
    dry_run: bool = False,
    terraform_version: str = CURRENT_TERRAFORM,
) -> BootstrapReport:
    """Create or fix every setting (``dry_run``: only say what would change).

    ``target.table`` None means lock files only (``--lockfile``). Records one
    ``bootstrap`` event naming every setting changed; a dry run changes nothing
    and records nothing.
    """
    target.validate()
    if dry_run:
        return _bootstrap(aws, target, dry_run, terraform_version)
    with events.event(Action.BOOTSTRAP, caller) as event:
        event.detail = f"{describe_target(target)}: started"  # what a failure had in hand
        report = _bootstrap(aws, target, dry_run, terraform_version)
        event.detail = changes_detail(target, report.changes)
        return report


def _bootstrap(aws: Aws, target: Target, dry_run: bool, terraform_version: str) -> BootstrapReport:
    if target.kms_key:
        check_kms_key(aws, target.kms_key, target.region)
    replica = target.replica
    if replica is not None and replica.kms_key:
        check_kms_key(aws, replica.kms_key, replica.region)
    findings = run_checks(settings_checks(target), aws, target, "plan" if dry_run else "apply")
    return BootstrapReport(target, findings, dry_run, terraform_version)


def describe_target(target: Target) -> str:
    table = f"table {target.table}" if target.table else "lock files only"
    return f"bucket {target.bucket}, {table}, in {target.region}"


def changes_detail(target: Target, changes: list[Finding]) -> str:
    """An event's detail: the target and the checks whose setting was changed."""
    changed = ", ".join(f.check for f in changes) or "nothing (already in line)"
    return f"{describe_target(target)}: changed {changed}"


def serve_command(target: Target) -> str:
    """The ``statekeeper serve`` command line that shares the bucket and both locks.

    ``sse`` is given to the store and the lock files alike: the bucket policy
    refuses uploads that do not ask for server-side encryption.
    """
    query = f"region={target.region}&sse=" + ("aws%3Akms" if target.kms_key else "AES256")
    if target.kms_key:
        query += f"&kms_key_id={quote(target.kms_key, safe='')}"
    parts = ["statekeeper serve", f"--store 's3://{target.bucket}?{query}'"]
    if target.table is not None:
        parts.append(f"--locks 'dynamodb://{target.table}?region={target.region}'")
    parts.append(f"--locks 's3lock://{target.bucket}?{query}'")
    return " ".join(parts)

"""``statekeeper bootstrap``: create the S3 bucket and DynamoDB table for Terraform state."""

from __future__ import annotations

from typing import Annotated

import typer

from statekeeper.cli.commands import JsonFlag, app
from statekeeper.cli.context import local_caller, obj
from statekeeper.cli.options import PANEL_AWS, STORE

__all__ = ["bootstrap"]


@app.command(rich_help_panel=PANEL_AWS)
def bootstrap(
    ctx: typer.Context,
    bucket: Annotated[str, typer.Option(help="State bucket to create or bring into line")],
    table: Annotated[
        str | None,
        typer.Option(help="DynamoDB lock table \\[default: BUCKET-locks unless --lockfile]"),
    ] = None,
    lockfile: Annotated[
        bool, typer.Option("--lockfile", help="Lock with S3 lock files only; no table")
    ] = False,
    region: Annotated[
        str | None, typer.Option(help="AWS region \\[default: the bucket's, else boto3's]")
    ] = None,
    kms_key: Annotated[
        str | None, typer.Option(help="KMS key ARN or alias for SSE-KMS \\[default: SSE-S3]")
    ] = None,
    noncurrent_days: Annotated[
        int | None,
        typer.Option(help="Expire noncurrent state versions after N days \\[default: 90]"),
    ] = None,
    log_bucket: Annotated[
        str | None, typer.Option(help="Existing bucket (same region) for S3 access logs")
    ] = None,
    replica_region: Annotated[
        str | None, typer.Option(help="Replicate every version to a bucket in this region")
    ] = None,
    replica_bucket: Annotated[
        str | None, typer.Option(help="Replica bucket name \\[default: BUCKET-replica]")
    ] = None,
    replica_kms_key: Annotated[
        str | None, typer.Option(help="KMS key in the replica region (needed with --kms-key)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the changes without making them")
    ] = False,
    terraform_version: Annotated[
        str | None,
        typer.Option(
            help="Terraform version the printed backend block is for: 1.11 and later lock with "
            "S3 lock files only, 1.10 with both, older with the DynamoDB table "
            "\\[default: the current release]",
        ),
    ] = None,
    profile: Annotated[str | None, typer.Option(help="AWS profile")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Create or bring into line the bucket and lock table of a backend "s3".

    Idempotent: a second run changes nothing. Prints the backend block and the
    statekeeper serve command line to use them. What it changed is recorded in
    the audit trail of the store the global options name (a bootstrap event).
    """
    # Talks to AWS directly; what it changed is recorded in the configured store's trail.
    cli = obj(ctx, STORE)
    from statekeeper.awssetup.backendblock import CURRENT_TERRAFORM, backend_block
    from statekeeper.awssetup.bootstrap import bootstrap as run_bootstrap
    from statekeeper.awssetup.bootstrap import resolve_region
    from statekeeper.awssetup.context import Aws, Target
    from statekeeper.cli.awsreport import print_bootstrap, warn_unaudited
    from statekeeper.errors import BadRequest

    terraform_version = terraform_version or CURRENT_TERRAFORM
    # The block is checked before anything is created: --lockfile for Terraform < 1.10
    # is refused up front.
    backend_block(
        Target(bucket=bucket, region=region or "us-east-1", table=None if lockfile else "t"),
        terraform_version,
    )
    if lockfile and table:
        raise BadRequest("--table and --lockfile exclude each other: choose one way to lock")
    aws = Aws(profile=profile)
    Target(bucket=bucket, region=region or "us-east-1").validate()  # names before any call
    resolved = resolve_region(aws, bucket, region)
    target = Target(
        bucket=bucket,
        region=resolved,
        table=None if lockfile else (table or f"{bucket}-locks"),
        kms_key=kms_key,
        noncurrent_days=noncurrent_days,
        log_bucket=log_bucket,
        replica_region=replica_region,
        replica_bucket=replica_bucket,
        replica_kms_key=replica_kms_key,
    )
    events, audited = cli.store_events()
    report = run_bootstrap(
        aws,
        target,
        events,
        local_caller(),
        dry_run=dry_run,
        terraform_version=terraform_version,
    )
    print_bootstrap(report, json_output=json_output)
    if not dry_run and not audited:
        warn_unaudited()
    if report.unresolved:
        raise typer.Exit(1)

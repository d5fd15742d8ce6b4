"""``statekeeper doctor``: audit the state bucket and lock table, and fix what is safe."""

from __future__ import annotations

from typing import Annotated

import typer

from statekeeper.cli.commands import JsonFlag, app
from statekeeper.cli.context import local_caller, obj
from statekeeper.cli.options import PANEL_AWS, STORE

__all__ = ["doctor"]


@app.command(rich_help_panel=PANEL_AWS)
def doctor(
    ctx: typer.Context,
    bucket: Annotated[str, typer.Option(help="State bucket to audit")],
    table: Annotated[str | None, typer.Option(help="DynamoDB lock table")] = None,
    region: Annotated[
        str | None, typer.Option(help="AWS region \\[default: the bucket's, else boto3's]")
    ] = None,
    fix: Annotated[
        bool,
        typer.Option("--fix", help="Apply the safe fixes (never deletes locks) and report each"),
    ] = False,
    json_output: JsonFlag = False,
    stale_after: Annotated[
        str, typer.Option(help="Report locks older than this (30m, 2h, 1d, 1w, 1h30m)")
    ] = "2h",
    probes: Annotated[
        bool,
        typer.Option(
            "--probes/--no-probes",
            help="Run the write probe (writes and removes a .statekeeper-doctor/ object); "
            "the read-only data checks run either way",
        ),
    ] = True,
    skip: Annotated[
        list[str] | None,
        typer.Option(help="Skip checks whose ID matches this glob (repeatable)"),
    ] = None,
    profile: Annotated[str | None, typer.Option(help="AWS profile")] = None,
) -> None:
    """Check the bucket, the lock table and the states in them, with the fix for each.

    One line per check: pass, warn or fail. Exit 1 when anything fails.
    """
    # Talks to AWS directly; the config file brings the [history] rules to compare, and
    # the fixes are recorded in the configured store's trail.
    cli = obj(ctx, STORE)
    from statekeeper.awssetup.bootstrap import resolve_region
    from statekeeper.awssetup.context import Aws, Target
    from statekeeper.awssetup.doctor import doctor as run_doctor
    from statekeeper.cli.awsreport import print_doctor, warn_unaudited
    from statekeeper.times import parse_duration

    threshold = parse_duration(stale_after, what="--stale-after")
    Target(bucket=bucket, region=region or "us-east-1", table=table).validate()
    aws = Aws(profile=profile)
    resolved = resolve_region(aws, bucket, region)
    target = Target(bucket=bucket, region=resolved, table=table)
    events, audited = cli.store_events()
    report = run_doctor(
        aws,
        target,
        events,
        local_caller(),
        fix=fix,
        stale_after=threshold,
        probes=probes,
        skip=skip or (),
        history=cli.settings().history,
    )
    print_doctor(report, json_output=json_output)
    if fix and not audited:
        warn_unaudited()
    if not report.ok:
        raise typer.Exit(1)

"""``statekeeper iam-policy``: print the least-privilege IAM policy for a state bucket."""

from __future__ import annotations

from typing import Annotated

import typer

from statekeeper.cli.commands import app
from statekeeper.cli.context import obj
from statekeeper.cli.options import PANEL_AWS

__all__ = ["iam_policy"]


@app.command("iam-policy", rich_help_panel=PANEL_AWS)
def iam_policy(
    ctx: typer.Context,
    bucket: Annotated[str, typer.Option(help="State bucket")],
    prefix: Annotated[str, typer.Option(help="Only states whose keys start with this")] = "",
    table: Annotated[str | None, typer.Option(help="DynamoDB lock table")] = None,
    kms_key: Annotated[str | None, typer.Option(help="KMS key ARN, ID or alias")] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Read states and locks only")
    ] = False,
    allow_delete: Annotated[
        bool,
        typer.Option("--allow-delete", help="Also delete states (terraform workspace delete)"),
    ] = False,
    region: Annotated[
        str | None, typer.Option(help="Region in the table/key ARNs \\[default: *]")
    ] = None,
    account: Annotated[
        str | None, typer.Option(help="Account ID in the table/key ARNs \\[default: *]")
    ] = None,
) -> None:
    """Print the least-privilege IAM policy for Terraform and statekeeper serve.

    s3:DeleteObject is granted only on lock files unless --allow-delete.
    """
    obj(ctx, frozenset())  # talks to AWS (or prints) directly: no global option applies
    from statekeeper.awssetup.iam import iam_policy as build
    from statekeeper.cli.output import print_json

    print_json(
        build(
            bucket,
            prefix=prefix,
            table=table,
            kms_key=kms_key,
            read_only=read_only,
            region=region,
            account=account,
            allow_delete=allow_delete,
        )
    )

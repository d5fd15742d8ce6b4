"""``statekeeper token``: create, list and revoke API tokens.

On the configured store (the embedded database) or in the tokens file
(``--tokens-file``) as ``user@host``; with ``--server``, through the server's
``/api/v1/tokens`` as the admin the ``--token`` names. Every change is audited.
"""

from __future__ import annotations

from typing import Annotated

import typer

from statekeeper.cli.commands import JsonFlag, app
from statekeeper.cli.context import obj
from statekeeper.cli.options import ACCESS, PANEL_SECURITY
from statekeeper.security.policy import Permission

__all__ = ["token_app"]

token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token", rich_help_panel=PANEL_SECURITY)


@token_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Token name: the username in the backend block")
    ],
    scope: Annotated[
        list[str],
        typer.Option(
            help="Grant PATTERN:PERMISSION ("
            + ", ".join(p.name.lower() for p in Permission)
            + "); repeatable"
        ),
    ],
    expires: Annotated[
        str | None, typer.Option(help="Lifetime: 90d, 12h, 2w, 1d12h (units w d h m s)")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a token; its secret is printed once and never stored."""
    from statekeeper.cli.admin import admin_for
    from statekeeper.cli.output import console, err_console, print_view
    from statekeeper.times import parse_duration, parse_rfc3339

    if expires:
        parse_duration(expires, what="--expires")  # refused before anything is opened
    admin = admin_for(obj(ctx, ACCESS))
    issued = admin.create_token(name, scope, expires)
    if as_json:
        print_view(issued)
        return
    until = issued.expires
    err_console.print(
        f"created token {issued.name} with "
        + ", ".join(issued.scopes)
        + (f", expiring {parse_rfc3339(until):%Y-%m-%d %H:%M} UTC" if until else ""),
        highlight=False,
        markup=False,
    )
    if not admin.audited:
        err_console.print(
            "warning: no store was given, so this change is in no audit trail; give "
            "--store (the servers' store) to record it there",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    err_console.print("The secret is shown only now; keep it in your CI's secret store:")
    console.print(issued.secret, highlight=False, soft_wrap=True, markup=False)
    err_console.print(
        f'In the backend block: username = "{issued.name}", password = the secret '
        "(or TF_HTTP_USERNAME / TF_HTTP_PASSWORD).",
        highlight=False,
        markup=False,
    )


@token_app.command("list")
def list_tokens(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List tokens: names, grants, creation and expiry (never secrets)."""
    from statekeeper.cli.admin import admin_for
    from statekeeper.cli.output import print_view
    from statekeeper.cli.render import print_table, when
    from statekeeper.times import parse_rfc3339, utcnow

    records = admin_for(obj(ctx, ACCESS)).tokens()
    if as_json:
        print_view(records)
        return
    rows = []
    for r in records:
        expired = r.expires is not None and parse_rfc3339(r.expires) <= utcnow()
        rows.append(
            [
                r.name,
                " ".join(r.scopes),
                when(r.created),
                ("expired " if expired else "") + (when(r.expires) if r.expires else "never"),
            ]
        )
    print_table(["NAME", "SCOPES", "CREATED", "EXPIRES"], rows)


@token_app.command("revoke")
def revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Token name")],
) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    from statekeeper.cli.admin import admin_for
    from statekeeper.cli.output import err_console

    admin_for(obj(ctx, ACCESS)).revoke_token(name)
    err_console.print(f"revoked token {name}", highlight=False, markup=False)

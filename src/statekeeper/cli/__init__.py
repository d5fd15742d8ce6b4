"""The ``statekeeper`` command. The only place exceptions become exit codes.

Each command group lives in its own module and is a thin call into services;
heavy imports (the server, boto3, httpx) happen inside the commands that need
them. Exit codes: 0 ok, 1 failure, 2 usage or configuration, 3 a lock held by
someone else.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer._click.core import Context as ClickContext
from typer.core import TyperGroup

from statekeeper.errors import StatekeeperError

__all__ = ["app", "main"]


class _Statekeeper(TyperGroup):
    """The root group: a StatekeeperError from any command becomes its exit code here."""

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except StatekeeperError as exc:
            from statekeeper.cli.output import print_error

            print_error(exc)
            raise typer.Exit(exc.exit_code) from exc


app = typer.Typer(
    name="statekeeper",
    cls=_Statekeeper,
    help="Remote state for Terraform and OpenTofu: a state server and an operator CLI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    store: Annotated[
        str | None,
        typer.Option(
            help="Store URL: sqlite:///…, s3://BUCKET/PREFIX (env: STATEKEEPER_STORE; "
            "default: SQLite in ./.statekeeper)",
            show_default=False,
        ),
    ] = None,
    locks: Annotated[
        list[str] | None,
        typer.Option(
            help="Lock URL: dynamodb://TABLE, s3lock://BUCKET/PREFIX; give twice for both "
            "(env: STATEKEEPER_LOCKS, comma-separated; default: the store's database)",
            show_default=False,
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            envvar="STATEKEEPER_SERVER",
            help="Go through a running statekeeper server's API (http://HOST:PORT) "
            "instead of opening a store",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="STATEKEEPER_TOKEN",
            help="Bearer token for --server",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Directory of the embedded store (default: ./.statekeeper)"),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file")] = None,
) -> None:
    """Remote state for Terraform and OpenTofu: a state server and an operator CLI."""
    from statekeeper.cli.context import CliContext

    ctx.obj = CliContext(
        store=store,
        locks=",".join(locks) if locks else None,
        server=server,
        token=token,
        data_dir=data_dir,
        config=config,
    )
    ctx.call_on_close(ctx.obj.close)


# Command modules register themselves on ``app``.
from statekeeper.cli import audit as _audit  # noqa: E402, F401
from statekeeper.cli import bootstrap as _bootstrap  # noqa: E402, F401
from statekeeper.cli import doctor as _doctor  # noqa: E402, F401
from statekeeper.cli import history as _history  # noqa: E402, F401
from statekeeper.cli import iam as _iam  # noqa: E402, F401
from statekeeper.cli import locks as _locks  # noqa: E402, F401
from statekeeper.cli import migrate as _migrate  # noqa: E402, F401
from statekeeper.cli import search as _search  # noqa: E402, F401
from statekeeper.cli import serve as _serve  # noqa: E402, F401
from statekeeper.cli import states as _states  # noqa: E402, F401
from statekeeper.cli import token as _token  # noqa: E402, F401


def main() -> None:
    """Run the CLI (usage errors are typer's own: exit 2)."""
    try:
        app()
    except StatekeeperError as exc:  # raised outside a command (none expected)
        from statekeeper.cli.output import print_error

        print_error(exc)
        sys.exit(exc.exit_code)

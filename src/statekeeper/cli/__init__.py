"""The ``statekeeper`` command. The only place exceptions become exit codes.

Each command group lives in its own module and is a thin call into services;
heavy imports (the server, boto3, httpx) happen inside the commands that need
them. Exit codes: 0 ok, 1 failure, 2 usage or configuration, 3 a lock held by
someone else.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer._click.core import Context as ClickContext
from typer._click.core import ParameterSource
from typer.core import TyperGroup

from statekeeper.cli.options import (
    GLOBAL_FLAGS,
    ConfigOpt,
    DataDirOpt,
    LocksOpt,
    ServerOpt,
    StoreOpt,
    TokenOpt,
    TokensFileOpt,
    hoist,
)
from statekeeper.errors import StatekeeperError

__all__ = ["app", "main"]


class _Statekeeper(TyperGroup):
    """The root group: global options anywhere on the line, and a StatekeeperError from
    any command becomes its exit code here."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist(args))

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
    store: StoreOpt = None,
    locks: LocksOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    tokens_file: TokensFileOpt = None,
) -> None:
    """Remote state for Terraform and OpenTofu: a state server and an operator CLI.

    The global options may come before or after the command name.
    """
    from statekeeper.cli.context import CliContext

    given = frozenset(
        name
        for name in GLOBAL_FLAGS.values()
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    )
    ctx.obj = CliContext(
        store=store,
        locks=",".join(locks) if locks else None,
        server=server,
        token=token,
        data_dir=data_dir,
        config=config,
        tokens_file=tokens_file,
        given=given,
    )
    ctx.call_on_close(ctx.obj.close)


# Command modules register themselves on ``app``, in the order --help shows them:
# server, states, locks, AWS setup, security.
# isort: off
from statekeeper.cli import serve as _serve  # noqa: E402, F401
from statekeeper.cli import states as _states  # noqa: E402, F401
from statekeeper.cli import search as _search  # noqa: E402, F401
from statekeeper.cli import history as _history  # noqa: E402, F401
from statekeeper.cli import migrate as _migrate  # noqa: E402, F401
from statekeeper.cli import locks as _locks  # noqa: E402, F401
from statekeeper.cli import bootstrap as _bootstrap  # noqa: E402, F401
from statekeeper.cli import doctor as _doctor  # noqa: E402, F401
from statekeeper.cli import iam as _iam  # noqa: E402, F401
from statekeeper.cli import token as _token  # noqa: E402, F401
from statekeeper.cli import audit as _audit  # noqa: E402, F401
from statekeeper.cli import hooks as _hooks  # noqa: E402, F401
from statekeeper.cli import hygiene as _hygiene  # noqa: E402, F401
# isort: on


def main() -> None:
    """Run the CLI (usage errors are typer's own: exit 2)."""
    try:
        app()
    except StatekeeperError as exc:  # raised outside a command (none expected)
        from statekeeper.cli.output import print_error

        print_error(exc)
        sys.exit(exc.exit_code)

"""The ``statekeeper`` command. The only place exceptions become exit codes.

Each command group lives in its own module and is a thin call into services;
heavy imports (the server, boto3) happen inside the commands that need them.
"""

from __future__ import annotations

import sys

import typer

from statekeeper.errors import StatekeeperError

__all__ = ["app", "main"]

app = typer.Typer(
    name="statekeeper",
    help="Remote state for Terraform and OpenTofu: a state server and an operator CLI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Remote state for Terraform and OpenTofu: a state server and an operator CLI."""


# Command modules register themselves on ``app``.
from statekeeper.cli import audit as _audit  # noqa: E402, F401
from statekeeper.cli import bootstrap as _bootstrap  # noqa: E402, F401
from statekeeper.cli import doctor as _doctor  # noqa: E402, F401
from statekeeper.cli import iam as _iam  # noqa: E402, F401
from statekeeper.cli import serve as _serve  # noqa: E402, F401
from statekeeper.cli import token as _token  # noqa: E402, F401


def main() -> None:
    """Run the CLI: 0 ok, 1 failure, 2 usage or configuration, 3 lock held by someone else."""
    try:
        app()  # typer handles usage errors itself (exit 2)
    except StatekeeperError as exc:
        from statekeeper.cli.output import print_error

        print_error(exc)
        sys.exit(exc.exit_code)

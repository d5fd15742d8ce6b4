"""Where the commands written with typer register, and how the root runs one.

A command module does ``@app.command(...)`` or ``app.add_typer(...)`` here; it
is imported only when the root (:mod:`statekeeper.cli`) runs one of its
commands, so typer and rich stay out of ``statekeeper --help`` and of the
click commands. The root has already parsed the global options: they reach the
command as ``ctx.obj`` (:func:`statekeeper.cli.context.obj`).
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer
import typer.main
from typer._click.core import Command as ClickCommand
from typer._click.core import Context as ClickContext
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.core import TyperGroup

from statekeeper.cli.options import JSON_HELP
from statekeeper.errors import StatekeeperError

__all__ = ["JsonFlag", "app", "group", "run"]

JsonFlag = Annotated[bool, typer.Option("--json", help=JSON_HELP)]


class _Commands(TyperGroup):
    """The typer commands, under the root: a StatekeeperError from any of them
    becomes its exit code here, and so does a usage error off a terminal."""

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except StatekeeperError as exc:
            from statekeeper.cli.output import print_error

            print_error(exc)
            raise typer.Exit(exc.exit_code) from exc
        except ClickException as exc:
            from statekeeper.cli.output import err_console

            # On a terminal typer draws it in a box as wide as the window; a command
            # given no arguments has had its help printed, which is all typer shows.
            if err_console.is_terminal or isinstance(exc, NoArgsIsHelpError):
                raise
            # Off a terminal typer's box is 80 columns and wraps the message inside it:
            # click's own lines instead, "Error: ..." on one, as the root's usage errors.
            exc.show()
            raise typer.Exit(exc.exit_code) from exc


app = typer.Typer(
    cls=_Commands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _commands() -> None:
    # A callback keeps the commands a group even while one module alone is loaded.
    pass


def _reflow(command: ClickCommand) -> None:
    # A docstring's paragraphs are wrapped in the source, and typer's rich help keeps
    # those line breaks: at any other width they break lines mid-sentence, and a first
    # paragraph of several lines breaks the row of the group's listing. One line per
    # paragraph, which rich wraps to the window.
    if command.help:
        paragraphs = inspect.cleandoc(command.help).split("\n\n")
        command.help = "\n\n".join(" ".join(p.split()) for p in paragraphs)
    for sub in getattr(command, "commands", {}).values():
        _reflow(sub)


def group() -> ClickCommand:
    """The typer commands as click runs them and prints their help."""
    command = typer.main.get_command(app)
    _reflow(command)
    return command


def run(prog_name: str, name: str, args: list[str], obj: object) -> None:
    """Run command ``name`` with ``args`` (it exits: typer's standalone mode, usage
    errors exit 2), as ``prog_name name`` in its usage lines."""
    group().main([name, *args], prog_name=prog_name, obj=obj)

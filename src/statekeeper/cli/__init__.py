"""The ``statekeeper`` command. The only place exceptions become exit codes.

The root group is plain click and loads a command's module only when that
command runs (or its own ``--help`` is asked for): ``statekeeper --help`` is
printed from :data:`COMMANDS`, the table below, without importing any command,
typer or rich. Most commands are written with typer and registered on
:mod:`statekeeper.cli.commands`, which the root hands their arguments to; typer
alone costs more start-up than the whole root, so ``locks`` and ``unlock`` (the
scripting path, run in loops) are click commands the root runs directly. Heavy
imports (the server, boto3, httpx, pydantic) happen inside the commands that
need them. Exit codes: 0 ok, 1 failure, 2 usage or configuration, 3 a lock held
by someone else.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from statekeeper.cli.options import (
    GLOBAL_OPTIONS,
    GLOBAL_PANEL,
    PANEL_AWS,
    PANEL_LOCKS,
    PANEL_SECURITY,
    PANEL_SERVER,
    PANEL_STATES,
    hoist,
)
from statekeeper.errors import StatekeeperError

__all__ = ["COMMANDS", "app", "main", "resolve"]

HELP = "Remote state for Terraform and OpenTofu: a state server and an operator CLI."


@dataclass(frozen=True)
class Entry:
    """A command as the root knows it before loading it."""

    module: str  # statekeeper.cli.<module> defines it
    panel: str
    short_help: str  # the first paragraph of its help (a test keeps the two equal)
    typer: bool = True  # registered on statekeeper.cli.commands; else a click command


# In the order ``--help`` shows them: server, states, locks, AWS setup, security.
COMMANDS: dict[str, Entry] = {
    "serve": Entry(
        "serve",
        PANEL_SERVER,
        "Serve Terraform's http backend on /state/NAME (embedded SQLite by default).",
    ),
    "hooks": Entry(
        "hooks",
        PANEL_SERVER,
        "Webhooks on state events: add, list, remove, test, deliveries, redeliver.",
    ),
    "states": Entry(
        "states",
        PANEL_STATES,
        "List every state, workspace states (env:/WORKSPACE/KEY) included, with its lock.",
    ),
    "show": Entry(
        "states", PANEL_STATES, "Show one version of a state: its facts, resources and outputs."
    ),
    "pull": Entry("states", PANEL_STATES, "Print (or save) a state's bytes exactly as stored."),
    "push": Entry(
        "states",
        PANEL_STATES,
        "Upload a state file as the new version, under the lock (Operation state-push).",
    ),
    "search": Entry(
        "search",
        PANEL_STATES,
        "Find which state manages a resource: search every state's resources and values.",
    ),
    "history": Entry(
        "history",
        PANEL_STATES,
        "List a state's versions, newest first, with the resources each one changed.",
    ),
    "diff": Entry(
        "history",
        PANEL_STATES,
        "Show what changed between two versions: instances, attribute paths, outputs.",
    ),
    "rollback": Entry(
        "history",
        PANEL_STATES,
        "Restore an old version's content as a new version (serial = current + 1).",
    ),
    "prune": Entry(
        "hygiene",
        PANEL_STATES,
        "Remove the versions the history retention rules let go (never a current one).",
    ),
    "delete": Entry(
        "hygiene",
        PANEL_STATES,
        "Delete a state; it stays in the trash, restorable, for history.trash.",
    ),
    "trash": Entry(
        "hygiene",
        PANEL_STATES,
        "Deleted states, restorable for history.trash (30 days by default).",
    ),
    "migrate": Entry(
        "migrate",
        PANEL_STATES,
        "Copy states between two stores, byte for byte, under the destination's locks.",
    ),
    "unlock": Entry(
        "locks",
        PANEL_LOCKS,
        "Remove a state's lock, like terraform force-unlock; the removal is audited.",
        typer=False,
    ),
    "locks": Entry(
        "locks",
        PANEL_LOCKS,
        "List held locks, DynamoDB items and S3 lock files alike.",
        typer=False,
    ),
    "bootstrap": Entry(
        "bootstrap",
        PANEL_AWS,
        'Create or bring into line the bucket and lock table of a backend "s3".',
    ),
    "doctor": Entry(
        "doctor",
        PANEL_AWS,
        "Check the bucket, the lock table and the states in them, with the fix for each.",
    ),
    "iam-policy": Entry(
        "iam",
        PANEL_AWS,
        "Print the least-privilege IAM policy for Terraform and statekeeper serve.",
    ),
    "audit": Entry(
        "audit",
        PANEL_SECURITY,
        "Show the audit trail of the store (with --server, the server's), oldest first.",
    ),
    "token": Entry("token", PANEL_SECURITY, "Create, list and revoke API tokens."),
    "encryption": Entry(
        "audit", PANEL_SECURITY, "Encryption at rest: status, key rotation, offline decryption."
    ),
}


def resolve(name: str) -> Any:
    """Command ``name`` itself, typer's or click's (loading its module): what its own
    ``--help`` is printed from. The docs tests read each command's options here."""
    entry = COMMANDS[name]
    module = importlib.import_module(f"statekeeper.cli.{entry.module}")
    if entry.typer:
        from statekeeper.cli.commands import group

        return group().commands[name]  # type: ignore[attr-defined]
    return getattr(module, name.replace("-", "_"))


class _TyperCommand(click.Command):
    """A command written with typer: the root hands it its arguments, help included."""

    def __init__(self, name: str, entry: Entry) -> None:
        super().__init__(name, help=entry.short_help, add_help_option=False)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.args = list(args)
        return []

    def invoke(self, ctx: click.Context) -> Any:
        from statekeeper.cli.commands import run

        assert ctx.parent is not None and ctx.parent.info_name is not None
        run(ctx.parent.info_name, ctx.info_name or "", ctx.args, ctx.find_root().obj)


class _Root(click.Group):
    """Global options anywhere on the line, commands loaded when used, and a
    StatekeeperError from a click command becomes its exit code here (typer
    commands have the same in :mod:`statekeeper.cli.commands`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist(args))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        if entry.typer:
            importlib.import_module(f"statekeeper.cli.{entry.module}")
            return _TyperCommand(cmd_name, entry)
        command = resolve(cmd_name)
        assert isinstance(command, click.Command), cmd_name
        return command

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from statekeeper.cli.roothelp import render

        # The options are this group's; the command panels come from the table.
        # The help option is in its own box ("Options") above the global ones.
        shown = self.get_help_option(ctx)
        params = [p for p in self.get_params(ctx) if isinstance(p, click.Option) and p is not shown]
        options = [(p.opts[0], p.help or "") for p in params]
        panels: dict[str, list[tuple[str, str]]] = {}
        for name, entry in COMMANDS.items():
            panels.setdefault(entry.panel, []).append((name, entry.short_help))
        usage = f"{ctx.command_path} {' '.join(self.collect_usage_pieces(ctx))}"
        formatter.write(render(usage, HELP, options, GLOBAL_PANEL, panels))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StatekeeperError as exc:
            from statekeeper.cli.output import print_error

            print_error(exc)
            raise click.exceptions.Exit(exc.exit_code) from exc


def _option(kind: str) -> dict[str, Any]:
    if kind == "path":
        return {"type": click.Path(path_type=Path)}
    if kind == "list":
        return {"multiple": True}
    return {}


def _global_options(f: Any) -> Any:
    for o in reversed(GLOBAL_OPTIONS):
        option = click.option(
            o.flag,
            o.field,
            help=o.help,
            envvar=o.envvar,
            **_option(o.kind),
        )
        f = option(f)
    return f


@click.group(
    "statekeeper",
    cls=_Root,
    help=HELP,
    no_args_is_help=True,
)
@_global_options
@click.pass_context
def app(ctx: click.Context, /, **options: Any) -> None:
    from statekeeper.cli.context import CliContext

    given = frozenset(
        o.field
        for o in GLOBAL_OPTIONS
        if ctx.get_parameter_source(o.field) is ParameterSource.COMMANDLINE
    )
    locks = options.pop("locks")
    ctx.obj = CliContext(**options, locks=",".join(locks) if locks else None, given=given)
    ctx.call_on_close(ctx.obj.close)


def main() -> None:
    """Run the CLI (usage errors are click's own: exit 2)."""
    try:
        app()
    except StatekeeperError as exc:  # raised outside a command (none expected)
        from statekeeper.cli.output import print_error

        print_error(exc)
        sys.exit(exc.exit_code)

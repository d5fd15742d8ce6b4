"""``locks [PREFIX]``, ``locks reap`` and ``unlock``: who holds what, and removing it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from typer._click.core import Context as ClickContext
from typer.core import TyperGroup

from statekeeper.cli import app
from statekeeper.cli.context import obj
from statekeeper.cli.options import OPERATOR, PANEL_LOCKS, JsonFlag
from statekeeper.cli.output import console, err_console, escape, print_view
from statekeeper.cli.render import age, print_table, when
from statekeeper.terraform.layout import LOCK_FILE_SUFFIX
from statekeeper.terraform.names import StateName

if TYPE_CHECKING:
    from statekeeper.state.views import Release

__all__ = ["locks_app", "unlock"]


class _LocksGroup(TyperGroup):
    """``locks PREFIX`` lists, ``locks reap …`` reaps: a first word that is no subcommand
    is the prefix (so a prefix cannot be the word ``reap``)."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            ctx.meta["locks_prefix"] = args[0]
            args = args[1:]
        return super().parse_args(ctx, args)


locks_app = typer.Typer(
    cls=_LocksGroup,
    invoke_without_command=True,
    no_args_is_help=False,
    help=f"List held locks (DynamoDB items and {LOCK_FILE_SUFFIX} files alike); "
    "'locks reap' removes stale ones.",
)
app.add_typer(locks_app, name="locks", rich_help_panel=PANEL_LOCKS)


def _print_releases(rows: list[Release], dry_run: bool) -> None:
    verb = "would remove" if dry_run else "removed"
    for r in rows:
        console.print(
            f"{verb} lock {r.id} on {r.name}: {r.operation or '?'} by "
            f"{r.who or '?'}, age {age(r.age_seconds)}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


@locks_app.callback()
def locks(
    ctx: typer.Context,
    json_out: JsonFlag = False,
) -> None:
    """List every held lock under PREFIX with ID, operation, who and age.

    With both lock kinds configured (use_lockfile and dynamodb_table), a state
    locked in one and not the other is flagged as a dual-lock drift.
    """
    if ctx.invoked_subcommand is not None:
        return
    prefix = str(ctx.meta.get("locks_prefix", ""))
    rows = obj(ctx, OPERATOR).backend().list_locks(prefix)
    if json_out:
        print_view(rows)
        return
    if not rows:
        err_console.print(f"no locks held{f' under {prefix!r}' if prefix else ''}")
        return
    cells = []
    for r in rows:
        kind = "+".join(r.kinds)
        if r.drift:
            kind += f" (drift: not in {'+'.join(r.missing)})"
        cells.append(
            [
                r.name,
                "DAMAGED" if r.damaged else r.id,
                r.operation or "-",
                r.who or "-",
                when(r.created),
                # An age from the client's clock (Terraform's own backend wrote the lock).
                age(r.age_seconds) + (" (client clock)" if r.age_source == "client" else ""),
                kind,
                # A plan sharing the lock; "beside": not the one Terraform sees.
                r.mode + ("" if r.primary else " (beside)"),
            ]
        )
    print_table(["NAME", "ID", "OPERATION", "WHO", "CREATED", "AGE", "KIND", "MODE"], cells)
    for r in rows:
        if r.damaged:
            err_console.print(
                f"[red]damaged lock[/] on {escape(r.name)}: {escape(r.damaged)}",
                highlight=False,
                soft_wrap=True,
            )
    drift = [r for r in rows if r.drift]
    if drift:
        err_console.print(
            f"[yellow]warning:[/] {len(drift)} lock(s) held in one lock table but not the "
            "other: left by a crashed run or a client configured with one kind only. "
            "Check nothing runs, then 'statekeeper unlock NAME --force'.",
            highlight=False,
            soft_wrap=True,
        )


@locks_app.command()
def reap(
    ctx: typer.Context,
    older_than: Annotated[
        str, typer.Option("--older-than", help="Age, e.g. 30m, 2h, 1d (0s: every lock)")
    ],
    operation: Annotated[
        str | None,
        typer.Option("--operation", help="Only locks of this operation (plan = OperationTypePlan)"),
    ] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="Only states under this prefix")] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be removed; remove nothing")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Remove every lock older than --older-than (each removal is reported and audited)."""
    rows = obj(ctx, OPERATOR).backend().reap(older_than, operation, prefix, dry_run)
    if json_out:
        print_view(rows)
        return
    if not rows:
        err_console.print("no lock is old enough to reap")
        return
    _print_releases(rows, dry_run)


@app.command(rich_help_panel=PANEL_LOCKS)
def unlock(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="State name")],
    lock_id: Annotated[
        str | None, typer.Option("--id", help="Remove the lock only if it has this ID")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Remove whatever lock is held, whoever holds it")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Remove a state's lock (like terraform force-unlock); the removal is reported and audited.

    Give the lock's --id (from 'statekeeper locks') or --force. Make sure no
    run is still going: removing a live run's lock lets a second run corrupt
    the state.
    """
    row = obj(ctx, OPERATOR).backend().unlock(StateName(name), lock_id, force)
    if json_out:
        print_view(row)
        return
    _print_releases([row], dry_run=False)

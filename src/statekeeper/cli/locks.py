"""``locks [PREFIX]``, ``locks reap`` and ``unlock``: who holds what, and removing it.

Written with click, not typer: scripts run ``statekeeper locks --json`` in
loops, and typer's import alone costs more than the rest of the command on an
empty store (the root runs these directly; see :mod:`statekeeper.cli`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from statekeeper.cli.context import obj
from statekeeper.cli.options import JSON_HELP, OPERATOR
from statekeeper.cli.output import console, err_console, escape, print_view, warn_left_out
from statekeeper.cli.render import age, print_table, when
from statekeeper.terraform.names import StateName

if TYPE_CHECKING:
    from statekeeper.cli.context import Backend
    from statekeeper.state.views import Release

__all__ = ["locks", "unlock"]


class _Required(click.Argument):
    """A required argument shown as the typer commands show theirs: ``{NAME}``."""

    def get_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [f"{{{self.make_metavar(ctx)}}}"]


class _LocksGroup(click.Group):
    """``locks PREFIX`` lists, ``locks reap …`` reaps: a first word that is no subcommand
    is the prefix (so a prefix cannot be the word ``reap``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            ctx.meta["locks_prefix"] = args[0]
            args = args[1:]
        return super().parse_args(ctx, args)


def _print_releases(rows: list[Release], dry_run: bool) -> None:
    verb = "would remove" if dry_run else "removed"
    for r in rows:
        # A damaged lock has no ID, operation or holder to name (only --force removes it).
        line = (
            f"{verb} lock {r.id} on {r.name}: {r.operation or '?'} by "
            f"{r.who or '?'}, age {age(r.age_seconds)}"
            if r.id
            else f"{verb} the damaged lock on {r.name} (it named no ID, operation or holder)"
        )
        console.print(
            line,
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


@click.group(
    "locks",
    cls=_LocksGroup,
    invoke_without_command=True,
    # The usage line names PREFIX, which _LocksGroup takes from where a command goes.
    subcommand_metavar="[PREFIX | COMMAND [ARGS]...]",
)
@click.option("--json", "json_out", is_flag=True, help=JSON_HELP)
@click.pass_context
def locks(ctx: click.Context, json_out: bool) -> None:
    """List held locks, DynamoDB items and S3 lock files alike.

    Every lock on a state under PREFIX, with its ID, operation, who and age;
    'locks reap' removes stale ones. With both lock kinds configured (use_lockfile
    and dynamodb_table), a state locked in one and not the other is flagged as a
    dual-lock drift.
    """
    if ctx.invoked_subcommand is not None:
        return
    prefix = str(ctx.meta.get("locks_prefix", ""))
    backend = obj(ctx, OPERATOR).backend()
    rows = backend.list_locks(prefix)
    if json_out:
        print_view(rows)
        warn_left_out(backend.left_out, "lock(s)")
        return
    if not rows:
        # A lock on a key statekeeper cannot address is still a lock: never "none held".
        on = " on a state statekeeper can address" if backend.left_out.count else ""
        err_console.print(f"no locks held{on}{f' under {prefix!r}' if prefix else ''}")
        warn_left_out(backend.left_out, "lock(s)")
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
    warn_left_out(backend.left_out, "lock(s)")
    drift = [r for r in rows if r.drift]
    if drift:
        err_console.print(
            f"[yellow]warning:[/] {len(drift)} lock(s) held in one lock table but not the "
            "other: left by a crashed run or a client configured with one kind only. "
            "Check nothing runs, then 'statekeeper unlock NAME --force'.",
            highlight=False,
            soft_wrap=True,
        )


@locks.command()
@click.option(
    "--older-than",
    required=True,
    metavar="DURATION",
    help="Age, e.g. 30m, 2h, 1d (0s: every lock)",
)
@click.option(
    "--operation",
    metavar="OPERATION",
    help="Only locks of this operation (plan = OperationTypePlan)",
)
@click.option("--prefix", default="", metavar="PREFIX", help="Only states under this prefix")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing")
@click.option("--json", "json_out", is_flag=True, help=JSON_HELP)
@click.pass_context
def reap(
    ctx: click.Context,
    older_than: str,
    operation: str | None,
    prefix: str,
    dry_run: bool,
    json_out: bool,
) -> None:
    """Remove the locks older than --older-than.

    Each lock is removed by its own ID, so one taken again meanwhile survives;
    locks of unknown age are never reaped. Each removal is reported and audited.
    """
    backend = obj(ctx, OPERATOR).backend()
    rows = backend.reap(older_than, operation, prefix, dry_run)
    if json_out:
        print_view(rows)
    elif not rows:
        err_console.print(_none_reaped(backend, operation, prefix), highlight=False, markup=False)
    else:
        _print_releases(rows, dry_run)
    # Never reaped: no name to remove them by.
    warn_left_out(backend.left_out, "lock(s)")


def _none_reaped(backend: Backend, operation: str | None, prefix: str) -> str:
    """Why a reap removed nothing: no lock of that operation is held at all, or the
    ones held are younger than --older-than."""
    if operation:
        # Not refused up front: Terraform's operations are not a closed list (tools
        # and statekeeper itself add state-push, rollback, migrate, …).
        from statekeeper.state.lockpolicy import is_operation

        held = backend.list_locks(prefix)
        if held and not any(is_operation(r.operation, operation) for r in held):
            kinds = ", ".join(sorted({r.operation for r in held if r.operation}))
            return (
                f"no lock held{f' under {prefix!r}' if prefix else ''} has the operation "
                f"{operation!r}" + (f" (held: {kinds})" if kinds else "")
            )
    if backend.left_out.count:
        return "no lock on a state statekeeper can address is old enough to reap"
    return "no lock is old enough to reap"


@click.command()
@click.argument("name", cls=_Required, metavar="NAME")
@click.option("--id", "lock_id", metavar="ID", help="Remove the lock only if it has this ID")
@click.option("--force", is_flag=True, help="Remove whatever lock is held, whoever holds it")
@click.option("--json", "json_out", is_flag=True, help=JSON_HELP)
@click.pass_context
def unlock(ctx: click.Context, name: str, lock_id: str | None, force: bool, json_out: bool) -> None:
    """Remove a state's lock, like terraform force-unlock; the removal is audited.

    NAME is the state's name, e.g. team/app/prod.tfstate. Give the lock ID as --id
    (from 'statekeeper locks') or --force. Make sure no run is still going:
    removing a live run's lock lets a second run corrupt the state.
    """
    if lock_id is not None and force:
        from statekeeper.errors import BadRequest

        # Contradictory: --id guards against removing someone else's lock, --force
        # removes it anyway; which one was meant cannot be told.
        raise BadRequest(
            "--id and --force both given: --id removes the lock only if it has that ID, "
            "--force removes whatever lock is held; give one of them"
        )
    row = obj(ctx, OPERATOR).backend().unlock(StateName(name), lock_id, force)
    if json_out:
        print_view(row)
        return
    _print_releases([row], dry_run=False)

"""``history``, ``diff`` and ``rollback``: a state's versions and how to go back."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from statekeeper.cli.commands import JsonFlag, app
from statekeeper.cli.context import Backend, obj
from statekeeper.cli.options import OPERATOR, PANEL_STATES
from statekeeper.cli.output import (
    console,
    err_console,
    escape,
    print_view,
    warn_unkept_digest,
)
from statekeeper.cli.render import dash, print_table, size, when
from statekeeper.terraform.names import StateName

if TYPE_CHECKING:
    from statekeeper.state.views import AttributeChange, DiffView, OutputChange

__all__ = ["diff", "history", "rollback"]


@app.command(rich_help_panel=PANEL_STATES)
def history(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="State name")],
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Only the newest N versions")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """List a state's versions, newest first, with the resources each one changed."""
    rows = obj(ctx, OPERATOR).backend().history(StateName(name), limit)
    if json_out:
        print_view(rows)
        return
    cells = [
        [
            r.version_id,
            dash(r.serial),
            when(r.created),
            dash(r.actor),
            size(r.size),
            dash(r.resources_changed),
            str(r.replaced) if r.replaced else "",
            "current" if r.is_current else "",
        ]
        for r in rows
    ]
    print_table(
        ["VERSION", "SERIAL", "TIME", "WHO", "SIZE", "CHANGED", "REPLACED", "CURRENT"], cells
    )


def _values(change: AttributeChange | OutputChange) -> str:
    if change.sensitive:
        return "(sensitive) -> (sensitive)"
    before, after = (json.dumps(v, ensure_ascii=False) for v in (change.before, change.after))
    return f"{before} -> {after}"


def _print_diff(d: DiffView) -> None:
    console.print(
        f"[bold]{escape(d.name)}[/]: {d.from_ or '(no state)'} (serial {dash(d.serial.before)})"
        f" -> {d.to} (serial {dash(d.serial.after)})",
        highlight=False,
        soft_wrap=True,
    )
    if d.lineage.before not in (None, d.lineage.after):
        console.print(f"[yellow]lineage changed[/]: {d.lineage.before} -> {d.lineage.after}")
    if d.empty:
        console.print("No resource or output changes.")
        return
    for address in d.added:
        console.print(f"[green]+ {escape(address)}[/]", highlight=False, soft_wrap=True)
    for address in d.removed:
        console.print(f"[red]- {escape(address)}[/]", highlight=False, soft_wrap=True)
    for inst in d.changed:
        console.print(f"[yellow]~ {escape(inst.address)}[/]", highlight=False, soft_wrap=True)
        for c in inst.changes:
            console.print(
                f"    {c.path}: {_values(c)}", highlight=False, soft_wrap=True, markup=False
            )
    if d.outputs:
        console.print("[bold]Outputs:[/]")
        mark = {"added": "+", "removed": "-", "changed": "~"}
        for o in d.outputs:
            console.print(
                f"  {mark[o.action]} {o.name}: {_values(o)}",
                highlight=False,
                soft_wrap=True,
                markup=False,
            )
    console.print(
        f"{len(d.added)} added, {len(d.changed)} changed, {len(d.removed)} removed; "
        f"{len(d.outputs)} output(s) changed",
        highlight=False,
        soft_wrap=True,
    )


@app.command(rich_help_panel=PANEL_STATES)
def diff(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="State name")],
    from_ref: Annotated[
        str | None,
        typer.Argument(
            metavar="FROM", help="Older version \\[default: the one before TO]", show_default=False
        ),
    ] = None,
    to_ref: Annotated[
        str | None,
        typer.Argument(metavar="TO", help="Newer version \\[default: current]", show_default=False),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Show what changed between two versions: instances, attribute paths, outputs.

    With no versions: the last change (previous -> current). Sensitive values
    are masked. Versions are IDs from 'history', serial:N or current.
    """
    d = obj(ctx, OPERATOR).backend().diff(StateName(name), from_ref, to_ref)
    if json_out:
        print_view(d)
        return
    _print_diff(d)


def _refuse_if_locked(backend: Backend, state: StateName) -> None:
    from statekeeper.errors import LockConflict
    from statekeeper.terraform.lockinfo import LockInfo

    for held in backend.list_locks(str(state)):
        if held.name == str(state):
            info = {
                "ID": held.id,
                "Operation": held.operation,
                "Info": held.info,
                "Who": held.who,
                "Version": held.version,
                "Created": held.created,
                "Path": held.path,
            }
            holder = LockInfo.parse(json.dumps(info).encode())
            raise LockConflict(
                holder,
                f"cannot roll back {state}: it is locked by {holder.describe()}; wait for the "
                "run to finish (or remove a stale lock with 'statekeeper unlock')",
            )


@app.command(rich_help_panel=PANEL_STATES)
def rollback(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="State name")],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="Version to restore: a version ID from 'history', or serial:N "
            "(an older version; the current one is refused)",
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Restore an old version's content as a new version (serial = current + 1).

    Taken under the state's lock (Operation "rollback"); refused, exit 3, if
    someone else holds it. Every byte but the serial is the old version's, the
    lineage is kept, and the DynamoDB digest is updated, so Terraform's own
    S3 backend reads the result. The next 'terraform plan' shows the drift.
    """
    backend = obj(ctx, OPERATOR).backend()
    state = StateName(name)
    if not yes:
        # A held lock refuses the rollback anyway: say so before asking, not after.
        _refuse_if_locked(backend, state)
        # From the current state to the target: what the rollback will do to the state.
        d = backend.diff(state, "current", to)
        if d.from_ == d.to:  # refused by the rollback too; not worth a question first
            from statekeeper.state.rollback import already_current

            raise already_current(state, d.to)
        if d.lineage.before and d.lineage.after and d.lineage.before != d.lineage.after:
            from statekeeper.state.rollback import other_lineage

            raise other_lineage(state, d.to, d.lineage.after, d.lineage.before)
        console.print(
            f"Roll back {name} to version {d.to} (serial {dash(d.serial.after)}); it "
            f"becomes a new version with serial {(d.serial.before or 0) + 1}. Against the "
            f"current state: {len(d.added)} instance(s) come back, {len(d.removed)} are "
            f"dropped, {len(d.changed)} change; {len(d.outputs)} output(s) change.",
            highlight=False,
            soft_wrap=True,
        )
        if not typer.confirm("Proceed?", default=False, err=True):
            err_console.print("nothing was changed")
            raise typer.Exit(1)
    result = backend.rollback(state, to)
    warn_unkept_digest(backend.unkept_digest(state))
    if json_out:
        print_view(result)
        return
    v = result.version
    console.print(
        f"rolled back {name}: version {result.restored_version} (serial "
        f"{dash(result.restored_serial)}) restored as version {v.version_id} with serial "
        f"{v.serial}",
        highlight=False,
        soft_wrap=True,
    )

"""``prune`` and ``trash list / restore / purge``: the history the ``[history]`` rules keep.

These open the configured store (``--store``, ``--config`` for the rules) and
call the services directly, as the server's background task does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from statekeeper.cli.commands import JsonFlag, app
from statekeeper.cli.context import local_caller, obj
from statekeeper.cli.options import PANEL_STATES, STORE
from statekeeper.cli.output import (
    console,
    err_console,
    print_view,
    warn_left_out,
    warn_unkept_digest,
)
from statekeeper.cli.render import print_table, size
from statekeeper.terraform.names import StateName
from statekeeper.times import format_rfc3339

if TYPE_CHECKING:
    from statekeeper.app import Services
    from statekeeper.state.trash import TrashService

__all__ = ["delete", "prune", "trash_app"]

trash_app = typer.Typer(
    no_args_is_help=True,
    help="Deleted states, restorable for history.trash (30 days by default).",
)
app.add_typer(trash_app, name="trash", rich_help_panel=PANEL_STATES)


@app.command(rich_help_panel=PANEL_STATES)
def prune(
    ctx: typer.Context,
    prefix: Annotated[
        str, typer.Argument(metavar="PREFIX", help="Only states under this prefix")
    ] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would go; remove nothing")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Remove the versions the history retention rules let go (never a current one)."""
    from statekeeper.state.history_views import PruneView
    from statekeeper.state.listing import Unaddressable
    from statekeeper.state.prune import prune as prune_states

    services = obj(ctx, STORE).services()
    left_out = Unaddressable()
    rows = prune_states(
        services.store,
        services.settings.history,
        services.policy,
        services.events,
        local_caller(),
        prefix=prefix,
        dry_run=dry_run,
        unaddressable=left_out,
    )
    warn_left_out(left_out, "state(s)")  # not pruned: no rule can name them
    if json_out:
        print_view([PruneView.of(r) for r in rows])
        return
    verb = "would remove" if dry_run else "removed"
    for r in rows:
        console.print(
            f"{r.name}: {verb} {len(r.removed)} version(s), {r.kept} kept ({r.rule})",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if not rows:
        err_console.print("nothing to prune")


@app.command(rich_help_panel=PANEL_STATES)
def delete(
    ctx: typer.Context, name: Annotated[str, typer.Argument(metavar="NAME", help="State name")]
) -> None:
    """Delete a state; it stays in the trash, restorable, for history.trash."""
    services = obj(ctx, STORE).services()
    services.states.delete(StateName(name), local_caller())
    console.print(
        f"deleted {name}: 'statekeeper trash restore {name}' brings it back",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _trash(ctx: typer.Context) -> TrashService:
    return _trash_of(obj(ctx, STORE).services())


def _trash_of(services: Services) -> TrashService:
    service = services.trash
    assert service is not None, "Services.build makes the trash"
    return service


@trash_app.command("list")
def trash_list(
    ctx: typer.Context,
    prefix: Annotated[
        str, typer.Argument(metavar="PREFIX", help="Only states under this prefix")
    ] = "",
    json_out: JsonFlag = False,
) -> None:
    """List deleted states: when each was deleted and when it leaves the trash."""
    from statekeeper.state.history_views import TrashEntry

    rows = _trash(ctx).entries(local_caller(), prefix)
    if json_out:
        print_view([TrashEntry.of(t) for t in rows])
        return
    if not rows:
        err_console.print("the trash is empty")
        return
    cells = [
        [
            t.state.key,
            format_rfc3339(t.state.deleted),
            t.state.version_id,
            size(t.state.size),
            format_rfc3339(t.expires) if t.expires else "when purged",
        ]
        for t in rows
    ]
    print_table(["NAME", "DELETED", "VERSION", "SIZE", "PURGED"], cells)


@trash_app.command("restore")
def trash_restore(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="State name")],
    json_out: JsonFlag = False,
) -> None:
    """Bring a deleted state back, byte for byte, as its current version."""
    from statekeeper.state.history_views import RestoredView

    services = obj(ctx, STORE).services()
    restored = _trash_of(services).restore(StateName(name), local_caller())
    warn_unkept_digest(services.states.unkept_digest(StateName(name)))
    if json_out:
        print_view(RestoredView.of(restored))
        return
    console.print(
        f"restored {restored.name}: version {restored.version_id} "
        f"(serial {restored.serial}) is current again",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@trash_app.command("purge")
def trash_purge(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="State name \\[default: every expired one]")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Remove a deleted state for good; without NAME, those past history.trash."""
    from statekeeper.state.history_views import PurgedView

    trash = _trash(ctx)
    if name is not None:
        removed = trash.purge(StateName(name), local_caller())
        if json_out:
            print_view(PurgedView(name=name, removed=removed))
            return
        console.print(
            f"purged {name}: {removed} version(s) removed",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return
    # expire() finds nothing where nothing can expire (the background task's case); asked
    # by hand, a store without a trash says so, as 'trash list' does.
    trash.require_store()
    purged = trash.expire(local_caller())
    if json_out:
        print_view([PurgedView(name=key, removed=n) for key, n in purged])
        return
    for key, n in purged:
        console.print(
            f"purged {key}: {n} version(s) removed (in the trash longer than history.trash)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if not purged and trash.keep is None:
        err_console.print(
            "nothing expires: history.trash is 0s (deleted states stay until purged by "
            "name: statekeeper trash purge NAME)"
        )
    elif not purged:
        err_console.print("nothing in the trash has expired")

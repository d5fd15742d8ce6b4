"""``search``: find resources across every state, from the inventory index."""

from __future__ import annotations

from typing import Annotated

import typer

from statekeeper.cli.commands import JsonFlag, app
from statekeeper.cli.context import obj
from statekeeper.cli.options import OPERATOR, PANEL_STATES

__all__ = ["search"]


@app.command(rich_help_panel=PANEL_STATES)
def search(
    ctx: typer.Context,
    query: Annotated[
        str,
        typer.Argument(
            metavar="QUERY",
            help='Words (all must match), "phrases", word* prefixes, and filters type:… '
            "provider:… module:… name:… state:GLOB terraform:…",
        ),
    ] = "",
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=1000, help="At most this many resources")
    ] = 50,
    counts: Annotated[
        bool,
        typer.Option(
            "--counts",
            help="Count resources by type and provider, states by Terraform version "
            "(as with no QUERY)",
        ),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Find which state manages a resource: search every state's resources and values.

    Words match resource types, names, addresses, modules, providers and attribute
    values (an ARN, a bucket name); sensitive values are never indexed. With
    --server, the server's index and your token's grants; else this store's index,
    caught up with the store first. Exit 1 when nothing matches.
    """
    from statekeeper.cli.output import err_console, print_view, warn_left_out
    from statekeeper.cli.render import dash, print_table
    from statekeeper.state.listing import Unaddressable

    backend = obj(ctx, OPERATOR).backend()
    if counts or not query:
        totals = backend.inventory()
        if totals.building is not None:
            err_console.print(f"note: {totals.building.note}", highlight=False, markup=False)
        warn_left_out(Unaddressable(dict.fromkeys(totals.unaddressable)))
        if json_out:
            print_view(totals)
            return
        for title, rows in (
            ("RESOURCE TYPE", totals.resource_types),
            ("PROVIDER", totals.providers),
            ("TERRAFORM", totals.terraform_versions),
        ):
            print_table([title, "COUNT"], [[key, str(n)] for key, n in rows.items()])
        return
    result = backend.search(query, limit)
    if result.building is not None:
        err_console.print(f"note: {result.building.note}", highlight=False, markup=False)
    # Not searched: a hit there would name a state no command can open.
    warn_left_out(Unaddressable(dict.fromkeys(result.unaddressable)))
    if json_out:
        print_view(result)
        if not result.hits:
            raise typer.Exit(1)  # as without --json: the documented "nothing matches"
        return
    if not result.hits:
        err_console.print(f"nothing matches {query!r}", highlight=False, markup=False)
        raise typer.Exit(1)
    print_table(
        ["RESOURCE", "STATE", "SERIAL", "PROVIDER"],
        [[h.address, h.state, dash(h.serial), h.provider] for h in result.hits],
    )
    if result.truncated:
        err_console.print(f"more than {limit} resources match; raise --limit or narrow the search")

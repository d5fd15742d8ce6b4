"""``states``, ``show``, ``pull`` and ``push``: the states of a store and their bytes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from statekeeper.cli.commands import JsonFlag, app
from statekeeper.cli.context import obj
from statekeeper.cli.options import OPERATOR, PANEL_STATES
from statekeeper.cli.output import (
    console,
    err_console,
    escape,
    print_json,
    print_view,
    warn_left_out,
    warn_unkept_digest,
    write_output,
)
from statekeeper.cli.render import dash, print_table, size, when, who_lock
from statekeeper.errors import BadRequest
from statekeeper.terraform.names import StateName

__all__ = ["pull", "push", "show", "states"]

#: A serial the listing does not carry (footnoted under the table).
UNKNOWN = "?"

VersionOpt = Annotated[
    str | None,
    typer.Option(
        "--version",
        "-v",
        help="A version ID from 'history', serial:N or current \\[default: current]",
    ),
]


@app.command(rich_help_panel=PANEL_STATES)
def states(
    ctx: typer.Context,
    prefix: Annotated[
        str, typer.Argument(metavar="PREFIX", help="Only states under this prefix")
    ] = "",
    details: Annotated[
        bool,
        typer.Option(
            "--details",
            "-d",
            help="Also count versions and read serials the listing lacks (calls per state)",
        ),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """List every state, workspace states (env:/WORKSPACE/KEY) included, with its lock.

    The workspace states of the keys under PREFIX are listed after their key
    (env:/dev/team/app.tfstate for 'states team/', with workspace_key_prefix
    env:), their workspace in the WORKSPACE column.

    One listing of objects and one of locks, nothing downloaded. An S3 listing
    carries no serials: they show as ? (JSON: serial null, serial_known false).
    --details reads them (a HEAD per state, a GET where statekeeper's metadata is
    missing) and counts versions (a version listing per state).
    """
    backend = obj(ctx, OPERATOR).backend()
    rows = backend.list_states(prefix, details)
    if json_out:
        print_view(rows)
        warn_left_out(backend.left_out)
        return
    if not rows:
        err_console.print(f"no states{f' under {prefix!r}' if prefix else ''}")
        warn_left_out(backend.left_out)
        return
    cols = ["NAME", "WORKSPACE", "SERIAL", "SIZE", "LAST CHANGE", "LOCK"]
    cells = [
        [
            r.name,
            r.workspace or "-",
            dash(r.serial) if r.serial_known else UNKNOWN,
            size(r.size),
            when(r.last_modified),
            who_lock(r.lock),
            *([dash(r.versions)] if details else []),
        ]
        for r in rows
    ]
    print_table([*cols, *(["VERSIONS"] if details else [])], cells)
    warn_left_out(backend.left_out)
    unknown = sum(not r.serial_known for r in rows)
    if unknown:
        why = (
            # --details read each state: what is left records no serial and is no state.
            "the current version records none and its bytes show none (encrypted by OpenTofu, "
            "or not a state)"
            if details
            else "neither the store's listing nor an inventory index has them "
            "('statekeeper search' builds one); 'statekeeper states --details' reads "
            "each state, at a request per state"
        )
        err_console.print(
            f"{UNKNOWN} {unknown} serial(s) unknown: {why}", highlight=False, soft_wrap=True
        )


@app.command(rich_help_panel=PANEL_STATES)
def show(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="State name, e.g. team/app/prod.tfstate")
    ],
    version: VersionOpt = None,
    outputs: Annotated[
        bool, typer.Option("--outputs", help="Show only the outputs (sensitive ones masked)")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Show one version of a state: its facts, resources and outputs."""
    doc = obj(ctx, OPERATOR).backend().show(StateName(name), version)
    if json_out:
        if outputs:
            print_json(doc.model_dump(mode="json", include={"name", "outputs"}))
        else:
            print_view(doc)
        return
    if doc.encrypted and outputs:
        err_console.print(f"{name} is encrypted by OpenTofu: its outputs cannot be read")
        raise typer.Exit(1)
    if not outputs:
        v = doc.version
        facts = [
            ("State", doc.name),
            ("Version", f"{v.version_id}{' (current)' if v.is_current else ''}"),
            ("Serial", dash(v.serial)),
            ("Lineage", dash(v.lineage)),
            ("Size", size(v.size)),
            ("Written", when(v.created)),
            ("By", dash(v.actor)),
            *([("Migrated by", v.migrated_by)] if v.migrated_by else []),
            ("sha256", dash(v.sha256)),
            ("Locked", f"yes (ID {doc.lock_id})" if doc.locked else "no"),
        ]
        if doc.encrypted:
            facts.append(("Content", "encrypted by OpenTofu (not readable here)"))
        else:
            facts.append(("Terraform", dash(doc.terraform_version)))
        for label, value in facts:
            console.print(
                f"[bold]{label + ':':<11}[/] {escape(str(value))}", highlight=False, soft_wrap=True
            )
        if doc.encrypted:
            return
        resources = doc.resources or []
        console.print(f"\n[bold]Resources ({len(resources)}):[/]")
        for address in resources:
            console.print(f"  {address}", highlight=False, markup=False)
    shown = doc.outputs or {}
    if not outputs:
        console.print(f"\n[bold]Outputs ({len(shown)}):[/]")
    for out_name, o in shown.items():
        value = "(sensitive)" if o.sensitive else _compact(o.value)
        console.print(f"  {out_name} = {value}", highlight=False, markup=False)


def _compact(value: object) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


@app.command(rich_help_panel=PANEL_STATES)
def pull(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="State name")],
    version: VersionOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to FILE instead of stdout ('-': stdout)"),
    ] = None,
) -> None:
    """Print (or save) a state's bytes exactly as stored."""
    data = obj(ctx, OPERATOR).backend().pull(StateName(name), version)
    if write_output(data, output) is not None:
        err_console.print(f"wrote {len(data)} bytes to {output}", markup=False, soft_wrap=True)


@app.command(rich_help_panel=PANEL_STATES)
def push(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="State name")],
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="State file to upload ('-' for stdin)")
    ],
    force: Annotated[
        bool,
        typer.Option("--force", help="Skip the serial/lineage guard (admin override)"),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Upload a state file as the new version, under the lock (Operation state-push).

    The bytes are stored verbatim. The serial/lineage guard refuses an older
    serial, another lineage or the same serial with other content, with
    Terraform's own wording; --force overrides it.
    """
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        raise BadRequest(f"cannot read {file}: {exc}") from exc
    backend = obj(ctx, OPERATOR).backend()
    result = backend.push(StateName(name), data, force)
    if result.created:
        warn_unkept_digest(backend.unkept_digest(StateName(name)))
    if json_out:
        print_view(result)
        return
    v = result.version
    if result.history_warning is not None:
        # No version to name (S3 says "null"): the state it replaced is gone for good.
        console.print(
            f"pushed {name}: serial {dash(v.serial)}, {size(v.size)}",
            highlight=False,
            soft_wrap=True,
        )
        err_console.print(
            f"warning: {result.history_warning}", highlight=False, markup=False, soft_wrap=True
        )
    elif result.created:
        console.print(
            f"pushed {name}: version {v.version_id}, serial {dash(v.serial)}, {size(v.size)}",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"{name} already has these exact bytes: nothing written",
            highlight=False,
            soft_wrap=True,
        )

"""``migrate``: copy states, with their history, from one store (or state files) to another."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from statekeeper.cli.commands import JsonFlag, app
from statekeeper.cli.context import local_caller, obj
from statekeeper.cli.options import PANEL_STATES, STORE
from statekeeper.cli.output import console, err_console, escape, print_view
from statekeeper.cli.render import size
from statekeeper.errors import ConfigError
from statekeeper.state.globs import literal_prefix

if TYPE_CHECKING:
    from statekeeper.app import Services
    from statekeeper.state.migrate import FileSource, StoreSource
    from statekeeper.storage.base import ObjectStore

__all__ = ["migrate"]


def _is_url(text: str) -> bool:
    return "://" in text


def _source(text: str, name: str | None) -> tuple[FileSource | StoreSource, ObjectStore | None]:
    from statekeeper.state.migrate import FileSource, StoreSource

    if not _is_url(text):
        return FileSource(Path(text), name), None
    if name is not None:
        raise ConfigError("--name names the state of a single source file; --from is a store URL")
    from statekeeper.errors import StoreNotFound
    from statekeeper.storage.registry import open_store

    try:
        store = open_store(text, create=False, given_as="--from")
    except StoreNotFound as exc:
        raise StoreNotFound(f"--from {text}: {exc.message}; a source is only read") from exc
    return StoreSource(store), store


def _destination(ctx: typer.Context, to: str | None, to_locks: list[str] | None) -> Services:
    from statekeeper.app import Services
    from statekeeper.settings import load_settings

    if to is None:
        if to_locks:
            raise ConfigError(
                "--to-locks needs --to; without --to the destination is --store/--locks"
            )
        return Services.build(obj(ctx, STORE).settings())  # checked in migrate()
    # Without --to-locks the destination's own default applies: its database for
    # sqlite://, lock files next to the states for s3:// (Terraform's use_lockfile).
    return Services.build(
        load_settings({"store": to, "locks": ",".join(to_locks) if to_locks else None})
    )


@app.command(rich_help_panel=PANEL_STATES)
def migrate(
    ctx: typer.Context,
    from_: Annotated[
        str,
        typer.Option(
            "--from",
            help="Source: a store URL, a terraform.tfstate file (with --name), or a directory "
            "of *.tfstate files (read-only)",
        ),
    ],
    to: Annotated[
        str | None,
        typer.Option("--to", help="Destination store URL \\[default: --store/--locks]"),
    ] = None,
    to_locks: Annotated[
        list[str] | None,
        typer.Option(
            "--to-locks",
            help="Destination lock URL: dynamodb://TABLE, s3lock://BUCKET/PREFIX; give twice "
            "for both \\[default: the destination's own]",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Destination state name for a single file")
    ] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="Only states under this prefix")] = "",
    with_history: Annotated[
        bool, typer.Option("--with-history", help="Copy every version, oldest first")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be copied; copy nothing")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Overwrite a destination state of another lineage or newer serial"
        ),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Copy states between two stores, byte for byte, under the destination's locks.

    Resumable: versions the destination already holds (same sha256) are
    skipped, so an interrupted copy is finished by running it again. Each
    copied version is read back and its sha256 checked.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from statekeeper.state.migrate import migrate as run

    # --to names the destination: the global store options would be ignored, so they are
    # refused; without it they are the destination.
    if obj(ctx, STORE if to is None else frozenset()).server:  # STATEKEEPER_SERVER
        raise ConfigError("migrate opens the stores itself: use --from/--to URLs, not --server")
    prefix = literal_prefix(prefix)
    source, opened = _source(from_, name)
    try:
        dest = _destination(ctx, to, to_locks)
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                console=err_console,
                # A bar redrawn in place means something on a terminal only.
                disable=json_out or not err_console.is_terminal,
                transient=False,
            ) as bar:
                task = bar.add_task("migrating", total=None)

                def progress(event: str, state: str, amount: int) -> None:
                    if event == "state":
                        bar.update(task, description=state)
                    else:
                        bar.advance(task, amount)

                versions = [(n, source.versions(n, with_history)) for n in source.names(prefix)]
                bar.update(task, total=sum(v.size for _, vs in versions for v in vs))
                report = run(
                    source,
                    dest.states,
                    dest.locks,
                    local_caller(),
                    prefix=prefix,
                    with_history=with_history,
                    dry_run=dry_run,
                    force=force,
                    progress=progress,
                )
        finally:
            dest.close()
    finally:
        if opened is not None:
            opened.close()
    doc = report.view()
    # A dry run exits as the real run would: 1 when it would refuse a state, and
    # when a source state cannot be copied at all (never a success that left one behind).
    refused = any(s.refused is not None for s in doc.states) or bool(doc.unaddressable)
    if json_out:
        print_view(doc)
        _left_behind(doc.unaddressable, dry_run)
        if refused:
            raise typer.Exit(1)
        return
    for s in doc.states:
        if s.refused is not None:
            line = f"{s.name}: would be refused: {s.refused}"
        elif dry_run:
            line = f"{s.name}: would copy {s.planned} version(s), {s.skipped} present"
        else:
            line = (
                f"{s.name}: copied {s.copied} version(s) ({size(s.bytes)}), "
                f"{s.skipped} already present"
            )
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    for key in doc.unaddressable:
        verb = "would not be copied" if dry_run else "not copied"
        console.print(
            f"{key!r}: {verb}: not a state name statekeeper can address",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    verb = "would copy" if dry_run else "copied"
    n = doc.planned if dry_run else doc.copied
    console.print(
        f"{len(doc.states)} state(s): {verb} {n} version(s), {doc.skipped} already present",
        highlight=False,
        soft_wrap=True,
    )
    _left_behind(doc.unaddressable, dry_run)
    if refused:
        raise typer.Exit(1)


def _left_behind(keys: list[str], dry_run: bool) -> None:
    """The source states the copy leaves behind, on stderr: the run is not a success."""
    if not keys:
        return
    from statekeeper.state.listing import Unaddressable

    what = "source state(s) would be" if dry_run else "source state(s)"
    text = Unaddressable(dict.fromkeys(keys)).warning(what)
    err_console.print(f"[bold red]Error:[/] {escape(str(text))}", highlight=False, soft_wrap=True)

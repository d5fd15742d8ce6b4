"""``statekeeper audit`` (the audit trail) and ``statekeeper encryption`` (status, rotate)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from statekeeper.cli import app
from statekeeper.cli.token import ConfigOpt, DataDir, JsonOpt, StoreOpt, operator, services_for

__all__ = ["audit", "parse_since"]


def parse_since(text: str) -> datetime:
    """An RFC 3339 time, or a duration back from now (``24h``, ``7d``)."""
    from statekeeper.errors import BadRequest
    from statekeeper.security.tokens import parse_duration
    from statekeeper.times import parse_rfc3339, utcnow

    try:
        return parse_rfc3339(text)
    except ValueError:
        pass
    try:
        return utcnow() - parse_duration(text)
    except BadRequest as exc:
        raise BadRequest(
            f"--since {text!r} is neither an RFC 3339 time (2026-01-01T00:00:00Z) nor a "
            "duration back from now (24h, 7d)"
        ) from exc


@app.command()
def audit(
    state: Annotated[str | None, typer.Option(help="State-name glob, e.g. 'team/**'")] = None,
    actor: Annotated[str | None, typer.Option(help="Token name or oidc:SUBJECT")] = None,
    action: Annotated[str | None, typer.Option(help="read, write, lock, unlock, …")] = None,
    since: Annotated[str | None, typer.Option(help="RFC 3339 time or 24h, 7d")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (the newest)")] = 1000,
    data_dir: DataDir = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the audit trail, oldest first."""
    from rich.table import Table

    from statekeeper.cli.output import console, print_view
    from statekeeper.security.audit import AuditFilter
    from statekeeper.security.grants import parse_grant

    if state is not None:
        parse_grant(state + ":outputs")
    when = parse_since(since) if since else None
    with services_for(data_dir, store, config) as services:
        events = services.audit.query(
            AuditFilter(state=state, actor=actor, action=action, since=when, limit=limit)
        )
    if as_json:
        from statekeeper.state.views import AuditEventView

        print_view([AuditEventView.of(e) for e in events])
        return
    table = Table("time", "actor", "action", "state", "version", "outcome", "who / operation")
    for e in events:
        who = " / ".join(x for x in (e.who, e.operation) if x)
        actor_text = e.actor + "".join(f"\n{k}={v}" for k, v in e.claims.items())
        table.add_row(
            f"{e.time:%Y-%m-%d %H:%M:%S}",
            actor_text,
            e.action,
            e.state or "-",
            e.version or "-",
            e.outcome if e.outcome == "ok" else f"[red]{e.outcome}[/]",
            who or "-",
        )
    console.print(table)


encryption_app = typer.Typer(help="Encryption at rest: status and key rotation.")
app.add_typer(encryption_app, name="encryption")


@encryption_app.command("status")
def status(
    data_dir: DataDir = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the states stored in plaintext (exit 1 if any, for scripts)."""
    from statekeeper.cli.output import console, print_json

    with services_for(data_dir, store, config) as services:
        plain = services.keys.unencrypted()
        enabled = services.keys.current_kid is not None
    if as_json:
        print_json({"encryption": enabled, "unencrypted": plain})
    else:
        console.print(f"encryption at rest: {'on' if enabled else 'off'}")
        for key in plain:
            console.print(f"  not encrypted: {key}", highlight=False)
        if not plain:
            console.print("no state is stored in plaintext")
    if plain:
        raise typer.Exit(1)


@encryption_app.command("rotate")
def rotate(
    old_key_file: Annotated[Path, typer.Option(help="File holding the old master key")],
    new_key_file: Annotated[Path, typer.Option(help="File holding the new master key")],
    data_dir: DataDir = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Re-wrap every data key from the old master key to the new; states are not rewritten."""
    from statekeeper.cli.output import console
    from statekeeper.errors import ConfigError
    from statekeeper.storage import encrypting as crypto

    try:
        old = crypto.parse_master_key(old_key_file.read_text())
        new = crypto.parse_master_key(new_key_file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read a key file: {exc}") from exc
    with services_for(data_dir, store, config) as services:
        report = services.keys.rotate(operator(), old, new)
    console.print(
        f"re-wrapped {report.rewrapped} data keys from {old.kid} to {new.kid} "
        f"({report.already_new} already under the new key, {report.other} under other keys). "
        "Now set STATEKEEPER_MASTER_KEY to the new key and restart the servers.",
        highlight=False,
    )

"""``statekeeper audit`` (the audit trail) and ``statekeeper encryption`` (status, rotate,
decrypt)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from statekeeper.cli.commands import JsonFlag, app
from statekeeper.cli.context import obj
from statekeeper.cli.options import PANEL_SECURITY, REMOTE

__all__ = ["audit", "parse_since"]

# The audit trail is the store's (or, with --server, the server's); encryption is the
# store's own key ring, which only a process opening the store can reach.
AUDIT_OPTIONS = frozenset({"store", "data_dir", "config"}) | REMOTE
ENCRYPTION_OPTIONS = frozenset({"store", "data_dir", "config"})


# Numbers with units: meant as a duration, so the duration parser's own refusal (units
# out of order, longer than it reads) says what is wrong with it.
_DURATION_LIKE = re.compile(r"^\s*(?:\d+[a-zA-Z])+\s*$")


def parse_since(text: str) -> datetime:
    """An RFC 3339 time, or a duration back from now (``24h``, ``7d``, ``1d12h``)."""
    from statekeeper.errors import BadRequest
    from statekeeper.times import DURATION_GRAMMAR, parse_duration, parse_rfc3339, utcnow

    try:
        return parse_rfc3339(text)
    except ValueError:
        pass
    if _DURATION_LIKE.match(text):
        return utcnow() - parse_duration(text, what="--since")
    raise BadRequest(
        f"--since {text!r} is neither an RFC 3339 time (2026-01-01T00:00:00Z) nor a "
        f"duration back from now ({DURATION_GRAMMAR})"
    )


@app.command(rich_help_panel=PANEL_SECURITY)
def audit(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="State glob (team/**)")] = None,
    actor: Annotated[
        str | None, typer.Option(help="user@host, a token name or oidc:SUBJECT")
    ] = None,
    action: Annotated[str | None, typer.Option(help="read, write, lock, unlock, …")] = None,
    since: Annotated[
        str | None, typer.Option(help="An RFC 3339 time, or a duration back from now: 24h, 7d")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many (the newest)")] = 1000,
    as_json: JsonFlag = False,
) -> None:
    """Show the audit trail of the store (with --server, the server's), oldest first."""
    from statekeeper.cli.admin import admin_for
    from statekeeper.cli.output import print_view
    from statekeeper.cli.render import dash, print_table, when
    from statekeeper.security.audit import AuditFilter

    after = parse_since(since) if since else None
    where = AuditFilter(state=state, actor=actor, action=action, since=after, limit=limit)
    events = admin_for(obj(ctx, AUDIT_OPTIONS)).audit(where)
    if as_json:
        print_view(events)
        return
    rows = [
        [
            when(e.time),
            e.actor + "".join(f" {k}={v}" for k, v in e.claims.items()),
            e.action,
            dash(e.state),
            dash(e.version),
            e.outcome,
            " / ".join(x for x in (e.who, e.operation) if x) or "-",
        ]
        for e in events
    ]
    print_table(["TIME", "ACTOR", "ACTION", "STATE", "VERSION", "OUTCOME", "WHO / OPERATION"], rows)


encryption_app = typer.Typer(help="Encryption at rest: status, key rotation, offline decryption.")
app.add_typer(encryption_app, name="encryption", rich_help_panel=PANEL_SECURITY)


@encryption_app.command("status")
def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the states stored in plaintext, and whether the store is encrypted.

    Exit 1 (for scripts) if any state is in plaintext, or if the store is encrypted
    and no master key is configured: its encrypted versions cannot be read then.
    """
    from statekeeper.cli.output import console, print_json

    services = obj(ctx, ENCRYPTION_OPTIONS).services()
    plain = services.keys.unencrypted()
    # The store records its keys when encryption is turned on (a key given is recorded
    # on opening): it is encrypted whether or not this run was given the key.
    store_keys = services.keys.store_kids
    missing = bool(store_keys) and services.keys.current_kid is None
    if as_json:
        print_json(
            {
                "encryption": bool(store_keys),
                "master_keys": store_keys,
                "key_configured": services.keys.current_kid is not None,
                "unencrypted": plain,
            }
        )
    else:
        if store_keys:
            keys = ", ".join(store_keys)
            console.print(f"encryption at rest: on, master key {keys}", highlight=False)
        else:
            console.print("encryption at rest: off (no master key was ever configured)")
        if missing:
            console.print(
                "  no key is configured: encrypted versions cannot be read and writes are "
                "refused; set STATEKEEPER_MASTER_KEY (or STATEKEEPER_MASTER_KEY_FILE) to it",
                highlight=False,
            )
        for key in plain:
            console.print(f"  not encrypted: {key}", highlight=False)
        if not plain:
            console.print("no state is stored in plaintext")
    if plain or missing:
        raise typer.Exit(1)


@encryption_app.command("rotate")
def rotate(
    ctx: typer.Context,
    old_key_file: Annotated[Path, typer.Option(help="File holding the old master key")],
    new_key_file: Annotated[Path, typer.Option(help="File holding the new master key")],
) -> None:
    """Re-wrap every data key under a new master key; no state version is rewritten.

    The old key must be the store's current one. On a store that is not encrypted
    it changes nothing (exit 2): encryption is turned on by setting the key.
    """
    from statekeeper.cli.context import local_caller
    from statekeeper.cli.output import console
    from statekeeper.errors import ConfigError
    from statekeeper.storage.masterkeys import parse_master_key

    try:
        old = parse_master_key(old_key_file.read_text())
        new = parse_master_key(new_key_file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read a key file: {exc}") from exc
    services = obj(ctx, ENCRYPTION_OPTIONS).services()
    report = services.keys.rotate(local_caller(), old, new)
    console.print(
        f"re-wrapped {report.rewrapped} data keys from {old.kid} to {new.kid} "
        f"({report.already_new} already under the new key, {report.other} under other keys). "
        "Now set STATEKEEPER_MASTER_KEY to the new key and restart the servers.",
        highlight=False,
    )


@encryption_app.command("decrypt")
def decrypt(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Argument(
            metavar="FILE", help="A version's bytes as stored (an S3 object or backup copy)"
        ),
    ] = None,
    state: Annotated[
        str | None, typer.Option(help="Decrypt this state from the store instead of a FILE")
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(help="A version ID from 'history', with --state \\[default: the current one]"),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(help="File holding the master key \\[default: STATEKEEPER_MASTER_KEY]"),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to FILE instead of stdout ('-': stdout)"),
    ] = None,
) -> None:
    """Decrypt a stored version with the master key, without a server.

    A state is never hostage to the server running. Give a FILE of stored bytes, or
    --state NAME to read the version from the store; the data key comes from the
    store's key ring.
    """
    from statekeeper.cli.output import write_output
    from statekeeper.errors import BadRequest, ConfigError, StateNotFound
    from statekeeper.storage.encrypting import encrypting, is_encrypted
    from statekeeper.storage.registry import open_store
    from statekeeper.terraform.names import StateName

    if file is None and state is None:
        raise BadRequest("give a FILE of stored bytes or --state NAME: which version to decrypt")
    if file is not None and state is not None:
        raise BadRequest("give either a FILE of stored bytes or --state NAME, not both")
    try:
        key = key_file.read_text() if key_file else None
        raw = file.read_bytes() if file else None
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    cli = obj(ctx, ENCRYPTION_OPTIONS)
    settings = cli.settings(master_key=key)
    if not settings.master_key:
        raise ConfigError("decrypting needs the master key: --key-file or STATEKEEPER_MASTER_KEY")
    with cli.opening():
        raw_store = open_store(settings.store_url, create=False, given_as=settings.store_given_as)
    opened = encrypting(raw_store, settings.master_key, register=False)
    try:
        if raw is not None:
            if not is_encrypted(raw):
                raise BadRequest(f"{file} is not an encrypted version (it is stored in plaintext)")
            plain = opened.decrypt(str(file), raw)
        else:
            assert state is not None
            found = opened.get(str(StateName(state)), version)
            if found is None:
                raise StateNotFound(f"there is no state named {state}")
            plain = found.data
    finally:
        opened.close()
    write_output(plain, output)

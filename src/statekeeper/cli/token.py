"""``statekeeper token``: create, list and revoke API tokens.

The operator on the machine manages tokens directly in the store (the
embedded database) or in the tokens file; the server's ``/api/v1/tokens``
does the same for admins over HTTP. Every change is an event in the audit trail.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from statekeeper.cli import app

if TYPE_CHECKING:
    from statekeeper.app import Services
    from statekeeper.security.caller import Caller
    from statekeeper.security.tokens import TokenService

__all__ = ["operator", "services_for"]

token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")

DataDir = Annotated[Path | None, typer.Option(help="Directory of the embedded store")]
StoreOpt = Annotated[str | None, typer.Option(help="Store URL (sqlite:///…, s3://…)")]
TokensFile = Annotated[Path | None, typer.Option(help="TOML tokens file (stateless replicas)")]
ConfigOpt = Annotated[Path | None, typer.Option(help="TOML config file")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


def operator() -> Caller:
    """The local operator: acts on the store directly, not subject to grants."""
    from statekeeper.security.caller import Caller

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Caller(actor=f"operator:{user}", remote_addr="local")


@contextmanager
def services_for(
    data_dir: Path | None,
    store: str | None,
    config: Path | None,
    tokens_file: Path | None = None,
) -> Iterator[Services]:
    from statekeeper.app import Services
    from statekeeper.settings import load_settings

    settings = load_settings(
        {"data_dir": data_dir, "store": store, "tokens_file": tokens_file}, config_file=config
    )
    services = Services.build(settings)
    try:
        yield services
    finally:
        services.close()


def _tokens(services: Services) -> TokenService:
    from statekeeper.errors import ConfigError

    if services.tokens.store is None:
        raise ConfigError(
            "this store keeps no tokens (it has no database): give --tokens-file FILE, the "
            "TOML file the servers read (setting tokens_file)"
        )
    return services.tokens


@token_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Token name: the username in the backend block")],
    scope: Annotated[
        list[str],
        typer.Option(help="Grant PATTERN:PERMISSION (outputs, read, write, admin); repeatable"),
    ],
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d, 12h, 2w")] = None,
    data_dir: DataDir = None,
    store: StoreOpt = None,
    tokens_file: TokensFile = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token; its secret is printed once and never stored."""
    from statekeeper.cli.output import console, err_console, print_view
    from statekeeper.security.tokens import parse_duration

    lifetime = parse_duration(expires) if expires else None
    with services_for(data_dir, store, config, tokens_file) as services:
        issued = _tokens(services).create(operator(), name, scope, lifetime)
    if as_json:
        from statekeeper.state.views import TokenCreated

        print_view(TokenCreated.issued(issued.record, issued.secret))
        return
    record = issued.record
    err_console.print(
        f"created token [bold]{record.name}[/] with "
        + ", ".join(record.scopes)
        + (f", expiring {record.expires:%Y-%m-%d %H:%M} UTC" if record.expires else ""),
        highlight=False,
    )
    err_console.print("The secret is shown only now; keep it in your CI's secret store:")
    console.print(issued.secret, highlight=False, soft_wrap=True)
    err_console.print(
        f'In the backend block: username = "{record.name}", password = the secret '
        "(or TF_HTTP_USERNAME / TF_HTTP_PASSWORD).",
        highlight=False,
    )


@token_app.command("list")
def list_tokens(
    data_dir: DataDir = None,
    store: StoreOpt = None,
    tokens_file: TokensFile = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List tokens: names, grants, expiry (never secrets)."""
    from rich.table import Table

    from statekeeper.cli.output import console, print_view

    with services_for(data_dir, store, config, tokens_file) as services:
        records = _tokens(services).all(operator())
    if as_json:
        from statekeeper.state.views import TokenView

        print_view([TokenView.of(r) for r in records])
        return
    table = Table("name", "scopes", "created", "expires")
    for r in records:
        until = f"{r.expires:%Y-%m-%d %H:%M}" if r.expires else "never"
        table.add_row(
            r.name,
            "\n".join(r.scopes),
            f"{r.created:%Y-%m-%d %H:%M}",
            ("expired " if r.expired() else "") + until,
        )
    console.print(table)


@token_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="Token name")],
    data_dir: DataDir = None,
    store: StoreOpt = None,
    tokens_file: TokensFile = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    from statekeeper.cli.output import err_console

    with services_for(data_dir, store, config, tokens_file) as services:
        _tokens(services).revoke(operator(), name)
    err_console.print(f"revoked token {name}", highlight=False)

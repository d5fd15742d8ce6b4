"""``statekeeper serve``: the state server Terraform's ``backend "http"`` talks to."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from statekeeper.cli import app

if TYPE_CHECKING:
    from statekeeper.storage.base import ObjectStore

__all__ = ["is_loopback", "listen", "serve"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """Bind the server's socket up front, so that a busy port is a clear error.

    Left to uvicorn, a failed bind is logged after the backend block has been
    printed, and the process exits 3, which this CLI reserves for lock conflicts.
    """
    from statekeeper.errors import ConfigError

    if not 0 < port < 65536:
        raise ConfigError(f"the port {port} is not a TCP port; choose one from 1 to 65535")
    sock: socket.socket | None = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except (OSError, OverflowError) as exc:
        if sock is not None:
            sock.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot listen on {host} port {port}: {reason}; choose another --port "
            "(or stop whatever is using it)"
        ) from exc
    return sock


def _history_warning(store: ObjectStore) -> str:
    return (
        store.history_warning
        or f"the {store.scheme} store keeps no state history: every write replaces the last"
    )


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus the server log's event subscriber: one JSON line per event."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["statekeeper.events"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8080]")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Directory of the embedded store [default: ./.statekeeper]")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Store URL (sqlite:///…, s3://BUCKET/PREFIX)", envvar=None)
    ] = None,
    locks: Annotated[
        list[str] | None,
        typer.Option(help="Lock URL (dynamodb://TABLE, s3lock://BUCKET); give twice for both"),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file")] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug, info, warning or error [default: info]")
    ] = None,
    example_state: Annotated[
        str, typer.Option(help="State name used in the printed backend block")
    ] = "project/terraform.tfstate",
    tokens_file: Annotated[
        Path | None, typer.Option(help="TOML file of API tokens (for stateless replicas)")
    ] = None,
    oidc_config: Annotated[Path | None, typer.Option(help="TOML file configuring OIDC")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate to serve HTTPS")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert")] = None,
) -> None:
    """Serve Terraform's http backend on /state/NAME (embedded SQLite by default)."""
    import uvicorn
    from rich.markup import escape

    from statekeeper.app import Services
    from statekeeper.cli.output import err_console
    from statekeeper.errors import ConfigError
    from statekeeper.security.tokens import tokens_configured
    from statekeeper.server.app import create_app
    from statekeeper.server.auth import auth_configured, security_summary
    from statekeeper.server.tfhttp import backend_block
    from statekeeper.server.wire import HeadersOnlyProtocol
    from statekeeper.settings import load_settings

    settings = load_settings(
        {
            "host": host,
            "port": port,
            "data_dir": data_dir,
            "store": store,
            "locks": ",".join(locks) if locks else None,
            "log_level": log_level,
            "tokens_file": tokens_file,
            "oidc_config": oidc_config,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
        },
        config_file=config,
    )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("HTTPS needs both --tls-cert and --tls-key (PEM files)")
    # Decided before binding or building anything: a refused start leaves nothing behind.
    secured = settings.oidc_config is not None or tokens_configured(
        settings.store_url, settings.tokens_file
    )
    if not secured and not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to serve on {settings.host}: without access control anyone who "
            "can reach the port could read and overwrite every state. Create a token "
            "('statekeeper token create NAME --scope \"**:admin\"'), set tokens_file or "
            "oidc_config, or bind 127.0.0.1 (--host 127.0.0.1)."
        )
    sock = listen(settings.host, settings.port)
    try:
        services = Services.build(settings)
    except BaseException:
        sock.close()
        raise
    try:
        secured = auth_configured(services)
        scheme = "https" if settings.tls_cert else "http"
        url_host = f"[{settings.host}]" if ":" in settings.host else settings.host
        base = f"{scheme}://{url_host}:{settings.port}"
        err_console.print(
            f"statekeeper serving on {base}  store={services.store.scheme} "
            f"locks={services.lock_table.scheme}",
            highlight=False,
        )
        if not services.store.supports_versions:
            err_console.print(
                f"[yellow]warning:[/] {escape(_history_warning(services.store))}",
                highlight=False,
            )
        for line in security_summary(services, secured):
            err_console.print(line, highlight=False)
        print("Paste this into your Terraform configuration:\n")
        print(backend_block(base, example_state), flush=True)
        server_config = uvicorn.Config(
            create_app(services, allow_anonymous=not secured and is_loopback(settings.host)),
            log_level=settings.log_level,
            log_config=_log_config(settings.log_level),
            timeout_graceful_shutdown=10,
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
            server_header=False,
            http=HeadersOnlyProtocol,
        )
        uvicorn.Server(server_config).run(sockets=[sock])
    finally:
        sock.close()
        services.close()

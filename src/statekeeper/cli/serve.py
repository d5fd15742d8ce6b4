"""``statekeeper serve``: the state server Terraform's ``backend "http"`` talks to."""

from __future__ import annotations

import gc
import importlib.util
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from statekeeper.cli.commands import app
from statekeeper.cli.context import obj
from statekeeper.cli.options import PANEL_SERVER, STORE
from statekeeper.server.loopback import is_loopback

# serve opens the store itself and is the server: --server/--token do not apply.
SERVE_OPTIONS = STORE | {"tokens_file"}

if TYPE_CHECKING:
    from statekeeper.storage.base import ObjectStore

__all__ = ["check_tls", "event_loop", "freeze_start_up", "listen", "serve"]


def event_loop() -> str:
    """uvicorn's event loop: uvloop where it is installed (a dependency on every
    platform it supports), asyncio's own elsewhere.

    On uvloop the loop's own work (reading and writing sockets, a worker thread's
    hand-back of its result) is C: the lock cycle costs the server 5 to 7 % less CPU.
    """
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def listen(host: str, port: int) -> socket.socket:
    """Bind the server's socket up front, so that a busy port is a clear error.

    Left to uvicorn, a failed bind is logged after the backend block has been
    printed, and the process exits 3, which this CLI reserves for lock conflicts.
    """
    from statekeeper.errors import ConfigError

    if not 0 < port < 65536:
        raise ConfigError(f"the port {port} is not a TCP port; choose one from 1 to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        # The host is what failed (no such name, not an address), not the port.
        raise ConfigError(
            f"cannot listen on {host}: it is not an address nor a name that resolves "
            f"({exc.strerror}); correct --host (the host setting)"
        ) from exc
    sock: socket.socket | None = None
    try:
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


def check_tls(cert: Path, key: Path) -> None:
    """Load the certificate and its key as uvicorn will, so that a fault is a clear error
    before the banner, not a traceback after it."""
    import ssl

    from statekeeper.errors import ConfigError

    for setting, path in (("tls_cert", cert), ("tls_key", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {setting} {path}: {exc.strerror or exc}") from exc

    def encrypted() -> str:
        raise ConfigError(f"tls_key {key} is encrypted; give the key without a passphrase")

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=encrypted)
    except ssl.SSLError as exc:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
        except ssl.SSLError:
            raise ConfigError(f"tls_cert {cert} is not a PEM certificate") from exc
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"tls_key {key} is not the private key of tls_cert {cert}") from exc
        raise ConfigError(f"tls_key {key} is not a PEM private key") from exc


def freeze_start_up() -> int:
    """Take what start-up built out of the cyclic garbage collector's sight, for good.

    Modules, the app and its routes, settings, the drivers: some 90,000 objects that
    live as long as the process. Python's collector walks every one of them at each
    full (oldest-generation) collection, which under a sustained lock cycle came every
    ten seconds or so and stopped every request in flight for 50-70 ms: the worst of
    the latency tail. Frozen, they are never examined (nor collected) again. Start-up's
    own garbage is collected first, so that none of it is kept forever. Returns how
    many objects are frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def _history_warning(store: ObjectStore) -> str:
    return (
        store.history_warning
        or f"the {store.scheme} store keeps no state history: every write replaces the last"
    )


def _digest_note(store: ObjectStore) -> str:
    # The table is named nowhere in the bucket: whether Terraform uses one is unknown here.
    return (
        "writes keep no DynamoDB digest (no --locks dynamodb://TABLE): if Terraform's own "
        f'backend "s3" also uses s3://{store.lock_namespace} with dynamodb_table, its reads '
        "fail after a write through this server; give the table with --locks "
        "dynamodb://TABLE (docs/protocol.md#digest)"
    )


@app.command(rich_help_panel=PANEL_SERVER)
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to bind \\[default: 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on \\[default: 8080]")] = None,
    log_level: Annotated[
        str | None,
        typer.Option(help="debug, info, warning, error or critical \\[default: info]"),
    ] = None,
    example_state: Annotated[
        str, typer.Option(help="State name used in the printed backend block")
    ] = "project/terraform.tfstate",
    oidc_config: Annotated[Path | None, typer.Option(help="TOML file configuring OIDC")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate to serve HTTPS")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert")] = None,
) -> None:
    """Serve Terraform's http backend on /state/NAME (embedded SQLite by default).

    The store, locks, data directory, config file and tokens file are the global
    options (--store, --locks, --data-dir, --config, --tokens-file).
    """
    import uvicorn
    from rich.markup import escape
    from rich.text import Text

    from statekeeper.app import Services, check_configured_hooks
    from statekeeper.cli.output import err_console
    from statekeeper.errors import ConfigError
    from statekeeper.security.access import AccessFiles
    from statekeeper.security.tokens import tokens_configured
    from statekeeper.server.app import create_app
    from statekeeper.server.auth import auth_configured, security_summary
    from statekeeper.server.connections import bounded_protocol
    from statekeeper.server.scrape import MetricsListener
    from statekeeper.server.tfhttp import backend_block
    from statekeeper.telemetry.logs import (
        flush_at_termination,
        json_line,
        lean_records,
        log_config,
        resolve_format,
    )
    from statekeeper.telemetry.metrics import Metrics

    settings = obj(ctx, SERVE_OPTIONS).settings(
        host=host,
        port=port,
        log_level=log_level,
        oidc_config=oidc_config,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    if settings.metrics_listen and not settings.metrics:
        raise ConfigError(
            f"metrics_listen = {settings.metrics_listen} asks for a metrics listener, but "
            "metrics = false turns metrics off; remove one of the two settings"
        )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("HTTPS needs both --tls-cert and --tls-key (PEM files)")
    if settings.tls_cert is not None and settings.tls_key is not None:
        check_tls(settings.tls_cert, settings.tls_key)
    # The access-control files are read whole, once, before binding or building anything:
    # a fault in the tokens file would otherwise first show as every request's 500.
    access = AccessFiles.read(settings)
    # A server that cannot sign its webhooks, or whose hooks lead nowhere, must not start
    # quietly (the delivery worker reads the secrets again, from the same place).
    check_configured_hooks(settings, os.environ)
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
    scraper: MetricsListener | None = None
    try:
        metrics = Metrics(settings.metrics_states) if settings.metrics else None
        services = Services.build(settings, metrics=metrics, access=access)
    except BaseException:
        sock.close()
        raise
    try:
        # An encrypted store without its key would take plaintext writes beside it.
        services.require_key()
    except BaseException:
        sock.close()
        services.close()
        raise
    try:
        json_logs = resolve_format(settings.log_format) == "json"

        def say(markup: str) -> None:
            """A start-up line: rich text on a terminal, one JSON object in JSON logs."""
            if json_logs:
                plain = Text.from_markup(markup).plain
                level = "warning" if plain.startswith("warning:") else "info"
                print(json_line(level, "statekeeper.serve", plain), file=sys.stderr, flush=True)
            else:
                err_console.print(markup, highlight=False)

        services.build_parts()
        services.hooks.start(settings)  # a worker process delivers the outbox, old rows too
        # A new replica's index builds in the background; searches meanwhile answer from
        # what is indexed so far, with a note saying how far the build is. On the embedded
        # store it starts now; a replica on S3 keeps nothing on local disk until the index
        # is first used (a search, the UI, a listing), which starts it.
        services.build_index_in_background = True
        if services.store.records.database is not None:
            services.inventory()
        if metrics is not None and settings.metrics_listen:
            # The server's socket listens first: bound and not yet listening, it let a
            # metrics_listen on its own port bind beside it and take every connection,
            # the server serving nothing; a listening one makes that port in use.
            sock.listen()
            scraper = MetricsListener(settings.metrics_listen, metrics).start()
            say(f"metrics (no credentials needed) on http://{settings.metrics_listen}/metrics")
        secured = auth_configured(services)
        scheme = "https" if settings.tls_cert else "http"
        url_host = f"[{settings.host}]" if ":" in settings.host else settings.host
        base = f"{scheme}://{url_host}:{settings.port}"
        loop = event_loop()
        say(
            f"statekeeper serving on {base}  store={services.store.scheme} "
            f"locks={services.lock_table.scheme} loop={loop}"
        )
        if not services.store.supports_versions:
            say(f"[yellow]warning:[/] {escape(_history_warning(services.store))}")
        if services.store.scheme == "s3" and not services.lock_table.keeps_digests:
            say(f"[yellow]note:[/] {escape(_digest_note(services.store))}")
        for line in security_summary(services, secured):
            say(line)
        print("Paste this into your Terraform configuration:\n")
        print(backend_block(base, example_state, secured), flush=True)
        lean_records()
        flush_at_termination()
        server_config = uvicorn.Config(
            create_app(services, allow_anonymous=not secured and is_loopback(settings.host)),
            log_level=settings.log_level,
            log_config=log_config(settings.log_format, settings.log_level),
            access_log=False,  # statekeeper's access line, with the request ID, replaces it
            timeout_graceful_shutdown=10,
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
            server_header=False,
            http=bounded_protocol(settings.header_timeout, settings.max_connections),
            # No WebSocket routes: an upgrade request is plain HTTP whatever is installed.
            ws="none",
            loop=loop,
        )
        server = uvicorn.Server(server_config)
        freeze_start_up()
        server.run(sockets=[sock])
    finally:
        sock.close()
        if scraper is not None:
            scraper.close()
        services.close()

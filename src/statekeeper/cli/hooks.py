"""``statekeeper hooks``: webhook subscriptions, a test delivery, and the delivery log.

Subscriptions live in the embedded database, beside the outbox; a running
server picks up a change within two seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from statekeeper.cli import app
from statekeeper.cli.token import services_for

if TYPE_CHECKING:
    from statekeeper.app import Services
    from statekeeper.hooks.service import Webhooks

__all__: list[str] = []

hooks_app = typer.Typer(
    help="Webhooks on state events: add, list, remove, test, deliveries.", no_args_is_help=True
)
app.add_typer(hooks_app, name="hooks")

DataDir = Annotated[Path | None, typer.Option(help="Directory of the embedded store")]
StoreOpt = Annotated[str | None, typer.Option(help="Store URL (sqlite:///…)")]
ConfigOpt = Annotated[Path | None, typer.Option(help="TOML config file")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


def _hooks(services: Services) -> Webhooks:
    from statekeeper.errors import CapabilityMissing

    if services.hooks is None:
        raise CapabilityMissing(
            "webhooks keep their outbox in the embedded database, and this store has none "
            "(an outbox on S3 is not implemented yet): use the sqlite store"
        )
    return services.hooks


@hooks_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Subscription name")],
    url: Annotated[str, typer.Option(help="Where deliveries are POSTed (http(s)://…)")],
    secret: Annotated[
        str | None, typer.Option(help="Signing secret [default: a new random one, printed once]")
    ] = None,
    state: Annotated[
        list[str] | None, typer.Option(help="State glob (team/**); repeatable [default: **]")
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option(help="Event type (state.written, lock.forced, …); repeatable [default: all]"),
    ] = None,
    data_dir: DataDir = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add (or replace) a subscription."""
    from statekeeper.cli.output import console, err_console, print_json
    from statekeeper.hooks.model import EVENT_TYPES, Subscription

    with services_for(data_dir, store, config) as services:
        sub = _hooks(services).add(
            Subscription(
                name=name,
                url=url,
                secret=secret or "",
                states=tuple(state or ("**",)),
                events=tuple(event or EVENT_TYPES),
            )
        )
    if as_json:
        print_json(sub.to_json(with_secret=secret is None))
        return
    err_console.print(
        f"hook {sub.name}: {', '.join(sub.events)} on {', '.join(sub.states)} → {sub.url}",
        highlight=False,
    )
    if secret is None:
        err_console.print("The signing secret is shown only now; give it to the receiver:")
        console.print(sub.secret, highlight=False, soft_wrap=True)


@hooks_app.command("list")
def list_hooks(
    data_dir: DataDir = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List subscriptions (never their secrets)."""
    from rich.table import Table

    from statekeeper.cli.output import console, print_json

    with services_for(data_dir, store, config) as services:
        subs = _hooks(services).outbox.subscriptions()
    if as_json:
        print_json([s.to_json() for s in subs])
        return
    table = Table("name", "url", "states", "events")
    for s in subs:
        table.add_row(s.name, s.url, "\n".join(s.states), "\n".join(s.events))
    console.print(table)


@hooks_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="Subscription name")],
    data_dir: DataDir = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Remove a subscription; its undelivered events are dropped as dead letters."""
    from statekeeper.cli.output import err_console

    with services_for(data_dir, store, config) as services:
        _hooks(services).remove(name)
    err_console.print(f"removed hook {name}", highlight=False)


@hooks_app.command("test")
def send_test(
    name: Annotated[str, typer.Argument(help="Subscription name")],
    data_dir: DataDir = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Send a signed io.statekeeper.ping now and print the receiver's answer."""
    from statekeeper.cli.output import err_console

    with services_for(data_dir, store, config) as services:
        status = _hooks(services).test(name)
    err_console.print(f"hook {name} answered {status}", highlight=False)
    if not 200 <= status < 300:
        raise typer.Exit(1)


@hooks_app.command("deliveries")
def deliveries(
    hook: Annotated[str | None, typer.Option(help="Only this subscription")] = None,
    outcome: Annotated[
        str | None, typer.Option(help="delivered, retry or dead (the dead letters)")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 100,
    data_dir: DataDir = None,
    store: StoreOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The delivery log: every attempt, its answer and what came of it."""
    from rich.table import Table

    from statekeeper.cli.output import console, print_json

    with services_for(data_dir, store, config) as services:
        rows = _hooks(services).outbox.deliveries(hook, outcome, limit)
    if as_json:
        print_json(rows)
        return
    table = Table("time", "hook", "type", "event", "attempt", "status", "outcome", "error")
    for r in rows:
        table.add_row(
            r["time"],
            r["hook"],
            r["type"],
            r["event_id"],
            str(r["attempt"]),
            str(r["status"] or "-"),
            r["outcome"],
            r["error"] or "",
        )
    console.print(table)

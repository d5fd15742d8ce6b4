"""``statekeeper hooks``: webhook subscriptions, a test delivery, and the delivery log.

Subscriptions live in the embedded database, beside the outbox; a running
server picks up a change within two seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from statekeeper.cli.commands import JsonFlag, app
from statekeeper.cli.context import obj
from statekeeper.cli.options import PANEL_SERVER, STORE

if TYPE_CHECKING:
    from statekeeper.app import Services
    from statekeeper.hooks.service import Webhooks

__all__: list[str] = []

hooks_app = typer.Typer(
    help="Webhooks on state events: add, list, remove, test, deliveries, redeliver.",
    no_args_is_help=True,
)
app.add_typer(hooks_app, name="hooks", rich_help_panel=PANEL_SERVER)

# The outbox is the store's own: only a process opening the store reaches it.
HOOKS_OPTIONS = STORE


def _hooks(services: Services) -> Webhooks:
    return services.hooks


@hooks_app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Subscription name")],
    url: Annotated[str, typer.Option(help="Where deliveries are POSTed (http(s)://…)")],
    secret: Annotated[
        str | None,
        typer.Option(
            help="Signing secret (seen in shell history and ps: prefer --secret-file) "
            "\\[default: a new random one, printed once]",
        ),
    ] = None,
    secret_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Read the signing secret from FILE ('-' for stdin), not from the command line",
        ),
    ] = None,
    state: Annotated[
        list[str] | None, typer.Option(help="State glob (team/**); repeatable \\[default: **]")
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option(
            help="Event type (state.written, lock.forced, …); repeatable \\[default: all]"
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Add (or replace) a subscription."""
    from statekeeper.cli.output import console, err_console, print_view
    from statekeeper.errors import BadRequest
    from statekeeper.hooks.model import EVENT_TYPES, Subscription

    if secret_file is not None:
        if secret is not None:
            raise BadRequest("give the secret with --secret or --secret-file, not both")
        secret = _read_secret(secret_file)
    # An empty secret would be replaced by a random one that is never shown: the
    # receiver could not verify a single delivery.
    if secret is not None and not secret.strip():
        raise BadRequest(
            "--secret is empty; give the receiver's signing secret, or leave --secret out "
            "to have one generated (printed once)"
        )
    services = obj(ctx, HOOKS_OPTIONS).services()
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
        from statekeeper.hooks.views import HookCreated

        print_view(HookCreated.added(sub, show_secret=secret is None))
        return
    err_console.print(
        f"hook {sub.name}: {', '.join(sub.events)} on {', '.join(sub.states)} → {sub.shown_url}",
        highlight=False,
    )
    if secret is None:
        err_console.print("The signing secret is shown only now; give it to the receiver:")
        console.print(sub.secret, highlight=False, soft_wrap=True)


def _read_secret(path: Path) -> str:
    """``--secret-file``: the secret in ``path`` (``-``: stdin), without the blanks around
    it (the line break an editor or ``echo`` ends it with), as ``X_FILE`` settings are read."""
    import sys

    from statekeeper.errors import BadRequest

    where = "stdin" if str(path) == "-" else f"the file {path}"
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise BadRequest(f"--secret-file: cannot read {where}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise BadRequest(f"--secret-file: {where} is not UTF-8 text") from exc
    if not text.strip():
        # Most often a secret that was not mounted or a variable that was not set: an
        # empty one is refused as --secret '' is, never replaced by a generated one.
        raise BadRequest(
            f"--secret-file: {where} is empty; it must hold the receiver's signing secret "
            "(or leave the option out to have one generated, printed once)"
        )
    return text.strip()


@hooks_app.command("list")
def list_hooks(
    ctx: typer.Context,
    as_json: JsonFlag = False,
) -> None:
    """List the subscriptions and where each one's secret is, never the secret.

    FROM says where a subscription comes from: the config file's [\\[hooks]] (config;
    change them in the file) or 'hooks add' (command). SECRET says where its secret
    is: env VAR, file PATH or inline for a configured one, stored for one added by
    command; the secret is not read.
    """
    # "\\[" escapes the bracket: the help is rich markup, where [hooks] would be a tag.
    from statekeeper.cli.output import print_view
    from statekeeper.cli.render import print_table

    services = obj(ctx, HOOKS_OPTIONS).services()
    subs = _hooks(services).all()
    if as_json:
        from statekeeper.hooks.views import HookView

        print_view([HookView.of(s) for s in subs])
        return
    rows = [
        [
            s.name,
            "config" if s.configured else "command",
            s.secret_source,
            s.shown_url,
            *map(" ".join, (s.states, s.events)),
        ]
        for s in subs
    ]
    print_table(["NAME", "FROM", "SECRET", "URL", "STATES", "EVENTS"], rows)


@hooks_app.command("remove")
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Subscription name")],
) -> None:
    """Remove a subscription; its undelivered events become dead letters.

    A subscription from the config file is refused: remove it from the file.
    """
    from statekeeper.cli.output import err_console

    services = obj(ctx, HOOKS_OPTIONS).services()
    _hooks(services).remove(name)
    err_console.print(f"removed hook {name}", highlight=False)


@hooks_app.command("test")
def send_test(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Subscription name")],
) -> None:
    """Send a signed io.statekeeper.ping now and print the receiver's answer.

    Exit 1 unless the answer is 2xx.
    """
    from statekeeper.cli.output import err_console

    services = obj(ctx, HOOKS_OPTIONS).services()
    status = _hooks(services).test(name)
    err_console.print(f"hook {name} answered {status}", highlight=False)
    if not 200 <= status < 300:
        raise typer.Exit(1)


@hooks_app.command("deliveries")
def deliveries(
    ctx: typer.Context,
    hook: Annotated[str | None, typer.Option(help="Only this subscription")] = None,
    outcome: Annotated[
        str | None, typer.Option(help="delivered, retry or dead (the dead letters)")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=10_000, help="At most this many, newest first")
    ] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Show the delivery log, newest first: every attempt and what came of it."""
    from statekeeper.cli.output import print_view
    from statekeeper.cli.render import print_table
    from statekeeper.errors import BadRequest
    from statekeeper.hooks.outbox import OUTCOMES

    if outcome is not None and outcome not in OUTCOMES:
        raise BadRequest(
            f"no attempt has the outcome {outcome!r}; choose from {', '.join(OUTCOMES)}"
        )

    services = obj(ctx, HOOKS_OPTIONS).services()
    rows = _hooks(services).outbox.deliveries(hook, outcome, limit)
    if as_json:
        from statekeeper.hooks.views import DeliveryView

        print_view([DeliveryView.of(r) for r in rows])
        return
    cells = [
        [
            r["time"],
            r["hook"],
            r["type"],
            r["event_id"],
            str(r["attempt"]),
            str(r["status"] or "-"),
            r["outcome"],
            r["error"] or "",
        ]
        for r in rows
    ]
    print_table(["TIME", "HOOK", "TYPE", "EVENT", "ATTEMPT", "STATUS", "OUTCOME", "ERROR"], cells)


@hooks_app.command("redeliver")
def redeliver(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Subscription name")],
    event_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[EVENT_ID]",
            help="The dead letter's event ID (EVENT of 'hooks deliveries --outcome dead')",
        ),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every dead letter of NAME (or those since --since)")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(help="With --all: only those that died at this RFC 3339 time or after"),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Send dead letters again, with the same event IDs.

    Each is queued as new (receivers dedupe on its event ID) and delivered by a running
    server with its retries."""
    from statekeeper.cli.output import err_console, print_view
    from statekeeper.errors import BadRequest
    from statekeeper.hooks.views import Redelivered
    from statekeeper.times import parse_rfc3339

    if (event_id is None) == (not every):
        raise BadRequest(
            "give one dead letter's EVENT_ID or --all (every dead letter of the hook), "
            "not both nor neither"
        )
    if since is not None and not every:
        raise BadRequest("--since chooses among all the dead letters: give it with --all")
    try:
        after = None if since is None else parse_rfc3339(since)
    except ValueError as exc:
        raise BadRequest(f"--since: {exc}, e.g. 2026-01-01T00:00:00Z") from exc
    services = obj(ctx, HOOKS_OPTIONS).services()
    queued = _hooks(services).redeliver(name, event_id, after)
    if as_json:
        print_view(Redelivered(hook=name, events=queued))
        return
    err_console.print(
        f"hook {name}: {len(queued)} dead letter{'' if len(queued) == 1 else 's'} queued "
        "again; a running server delivers them",
        highlight=False,
    )

"""What the global options select: the local store, or a server's JSON API.

Commands ask :meth:`CliContext.backend` for an object with the operator's
methods. On a store (``--store``/``--locks`` or the embedded default) it is
the services' :class:`~statekeeper.state.operator.Operator`, called
directly, never over HTTP. With ``--server`` it is
:class:`~statekeeper.cli.remote.RemoteBackend`, which calls the same
operations through ``/api/v1``. Both answer with the same JSON.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from statekeeper.security.caller import Caller
from statekeeper.terraform.names import StateName

if TYPE_CHECKING:
    from statekeeper.app import Services
    from statekeeper.events import EventStream
    from statekeeper.inventory.views import InventoryCounts, SearchResult
    from statekeeper.settings import Settings
    from statekeeper.state.listing import Unaddressable
    from statekeeper.state.views import (
        DiffView,
        HistoryEntry,
        LockEntry,
        PushResult,
        Release,
        RollbackResult,
        StateDetail,
        StateEntry,
    )

__all__ = ["Backend", "CliContext", "LocalBackend", "local_caller", "obj"]


def local_caller() -> Caller:
    """``user@host``, the way Terraform fills ``Who`` in a LockInfo."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return Caller(actor=f"{user}@{_hostname()}")


def _hostname() -> str:
    # The kernel's node name is what gethostname() returns; socket is not imported
    # for it (a CLI's start-up).
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


class Backend(Protocol):
    """The operator's operations, answering with the views of :mod:`statekeeper.state.views`."""

    #: The keys the listings so far left out: no state name statekeeper can address.
    left_out: Unaddressable

    def list_states(self, prefix: str, details: bool) -> list[StateEntry]: ...
    def show(self, name: StateName, version: str | None) -> StateDetail: ...
    def pull(self, name: StateName, version: str | None) -> bytes: ...
    def push(self, name: StateName, data: bytes, force: bool) -> PushResult: ...
    def history(self, name: StateName, limit: int | None) -> list[HistoryEntry]: ...
    def diff(self, name: StateName, from_ref: str | None, to_ref: str | None) -> DiffView: ...
    def rollback(self, name: StateName, to_ref: str) -> RollbackResult: ...
    def list_locks(self, prefix: str) -> list[LockEntry]: ...
    def unlock(self, name: StateName, lock_id: str | None, force: bool) -> Release: ...
    def reap(
        self, older_than: str, operation: str | None, prefix: str, dry_run: bool
    ) -> list[Release]: ...
    def search(self, query: str, limit: int) -> SearchResult: ...
    def inventory(self) -> InventoryCounts: ...
    def unkept_digest(self, name: StateName) -> str | None:
        """Why a write of ``name`` left Terraform's DynamoDB digest stale, if it may have."""
        ...

    def close(self) -> None: ...


class LocalBackend:
    """The operator on this process's own store, as ``user@host``."""

    def __init__(self, services: Services, caller: Caller) -> None:
        from statekeeper.state.listing import Unaddressable
        from statekeeper.state.operator import Operator

        self.services = services
        self.caller = caller
        self.left_out = Unaddressable()
        self.op = Operator(
            services,
            workspace_key_prefix=services.settings.workspace_key_prefix,
            # A CLI run is a new process: it answers from an index already on disk
            # (built by 'statekeeper search' or an earlier run) and never builds one
            # just to list, which on S3 would read every state instead of one listing.
            index=services.inventory if services.inventory_path.exists() else None,
        )

    def list_states(self, prefix: str, details: bool) -> list[StateEntry]:
        return self.op.list_states(
            self.caller, prefix, details=details, unaddressable=self.left_out
        )

    def show(self, name: StateName, version: str | None) -> StateDetail:
        return self.op.show(self.caller, name, version)

    def pull(self, name: StateName, version: str | None) -> bytes:
        return self.op.pull(self.caller, name, version)

    def push(self, name: StateName, data: bytes, force: bool) -> PushResult:
        return self.op.push(self.caller, name, data, force=force)

    def history(self, name: StateName, limit: int | None) -> list[HistoryEntry]:
        return self.op.history(self.caller, name, limit)

    def diff(self, name: StateName, from_ref: str | None, to_ref: str | None) -> DiffView:
        return self.op.diff(self.caller, name, from_ref, to_ref)

    def rollback(self, name: StateName, to_ref: str) -> RollbackResult:
        return self.op.rollback(self.caller, name, to_ref)

    def list_locks(self, prefix: str, now: datetime | None = None) -> list[LockEntry]:
        return self.op.list_locks(self.caller, prefix, now, unaddressable=self.left_out)

    def unlock(self, name: StateName, lock_id: str | None, force: bool) -> Release:
        return self.op.unlock(self.caller, name, lock_id=lock_id, force=force)

    def reap(
        self, older_than: str, operation: str | None, prefix: str, dry_run: bool
    ) -> list[Release]:
        return self.op.reap(
            self.caller,
            older_than=older_than,
            operation=operation,
            prefix=prefix,
            dry_run=dry_run,
            unaddressable=self.left_out,
        )

    def search(self, query: str, limit: int) -> SearchResult:
        from statekeeper.inventory.views import search

        s = self.services
        return search(s.inventory(), s.policy, self.caller, query, limit)

    def inventory(self) -> InventoryCounts:
        from statekeeper.inventory.views import counts

        s = self.services
        return counts(s.inventory(), s.policy, self.caller)

    def unkept_digest(self, name: StateName) -> str | None:
        return self.services.states.unkept_digest(name)

    def close(self) -> None:
        self.services.close()


@dataclass
class CliContext:
    """The global options, and what they open (once, closed when the command ends).

    ``given`` names the options typed on the command line (not those from the
    environment or a config file): a command refuses those it does not use.
    """

    store: str | None = None
    locks: str | None = None
    server: str | None = None
    token: str | None = None
    data_dir: Path | None = None
    config: Path | None = None
    tokens_file: Path | None = None
    given: frozenset[str] = frozenset()
    #: The command running, as typed after ``statekeeper`` (``token create``); set by obj().
    command: str = ""
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def check(self, command: str, accepts: frozenset[str]) -> None:
        """Refuse (exit 2) a global option given for a command that does not use it."""
        from statekeeper.errors import ConfigError

        for name in sorted(self.given - accepts):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"{flag} does not apply to '{command}': it uses "
                + (", ".join("--" + a.replace("_", "-") for a in sorted(accepts)) or "none")
                + f" of the global options; leave {flag} out"
            )
        if "token" in self.given and not self.server:
            raise ConfigError(
                "--token is the bearer token for --server; give --server URL too "
                "(or leave --token out to open the store directly)"
            )
        if self.server and self.given & {"store", "locks", "data_dir", "tokens_file"}:
            raise ConfigError(
                "--server and --store/--locks/--data-dir/--tokens-file both given: use the "
                "server's API (--server) or open the store directly, not both"
            )

    def settings(self, **flags: object) -> Settings:
        """The settings, with the global options and ``flags`` (a command's own) on top."""
        from statekeeper.settings import load_settings

        return load_settings(
            {
                "store": self.store,
                "locks": self.locks,
                "data_dir": self.data_dir,
                "tokens_file": self.tokens_file,
                **flags,
            },
            config_file=self.config,
        )

    def services(self) -> Services:
        """The services on the configured store, closed when the command ends."""
        services = self._build()
        self.on_close(services.close)
        return services

    @property
    def creates_store(self) -> bool:
        """Whether this command may make a new store (it writes); else it must exist."""
        from statekeeper.cli.options import CREATES_STORE

        return self.command in CREATES_STORE

    def _build(self) -> Services:
        from statekeeper.app import Services

        with self.opening():
            return Services.build(self.settings(), create=self.creates_store)

    @contextmanager
    def opening(self) -> Iterator[None]:
        """A store that is not there is named, with where the store is looked for."""
        from statekeeper.errors import StoreNotFound

        try:
            yield
        except StoreNotFound as exc:
            raise StoreNotFound(
                f"{exc.message}, and '{self.command}' opens an existing store only "
                "(push, serve and migrate make a new one). The store is --store "
                "(STATEKEEPER_STORE, store in the config file), else statekeeper.db in "
                "--data-dir (STATEKEEPER_DATA_DIR; default: ./.statekeeper here)"
            ) from exc

    def store_events(self) -> tuple[EventStream, bool]:
        """A stream for commands that act on AWS directly, and whether it reaches an
        audit trail.

        Each event goes to the configured store's stream (its audit trail, the
        log), opened when the first event is recorded, i.e. after the work
        (bootstrap may create the very bucket the store is in); a store that
        cannot be opened then is logged with the event. With no store given and
        no embedded database here, the events are only logged (as a token change
        with a tokens file is), so that no stray ./.statekeeper appears.
        """
        from statekeeper.cli.admin import log_unstored
        from statekeeper.events import Event, EventStream

        settings = self.settings()
        stream = EventStream()
        if settings.store is None and not (settings.data_dir / "statekeeper.db").exists():
            stream.subscribe(log_unstored)
            return stream, False
        opened: list[Services] = []

        def forward(event: Event) -> None:
            if not opened:
                opened.append(self.services())
            opened[0].events.emit(event)

        stream.subscribe(forward)
        return stream, True

    def backend(self) -> Backend:
        if self.server:
            from statekeeper.cli.remote import RemoteBackend

            backend: Backend = RemoteBackend(self.server, self.token)
        else:
            backend = LocalBackend(self._build(), local_caller())
        self.on_close(backend.close)
        return backend

    def on_close(self, close: Callable[[], None]) -> None:
        """Call ``close`` when the command ends (the last opened is closed first)."""
        self._closers.append(close)

    def close(self) -> None:
        """Close everything opened, the last first; one failing does not skip the rest."""
        if self._closers:
            close = self._closers.pop()
            try:
                close()
            finally:
                self.close()


class CommandContext(Protocol):
    """A click context, from click itself or from typer's copy of it (the root is
    click; most commands are typer's)."""

    obj: Any

    @property
    def command_path(self) -> str: ...

    def find_root(self) -> CommandContext: ...


def obj(ctx: CommandContext, accepts: frozenset[str]) -> CliContext:
    """The CliContext of the root command, once the global options given are checked
    against ``accepts``, the ones this command uses."""
    root = ctx.find_root()
    assert isinstance(root.obj, CliContext), "the root callback sets the context"
    root.obj.check(ctx.command_path, accepts)
    root.obj.command = ctx.command_path.removeprefix(root.command_path).strip()
    return root.obj

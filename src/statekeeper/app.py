"""One object that builds everything from settings; it wires and holds no rules."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

from statekeeper.events import Event, EventStream
from statekeeper.security.audit import AuditLog, open_audit_log
from statekeeper.security.grants import ScopePolicy
from statekeeper.security.policy import Policy
from statekeeper.settings import Settings
from statekeeper.state.locks import LockService
from statekeeper.state.replaced import ReplacedLedger, open_ledger
from statekeeper.storage.base import LockTable, ObjectStore
from statekeeper.storage.encrypting import KeyService, encrypting
from statekeeper.storage.registry import open_locks, open_store
from statekeeper.telemetry.logs import log_event

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from statekeeper.hooks.model import Subscription
    from statekeeper.hooks.service import Webhooks
    from statekeeper.inventory import Inventory
    from statekeeper.security.access import AccessFiles
    from statekeeper.security.oidc import OidcVerifier
    from statekeeper.security.signouts import SignedOut
    from statekeeper.security.tokens import TokenService
    from statekeeper.state.compaction import Compactor
    from statekeeper.state.history import HistoryService
    from statekeeper.state.service import StateService
    from statekeeper.state.trash import TrashService
    from statekeeper.telemetry.metrics import Metrics

__all__ = ["Services", "build_webhooks"]

T = TypeVar("T")


@dataclass
class Services:
    settings: Settings
    store: ObjectStore
    lock_table: LockTable
    policy: Policy
    #: Every operation's event; the audit trail and the log subscribe to it.
    events: EventStream
    locks: LockService
    audit: AuditLog
    keys: KeyService
    oidc: OidcVerifier | None = None
    #: The server's metrics (``serve`` builds them; the CLI does without).
    metrics: Metrics | None = None
    #: Compaction's record of how many snapshots each kept version replaced.
    ledger: ReplacedLedger | None = None
    #: The access-control files as ``serve`` read them before it bound (None: read here).
    access: AccessFiles | None = field(default=None, repr=False)
    # Built on first use (the properties below): a lock listing does without them,
    # and their modules are most of a CLI command's start-up.
    _states: StateService | None = field(default=None, repr=False)
    _history: HistoryService | None = field(default=None, repr=False)
    _trash: TrashService | None = field(default=None, repr=False)
    _compactor: Compactor | None = field(default=None, repr=False)
    _tokens: TokenService | None = field(default=None, repr=False)
    _hooks: Webhooks | None = field(default=None, repr=False)
    _signouts: SignedOut | None = field(default=None, repr=False)
    # Reentrant: a part may be built from another's (the trash from the states).
    _parts_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _inventory: Inventory | None = field(default=None, repr=False)
    _inventory_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Set by ``serve``: the index builds in the background once opened, and answers
    #: from what it holds meanwhile (see :meth:`Inventory.start_build`).
    build_index_in_background: bool = field(default=False, repr=False)

    def _part(self, name: str, make: Callable[[], T]) -> T:
        """The part kept in the field ``name``, made by ``make`` on first use (once,
        whatever the threads). Read without the lock once made: the request path asks
        for the states, the tokens and the webhooks on every request."""
        part = self.__dict__[name]
        if part is None:
            with self._parts_lock:
                part = self.__dict__[name]
                if part is None:
                    part = self.__dict__[name] = make()
        return cast(T, part)

    @property
    def states(self) -> StateService:
        """Reading and writing states."""

        def make() -> StateService:
            from statekeeper.state.service import StateService

            return StateService(self.store, self.locks, self.policy, self.events)

        return self._part("_states", make)

    @property
    def history(self) -> HistoryService:
        """A state's versions, as kept and compacted."""

        def make() -> HistoryService:
            from statekeeper.state.history import HistoryService

            return HistoryService(self.store, self.policy, self.ledger)

        return self._part("_history", make)

    @property
    def trash(self) -> TrashService:
        """Deleted states, restorable for ``history.trash``."""

        def make() -> TrashService:
            from statekeeper.state.trash import TrashService

            trash = self.settings.history.trash
            return TrashService(self.store, self.locks, trash, self.states.forget)

        return self._part("_trash", make)

    @property
    def tokens(self) -> TokenService:
        """API tokens: the tokens file, or the embedded database's table."""

        def make() -> TokenService:
            from statekeeper.security.tokens import TokenService, open_token_store

            read = self.access.tokens if self.access is not None else None
            store = read or open_token_store(self.store.records, self.settings.tokens_file)
            return TokenService(store, self.policy, self.events)

        return self._part("_tokens", make)

    @property
    def signouts(self) -> SignedOut:
        """The web UI's signed-out sessions (opened by the first UI request that asks)."""

        def make() -> SignedOut:
            from statekeeper.security.signouts import open_signouts

            return open_signouts(self.store.records, self.settings.session_hours * 3600)

        return self._part("_signouts", make)

    @property
    def hooks(self) -> Webhooks:
        """Webhooks: their outbox in the store's database, or beside its states on S3.
        Built at once by a server and for a config file's hooks (a hook it refuses
        fails the start), else by the first event: a lock listing never needs them."""
        return self._part(
            "_hooks", lambda: build_webhooks(self.settings, self.store, self.lock_table)
        )

    def build_parts(self) -> None:
        """Build now what is otherwise built on first use: a server pays for it at its
        start (which then freezes it out of the collector's sight), not on its first
        requests."""
        _ = self.states, self.history, self.tokens, self.hooks

    def _wake_for(self, event: Event) -> None:
        if self._hooks is not None:  # a process that never built them has no sender
            self._hooks.wake_for(event)

    def _observe_for_hooks(self, event: Event) -> None:
        self.hooks.observe_event(event)

    @property
    def compactor(self) -> Compactor:
        """Compaction of a lock's snapshots, started by the release of the lock."""

        def make() -> Compactor:
            from statekeeper.state.compaction import Compactor

            assert self.ledger is not None  # build opens it
            return Compactor(
                self.store, self.ledger, self.settings.history, self.policy, self.events
            )

        return self._part("_compactor", make)

    def _compact(self, event: Event) -> None:
        self.compactor.on_event(event)

    @property
    def inventory_path(self) -> Path:
        """Where this process keeps its search index (derived data, rebuildable)."""
        return self.settings.data_dir / "inventory.db"

    def inventory(self) -> Inventory:
        """The search index, opened on first use; until then a catch-up on opening covers
        the writes its event subscriber did not see."""
        with self._inventory_lock:
            if self._inventory is None:
                # Imported here: the index's modules (and pydantic's views) are the
                # heaviest imports of a CLI run that never searches.
                from statekeeper.inventory import Inventory

                self._inventory = Inventory(
                    self.inventory_path,
                    self.store,
                    self.settings.inventory_refresh,
                    time_limit=self.settings.search_time_limit,
                )
                if self.build_index_in_background:
                    self._inventory.start_build()
            return self._inventory

    def _index_change(self, event: Event) -> None:
        if self._inventory is not None:
            self._inventory.on_event(event)

    @classmethod
    def build(
        cls,
        settings: Settings,
        policy: Policy | None = None,
        metrics: Metrics | None = None,
        *,
        create: bool = True,
        access: AccessFiles | None = None,
    ) -> Services:
        """The services on the configured store; ``create=False``: the store must exist
        (StoreNotFound), for a command that only reads. ``access``: the tokens file and
        OIDC config read already (``serve`` reads them before it binds), not read again."""
        raw = open_store(settings.store_url, create=create, given_as=settings.store_given_as)
        locks_url, locks_given_as = settings.locks_url, settings.locks_given_as
        try:
            if metrics is None:
                store = encrypting(raw, settings.master_key)
                table = open_locks(locks_url, store, create=create, given_as=locks_given_as)
            else:
                # Imported here: only the server keeps metrics (a CLI's start-up).
                from statekeeper.storage.metered import MeteredLocks, MeteredStore

                # Timed below the encryption: the figures are the driver's own.
                store = encrypting(MeteredStore(raw, metrics), settings.master_key)
                table = MeteredLocks(
                    open_locks(locks_url, store, create=create, given_as=locks_given_as), metrics
                )
        except BaseException:
            raw.close()
            raise
        try:
            audit = open_audit_log(store.records)
            ledger = open_ledger(store.records)
            oidc = _oidc(settings, access)
        except BaseException:
            table.close()
            store.close()
            raise
        events = EventStream()
        events.enclose(audit.grouped)
        events.stage(audit.stage)
        events.subscribe(audit.record)
        events.subscribe(log_event)
        policy = policy or ScopePolicy()
        locks = LockService(
            store,
            table,
            policy,
            events,
            max_lock_info=settings.max_lock_info,
            lock_policy=settings.lock_policy,
        )
        built = cls(
            settings=settings,
            store=store,
            lock_table=table,
            policy=policy,
            events=events,
            locks=locks,
            audit=audit,
            keys=KeyService(store, events),
            oidc=oidc,
            metrics=metrics,
            ledger=ledger,
            access=access,
        )
        if metrics is not None or settings.hooks:
            # Built now by a server, and for a config file's hooks: a hook the server
            # refuses fails the start, never an event later.
            try:
                built.hooks  # noqa: B018 - the property builds them
            except BaseException:
                table.close()
                store.close()
                raise
        # Where the audit trail is in the database, it is the outbox's log: the sender
        # makes the rows of its records (hooks/outbox.py), the request only wakes it.
        if store.records.database is not None:
            events.subscribe(built._wake_for)
        else:
            events.subscribe(built._observe_for_hooks)
        if metrics is not None:
            events.subscribe(metrics.observe_event)
            metrics.watch_locks(table)
            metrics.watch_queue("audit", audit.backlog, audit.failures)
            metrics.watch_queue("webhooks", built.hooks.backlog, built.hooks.failures)
        events.subscribe(built._index_change)
        # After the audit trail: a release is recorded before what it starts.
        events.subscribe(built._compact)
        return built

    def require_key(self) -> None:
        """Refuse to serve an encrypted store without its master key (ConfigError)."""
        self.keys.store.require_key()

    def close(self) -> None:
        if self._hooks is not None:
            self._hooks.close()
        try:
            self.audit.close()  # pending audit events go to the store first
        finally:
            if self._inventory is not None:
                self._inventory.close()
            self.lock_table.close()
            self.store.close()


def _oidc(settings: Settings, access: AccessFiles | None) -> OidcVerifier | None:
    """The OIDC verifier when one is configured, on the config ``access`` holds if it
    was read already (imported only then: a CLI run has none)."""
    if not settings.oidc_config:
        return None
    from statekeeper.security.oidc import OidcConfig, OidcVerifier

    read = access.oidc if access is not None else None
    return OidcVerifier(read or OidcConfig.load(settings.oidc_config))


def build_webhooks(
    settings: Settings,
    store: ObjectStore,
    table: LockTable,
    signing_env: Mapping[str, str] | None = None,
) -> Webhooks:
    """Webhooks, their outbox in the store's database or beside its states (S3); the
    delivery worker builds its own from the server's settings. With ``signing_env`` (a
    process that delivers) the config file's hooks have their secrets, read from it and
    from their files; without, they are not read."""
    from statekeeper.hooks.guard import parse_allow
    from statekeeper.hooks.model import Policy
    from statekeeper.hooks.outbox import open_outbox
    from statekeeper.hooks.service import Webhooks
    from statekeeper.state.holds import holders

    policy = Policy(
        attempts=max(1, settings.hooks_attempts),
        backoff=settings.hooks_backoff,
        allow=parse_allow(settings.hooks_allow),
        source=f"statekeeper://{settings.host}:{settings.port}",
    )
    return Webhooks(
        open_outbox(store.records),
        store,
        policy,
        locks=lambda: holders(table.scan()),
        stale_after=settings.hooks_stale_after,
        configured=_configured_hooks(settings, signing_env),
        kept=settings.hooks_deliveries_kept,
    )


def check_configured_hooks(settings: Settings, env: Mapping[str, str]) -> None:
    """``serve``'s start: every config file hook's secret can be read and its URL leads
    where deliveries may go (ConfigError naming the hook otherwise). Only the server
    checks: a command on an operator's laptop neither signs nor delivers, and may
    neither hold the secrets nor resolve the receivers' names."""
    from statekeeper.errors import BadRequest, ConfigError
    from statekeeper.hooks.guard import check_destination, parse_allow

    allow = parse_allow(settings.hooks_allow)
    for h in settings.hooks:
        h.secret.read(h.name, env)
        try:
            check_destination(h.url, allow)
        except BadRequest as exc:
            raise ConfigError(
                f"hooks: the hook {h.name!r} in the config file: {exc.message}"
            ) from exc


def _configured_hooks(
    settings: Settings, signing_env: Mapping[str, str] | None
) -> tuple[Subscription, ...]:
    """The config file's ``[[hooks]]`` as subscriptions. Where they lead is checked by
    ``serve`` at its start (:func:`check_configured_hooks`) and by every delivery's
    connection, against the addresses it connects to."""
    from statekeeper.errors import BadRequest, ConfigError
    from statekeeper.hooks.model import EVENT_TYPES, Subscription

    out: list[Subscription] = []
    for h in settings.hooks:
        try:
            sub = Subscription(
                name=h.name,
                url=h.url,
                secret="",
                states=h.states or ("**",),
                events=h.events or EVENT_TYPES,
                secret_from=h.secret,
            )
        except BadRequest as exc:
            raise ConfigError(
                f"hooks: the hook {h.name!r} in the config file: {exc.message}"
            ) from exc
        out.append(sub if signing_env is None else sub.signing(signing_env))
    return tuple(out)

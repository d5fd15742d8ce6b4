"""One object that builds everything from settings; it wires and holds no rules."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from statekeeper.events import Event, EventStream, log_event
from statekeeper.inventory import Inventory
from statekeeper.security.audit import AuditLog, open_audit_log
from statekeeper.security.grants import ScopePolicy
from statekeeper.security.oidc import OidcConfig, OidcVerifier
from statekeeper.security.policy import Policy
from statekeeper.security.tokens import TokenService, open_token_store
from statekeeper.settings import Settings
from statekeeper.state.history import HistoryService
from statekeeper.state.locks import LockService
from statekeeper.state.service import StateService
from statekeeper.storage.base import LockTable, ObjectStore
from statekeeper.storage.encrypting import KeyService, encrypting
from statekeeper.storage.registry import open_locks, open_store

__all__ = ["Services"]


@dataclass
class Services:
    settings: Settings
    store: ObjectStore
    lock_table: LockTable
    policy: Policy
    #: Every operation's event; the audit trail and the log subscribe to it.
    events: EventStream
    states: StateService
    locks: LockService
    history: HistoryService
    audit: AuditLog
    tokens: TokenService
    keys: KeyService
    oidc: OidcVerifier | None = None
    _inventory: Inventory | None = field(default=None, repr=False)
    _inventory_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def inventory(self) -> Inventory:
        """The search index, opened on first use; until then a catch-up on opening covers
        the writes its event subscriber did not see."""
        with self._inventory_lock:
            if self._inventory is None:
                path = self.settings.data_dir / "inventory.db"
                self._inventory = Inventory(path, self.store, self.settings.inventory_refresh)
            return self._inventory

    def _index_change(self, event: Event) -> None:
        if self._inventory is not None:
            self._inventory.on_event(event)

    @classmethod
    def build(cls, settings: Settings, policy: Policy | None = None) -> Services:
        raw = open_store(settings.store_url)
        try:
            store = encrypting(raw, settings.master_key)
            table = open_locks(settings.locks_url, store)
        except BaseException:
            raw.close()
            raise
        try:
            audit = open_audit_log(store.records)
            token_store = open_token_store(store.records, settings.tokens_file)
            oidc = (
                OidcVerifier(OidcConfig.load(settings.oidc_config))
                if settings.oidc_config
                else None
            )
        except BaseException:
            table.close()
            store.close()
            raise
        events = EventStream()
        events.subscribe(audit.record)
        events.subscribe(log_event)
        policy = policy or ScopePolicy()
        locks = LockService(store, table, policy, events, max_lock_info=settings.max_lock_info)
        built = cls(
            settings=settings,
            store=store,
            lock_table=table,
            policy=policy,
            events=events,
            states=StateService(store, locks, policy, events),
            locks=locks,
            history=HistoryService(store, policy),
            audit=audit,
            tokens=TokenService(token_store, policy, events),
            keys=KeyService(store, events),
            oidc=oidc,
        )
        events.subscribe(built._index_change)
        return built

    def close(self) -> None:
        try:
            self.audit.close()  # pending audit events go to the store first
        finally:
            if self._inventory is not None:
                self._inventory.close()
            self.lock_table.close()
            self.store.close()

"""One object that builds everything from settings; it wires and holds no rules."""

from __future__ import annotations

from dataclasses import dataclass

from statekeeper.drivers.base import LockTable, ObjectStore
from statekeeper.drivers.registry import open_locks, open_store
from statekeeper.services.access import Policy
from statekeeper.services.audit import (
    AuditedLockService,
    AuditedStateService,
    AuditLog,
    open_audit_log,
)
from statekeeper.services.crypto import encrypting
from statekeeper.services.history import HistoryService
from statekeeper.services.locks import LockService
from statekeeper.services.oidc import OidcConfig, OidcVerifier
from statekeeper.services.policy import ScopePolicy
from statekeeper.services.states import StateService
from statekeeper.services.tokens import TokenStore, open_token_store
from statekeeper.settings import Settings

__all__ = ["Services"]


@dataclass
class Services:
    settings: Settings
    store: ObjectStore
    lock_table: LockTable
    policy: Policy
    states: StateService
    locks: LockService
    history: HistoryService
    # Access control, audit trail and encryption (services/tokens, audit, crypto, oidc).
    audit: AuditLog
    tokens: TokenStore | None = None
    oidc: OidcVerifier | None = None

    @classmethod
    def build(cls, settings: Settings, policy: Policy | None = None) -> Services:
        store = open_store(settings.store_url)
        try:
            table = open_locks(settings.locks_url, store)
        except BaseException:
            store.close()
            raise
        try:
            audit = open_audit_log(store)
            tokens = open_token_store(store, settings.tokens_file)
            oidc = (
                OidcVerifier(OidcConfig.load(settings.oidc_config))
                if settings.oidc_config
                else None
            )
            store = encrypting(store, settings.master_key)
        except BaseException:
            table.close()
            store.close()
            raise
        policy = policy or ScopePolicy()
        locks = AuditedLockService(store, table, policy, audit=audit)
        return cls(
            settings=settings,
            store=store,
            lock_table=table,
            policy=policy,
            states=AuditedStateService(store, locks, policy, audit=audit),
            locks=locks,
            history=HistoryService(store, policy),
            audit=audit,
            tokens=tokens,
            oidc=oidc,
        )

    def close(self) -> None:
        try:
            self.audit.close()  # pending audit events go to the store first
        finally:
            self.lock_table.close()
            self.store.close()

"""One object that builds everything from settings; it wires and holds no rules."""

from __future__ import annotations

from dataclasses import dataclass

from statekeeper.security.audit import (
    AuditedLockService,
    AuditedStateService,
    AuditLog,
    open_audit_log,
)
from statekeeper.security.grants import ScopePolicy
from statekeeper.security.oidc import OidcConfig, OidcVerifier
from statekeeper.security.policy import Policy
from statekeeper.security.tokens import TokenStore, open_token_store
from statekeeper.settings import Settings
from statekeeper.state.history import HistoryService
from statekeeper.state.locks import LockService
from statekeeper.state.service import StateService
from statekeeper.storage.base import LockTable, ObjectStore
from statekeeper.storage.encrypting import EncryptingStore, encrypting
from statekeeper.storage.registry import open_locks, open_store

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

    def require_key(self) -> None:
        """Refuse to serve an encrypted store without its master key (ConfigError)."""
        if isinstance(self.store, EncryptingStore):
            self.store.require_key()

    def close(self) -> None:
        try:
            self.audit.close()  # pending audit events go to the store first
        finally:
            self.lock_table.close()
            self.store.close()

"""One object that builds everything from settings; it wires and holds no rules."""

from __future__ import annotations

from dataclasses import dataclass

from statekeeper.drivers.base import LockTable, ObjectStore
from statekeeper.drivers.registry import open_locks, open_store
from statekeeper.services.access import AllowAll, Policy
from statekeeper.services.history import HistoryService
from statekeeper.services.locks import LockService
from statekeeper.services.states import StateService
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

    @classmethod
    def build(cls, settings: Settings, policy: Policy | None = None) -> Services:
        store = open_store(settings.store_url)
        try:
            table = open_locks(settings.locks_url, store)
        except BaseException:
            store.close()
            raise
        policy = policy or AllowAll()
        locks = LockService(store, table, policy)
        return cls(
            settings=settings,
            store=store,
            lock_table=table,
            policy=policy,
            states=StateService(store, locks, policy),
            locks=locks,
            history=HistoryService(store, policy),
        )

    def close(self) -> None:
        self.lock_table.close()
        self.store.close()

"""The operator's operations, one method each, answering with documented JSON.

Both the CLI (on its own store) and the JSON API call these methods, so
``statekeeper states --json`` and ``GET /api/v1/states`` give the same
document. The keys of each answer are listed in ``docs/cli.md#json-output``; the rules
live in the services this class calls.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from statekeeper.security.caller import Caller
from statekeeper.state.history import HistoryService
from statekeeper.state.inspection import Inspector
from statekeeper.state.listing import list_locks, list_states
from statekeeper.state.locks import LockService
from statekeeper.state.reap import parse_duration, reap, unlock
from statekeeper.state.rollback import push, rollback
from statekeeper.state.service import StateService
from statekeeper.terraform.names import StateName

__all__ = ["Operator"]


class Operator:
    def __init__(self, states: StateService, locks: LockService, history: HistoryService) -> None:
        self.states = states
        self.locks = locks
        self.inspector = Inspector(states, history)

    def list_states(
        self, caller: Caller, prefix: str = "", *, details: bool = False
    ) -> list[dict[str, Any]]:
        rows = list_states(
            self.states.store, self.locks.locks, self.states.policy, caller, prefix, details=details
        )
        return [r.to_json() for r in rows]

    def show(self, caller: Caller, name: StateName, version: str | None = None) -> dict[str, Any]:
        v, content = self.inspector.show(name, caller, version)
        lock = self.locks.read(name)
        return {
            "name": str(name),
            "version": v.to_json(),
            "locked": lock is not None,
            "lock_id": None if lock is None else lock.id,
            **content,
        }

    def pull(self, caller: Caller, name: StateName, version: str | None = None) -> bytes:
        return self.inspector.pull(name, caller, version)

    def push(
        self, caller: Caller, name: StateName, data: bytes, *, force: bool = False
    ) -> dict[str, Any]:
        return push(self.states, self.locks, name, data, caller, force=force).to_json()

    def history(
        self, caller: Caller, name: StateName, limit: int | None = None
    ) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.inspector.history_entries(name, caller, limit)]

    def diff(
        self,
        caller: Caller,
        name: StateName,
        from_ref: str | None = None,
        to_ref: str | None = None,
    ) -> dict[str, Any]:
        return self.inspector.diff(name, caller, from_ref, to_ref).to_json()

    def rollback(self, caller: Caller, name: StateName, to_ref: str) -> dict[str, Any]:
        return rollback(self.states, self.locks, self.inspector, name, to_ref, caller).to_json()

    def list_locks(
        self, caller: Caller, prefix: str = "", now: datetime | None = None
    ) -> list[dict[str, Any]]:
        rows = list_locks(self.locks.locks, self.states.policy, caller, prefix, now)
        return [r.to_json() for r in rows]

    def unlock(
        self, caller: Caller, name: StateName, *, lock_id: str | None = None, force: bool = False
    ) -> dict[str, Any]:
        return unlock(self.locks, name, caller, lock_id=lock_id, force=force).to_json()

    def reap(
        self,
        caller: Caller,
        *,
        older_than: str,
        operation: str | None = None,
        prefix: str = "",
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        released = reap(
            self.locks,
            caller,
            older_than=parse_duration(older_than),
            operation=operation,
            prefix=prefix,
            dry_run=dry_run,
        )
        return [r.to_json() for r in released]

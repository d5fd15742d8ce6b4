"""The version history of a state, newest first."""

from __future__ import annotations

from statekeeper.errors import StateNotFound
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, Policy, require
from statekeeper.state.service import version_from_info
from statekeeper.state.version import StateVersion
from statekeeper.storage.base import ObjectStore
from statekeeper.terraform.names import StateName

__all__ = ["HistoryService"]


class HistoryService:
    def __init__(self, store: ObjectStore, policy: Policy) -> None:
        self.store = store
        self.policy = policy

    def versions(self, name: StateName, caller: Caller) -> list[StateVersion]:
        """Every version of ``name``, newest first; the current one is marked."""
        require(self.policy, caller, name, Permission.READ, "read the history of")
        infos = self.store.versions(str(name))
        if not infos:
            raise StateNotFound(f"there is no state named {name}")
        return [version_from_info(str(name), info) for info in infos]

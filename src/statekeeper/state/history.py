"""The version history of a state, newest first."""

from __future__ import annotations

from dataclasses import replace

from statekeeper.errors import StateNotFound
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, Policy, require
from statekeeper.state.replaced import ReplacedLedger
from statekeeper.state.version import StateVersion, version_from_info
from statekeeper.storage.base import ObjectStore
from statekeeper.terraform.names import StateName

__all__ = ["HistoryService"]


class HistoryService:
    def __init__(
        self, store: ObjectStore, policy: Policy, ledger: ReplacedLedger | None = None
    ) -> None:
        self.store = store
        self.policy = policy
        #: How many snapshots compaction replaced by each kept version.
        self.ledger = ledger

    def versions(self, name: StateName, caller: Caller) -> list[StateVersion]:
        """Every version of ``name``, newest first; the current one is marked."""
        require(self.policy, caller, name, Permission.READ, "read the history of")
        infos = self.store.versions(str(name))
        if not infos:
            raise StateNotFound(f"there is no state named {name}")
        versions = [version_from_info(str(name), info) for info in infos]
        counts = self.ledger.counts(str(name)) if self.ledger is not None else {}
        if not counts:
            return versions
        return [replace(v, replaced=counts.get(v.version_id, 0)) for v in versions]

"""The inventory's answers, one model each, for the API, ``--json`` and the UI alike."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from statekeeper.inventory.index import Hit, Inventory
from statekeeper.security.caller import Caller
from statekeeper.security.grants import visible
from statekeeper.security.policy import Permission, Policy

__all__ = ["IndexBuilding", "InventoryCounts", "SearchHit", "SearchResult", "counts", "search"]

#: Most hits one search answers.
MAX_LIMIT = 1000


class _View(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class SearchHit(_View):
    state: str
    version_id: str = Field(description="The version indexed (the state's current one)")
    serial: int | None
    terraform_version: str | None
    address: str
    mode: str
    type: str
    module: str
    provider: str
    instances: int

    @classmethod
    def of(cls, hit: Hit) -> SearchHit:
        return cls(**hit.to_json())


class IndexBuilding(_View):
    """The server's first build of its index, under way: answers are partial."""

    indexed: int = Field(
        description="States indexed so far (to a caller who may not read every state: "
        "those of them it may read)"
    )
    states: int | None = Field(
        description="States in the store (None: still listing it, or a caller who may not "
        "read every state)"
    )

    @property
    def note(self) -> str:
        counted = (
            f"{self.indexed:,}" if self.states is None else f"{self.indexed:,} of {self.states:,}"
        )
        return (
            f"the index is being built: {counted} states indexed so far; answers cover those only"
        )


def _building(inventory: Inventory, policy: Policy, caller: Caller) -> IndexBuilding | None:
    found = inventory.building()
    if found is None:
        return None
    if policy.allows(caller, None, Permission.READ):
        return IndexBuilding(indexed=found.indexed, states=found.states)
    # The store's figures would tell a caller granted some states how many others there
    # are: it is told of its own only, as it is told of no other state anywhere.
    mine = sum(1 for name in inventory.indexed_states() if visible(policy, caller, name))
    return IndexBuilding(indexed=mine, states=None)


_BUILDING = "Set while the server's first build of its index is under way (answers are partial)"


_UNADDRESSABLE = (
    "Keys in the store left out of the index: not state names statekeeper can address "
    "(listed only to a caller who may read every state)"
)


def _unaddressable(inventory: Inventory, policy: Policy, caller: Caller) -> list[str]:
    # No grant on a name covers a key that is none: only a store-wide reader is told.
    return inventory.unaddressable() if policy.allows(caller, None, Permission.READ) else []


class SearchResult(_View):
    query: str
    hits: list[SearchHit]
    truncated: bool = Field(description="More resources match than the limit returned")
    building: IndexBuilding | None = Field(default=None, description=_BUILDING)
    unaddressable: list[str] = Field(default_factory=list, description=_UNADDRESSABLE)


class InventoryCounts(_View):
    resource_types: dict[str, int] = Field(description="Resources by type, most first")
    providers: dict[str, int] = Field(description="Resources by provider, most first")
    terraform_versions: dict[str, int] = Field(description="States by Terraform version")
    building: IndexBuilding | None = Field(default=None, description=_BUILDING)
    unaddressable: list[str] = Field(default_factory=list, description=_UNADDRESSABLE)


def search(
    inventory: Inventory, policy: Policy, caller: Caller, query: str, limit: int = 50
) -> SearchResult:
    """Resources matching ``query`` in the states the caller may read (``read``: resource
    attributes are not for an outputs-only caller)."""
    limit = max(1, min(limit, MAX_LIMIT))

    def allowed(name: str) -> bool:
        return visible(policy, caller, name)

    # Read before searching: a build that ends in between only makes the note cautious.
    building = _building(inventory, policy, caller)
    hits = inventory.search(query, allowed, limit + 1)
    return SearchResult(
        query=query,
        hits=[SearchHit.of(h) for h in hits[:limit]],
        truncated=len(hits) > limit,
        building=building,
        unaddressable=_unaddressable(inventory, policy, caller),
    )


def counts(inventory: Inventory, policy: Policy, caller: Caller) -> InventoryCounts:
    def allowed(name: str) -> bool:
        return visible(policy, caller, name)

    building = _building(inventory, policy, caller)
    return InventoryCounts(
        **inventory.counts(allowed),
        building=building,
        unaddressable=_unaddressable(inventory, policy, caller),
    )

"""The inventory's answers, one model each, for the API, ``--json`` and the UI alike."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from statekeeper.inventory.index import Hit, Inventory
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, Policy
from statekeeper.terraform.names import StateName

__all__ = ["InventoryCounts", "SearchHit", "SearchResult", "counts", "search"]

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


class SearchResult(_View):
    query: str
    hits: list[SearchHit]
    truncated: bool = Field(description="More resources match than the limit returned")


class InventoryCounts(_View):
    resource_types: dict[str, int] = Field(description="Resources by type, most first")
    providers: dict[str, int] = Field(description="Resources by provider, most first")
    terraform_versions: dict[str, int] = Field(description="States by Terraform version")


def search(
    inventory: Inventory, policy: Policy, caller: Caller, query: str, limit: int = 50
) -> SearchResult:
    """Resources matching ``query`` in the states the caller may read (``read``: resource
    attributes are not for an outputs-only caller)."""
    limit = max(1, min(limit, MAX_LIMIT))

    def allowed(name: str) -> bool:
        return policy.allows(caller, StateName(name), Permission.READ)

    hits = inventory.search(query, allowed, limit + 1)
    return SearchResult(
        query=query, hits=[SearchHit.of(h) for h in hits[:limit]], truncated=len(hits) > limit
    )


def counts(inventory: Inventory, policy: Policy, caller: Caller) -> InventoryCounts:
    def allowed(name: str) -> bool:
        return policy.allows(caller, StateName(name), Permission.READ)

    return InventoryCounts(**inventory.counts(allowed))

"""The inventory: every resource of every state, searchable (see docs/inventory.md)."""

from __future__ import annotations

from statekeeper.inventory.index import Hit, Inventory, SyncReport

__all__ = ["Hit", "Inventory", "SyncReport"]

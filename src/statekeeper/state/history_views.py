"""The JSON shapes of history hygiene: the trash and a prune, for the API and ``--json``."""

from __future__ import annotations

from pydantic import Field

from statekeeper.state.prune import Pruned
from statekeeper.state.trash import Restored, Trashed
from statekeeper.state.views import View
from statekeeper.times import format_rfc3339

__all__ = ["PruneView", "PurgedView", "RestoredView", "TrashEntry"]


class TrashEntry(View):
    """A deleted state (``statekeeper trash list``, ``GET /api/v1/trash``)."""

    name: str
    deleted: str = Field(description="When it was deleted (RFC 3339)")
    version_id: str = Field(description="The version a restore makes current again")
    size: int
    expires: str | None = Field(description="When it is purged; None: only by hand")

    @classmethod
    def of(cls, t: Trashed) -> TrashEntry:
        return cls(
            name=t.state.key,
            deleted=format_rfc3339(t.state.deleted),
            version_id=t.state.version_id,
            size=t.state.size,
            expires=format_rfc3339(t.expires) if t.expires else None,
        )


class RestoredView(View):
    name: str
    version_id: str
    serial: int | None

    @classmethod
    def of(cls, r: Restored) -> RestoredView:
        return cls(name=r.name, version_id=r.version_id, serial=r.serial)


class PurgedView(View):
    name: str
    removed: int = Field(description="Versions removed for good")


class PruneView(View):
    """One state's prune (``statekeeper prune``, ``POST /api/v1/prune``)."""

    name: str
    rule: str
    removed: list[str] = Field(description="Version IDs removed (a dry run: that would be)")
    kept: int
    dry_run: bool

    @classmethod
    def of(cls, p: Pruned) -> PruneView:
        return cls(
            name=p.name, rule=p.rule, removed=list(p.removed), kept=p.kept, dry_run=p.dry_run
        )

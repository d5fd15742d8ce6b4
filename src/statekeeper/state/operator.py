"""The operator's operations, one method each, answering with a view.

Both the CLI (on its own store) and the JSON API call these methods, so
``statekeeper states --json`` and ``GET /api/v1/states`` give the same
document: each answer is a model of :mod:`statekeeper.state.views` (listed in
``docs/api.md``). The rules
live in the services this class calls.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from statekeeper.security.caller import Caller
from statekeeper.state.listing import (
    StateIndex,
    StateSummary,
    Unaddressable,
    list_locks,
    list_states,
)
from statekeeper.state.locks import LockService
from statekeeper.terraform.names import StateName
from statekeeper.times import parse_duration

# Reading, diffing and writing versions (and the views, pydantic models) are
# imported by the operations that use them: ``statekeeper locks`` starts
# without them.
if TYPE_CHECKING:
    from statekeeper.state import views
    from statekeeper.state.history import HistoryService
    from statekeeper.state.inspection import Inspector
    from statekeeper.state.reads import CurrentState
    from statekeeper.state.service import StateService

__all__ = ["Operator", "Parts"]


class Parts(Protocol):
    """The services the operator works with (``statekeeper.app.Services`` builds the
    states and the history on first use: listing locks needs neither)."""

    @property
    def states(self) -> StateService: ...

    @property
    def locks(self) -> LockService: ...

    @property
    def history(self) -> HistoryService: ...


class Operator:
    def __init__(
        self,
        parts: Parts,
        *,
        workspace_key_prefix: str = "env:",
        index: Callable[[], StateIndex] | None = None,
    ) -> None:
        self.parts = parts
        #: Opens the inventory index (on first use), for stores whose listing is costly.
        self.index = index
        self.workspace_key_prefix = workspace_key_prefix
        self.locks = parts.locks

    @property
    def states(self) -> StateService:
        return self.parts.states

    @property
    def history_service(self) -> HistoryService:
        return self.parts.history

    @cached_property
    def inspector(self) -> Inspector:
        from statekeeper.state.inspection import Inspector

        return Inspector(self.states, self.history_service)

    def list_states(
        self,
        caller: Caller,
        prefix: str = "",
        *,
        details: bool = False,
        unaddressable: Unaddressable | None = None,
    ) -> list[views.StateEntry]:
        rows = self.summaries(caller, prefix, details=details, unaddressable=unaddressable)
        return [r.view() for r in rows]

    def summaries(
        self,
        caller: Caller,
        prefix: str = "",
        *,
        details: bool = False,
        wait: bool = True,
        unaddressable: Unaddressable | None = None,
    ) -> list[StateSummary]:
        """The rows of :meth:`list_states` before they become views (the UI's states
        page filters, sorts and cuts out a page of them first). ``wait`` false: from the
        index only while it is fresh, else from the store, never waiting for a catch-up.
        Keys that are no state name are noted in ``unaddressable`` (see listing)."""
        store = self.states.store
        # On S3 a listing is a request per 1,000 keys; the index answers from its own
        # catch-up (within ``inventory_refresh``). Details read every state anyway.
        costly = store.costly_listing and not details
        index = self.index() if self.index is not None and costly else None
        return list_states(
            store,
            self.locks.locks,
            self.states.policy,
            caller,
            prefix,
            details=details,
            workspace_key_prefix=self.workspace_key_prefix,
            index=index,
            wait_for_index=wait,
            unaddressable=unaddressable,
        )

    def show(
        self, caller: Caller, name: StateName, version: str | None = None
    ) -> views.StateDetail:
        return self.describe(name, self.inspector.read(name, caller, version))

    def describe(self, name: StateName, current: CurrentState) -> views.StateDetail:
        """:meth:`show`'s answer for a version already read (a page that shows more of
        it reads it once)."""
        from statekeeper.errors import InvalidState, UnreadableState
        from statekeeper.state import views
        from statekeeper.state.diff import describe_state

        v = current.version
        try:
            content = describe_state(current.data)
        except InvalidState as exc:
            # Stored bytes that are no state (an object written by hand): the data is at
            # fault, and the message names which.
            raise UnreadableState(
                f"version {v.version_id} of {name} is not a state: {exc.message}"
            ) from exc
        holders = self.locks.holders(name)
        lock = holders[0] if holders else None
        shared = lock is not None and (
            len(holders) > 1 or self.locks.lock_policy.for_state(name).shares(lock)
        )
        return views.StateDetail(
            name=str(name),
            version=views.VersionView.of(v),
            locked=lock is not None,
            lock_id=None if lock is None else lock.id,
            lock_mode=None if lock is None else "shared" if shared else "exclusive",
            lock_holders=len(holders),
            encrypted=content.encrypted,
            terraform_version=content.terraform_version,
            resources=content.resources,
            outputs=content.outputs,
        )

    def pull(self, caller: Caller, name: StateName, version: str | None = None) -> bytes:
        return self.inspector.pull(name, caller, version)

    def push(
        self, caller: Caller, name: StateName, data: bytes, *, force: bool = False
    ) -> views.PushResult:
        from statekeeper.state.rollback import push

        return push(self.states, self.locks, name, data, caller, force=force).view()

    def history(
        self, caller: Caller, name: StateName, limit: int | None = None
    ) -> list[views.HistoryEntry]:
        return self.inspector.history_entries(name, caller, limit)

    def diff(
        self,
        caller: Caller,
        name: StateName,
        from_ref: str | None = None,
        to_ref: str | None = None,
    ) -> views.DiffView:
        return self.inspector.diff(name, caller, from_ref, to_ref)

    def rollback(self, caller: Caller, name: StateName, to_ref: str) -> views.RollbackResult:
        from statekeeper.state.rollback import rollback

        return rollback(self.states, self.locks, self.inspector, name, to_ref, caller).view()

    def list_locks(
        self,
        caller: Caller,
        prefix: str = "",
        now: datetime | None = None,
        unaddressable: Unaddressable | None = None,
    ) -> list[views.LockEntry]:
        # Expired leases go first: a listing never shows a lock the next LOCK would remove.
        self.locks.expire_due(prefix, now)
        rows = list_locks(
            self.locks.locks,
            self.locks.policy,
            caller,
            prefix,
            now,
            lock_policy=self.locks.lock_policy,
            unaddressable=unaddressable,
        )
        return [r.view() for r in rows]

    def unlock(
        self, caller: Caller, name: StateName, *, lock_id: str | None = None, force: bool = False
    ) -> views.Release:
        from statekeeper.state.reap import unlock  # here: a lock listing does without it

        return unlock(self.locks, name, caller, lock_id=lock_id, force=force).view()

    def reap(
        self,
        caller: Caller,
        *,
        older_than: str,
        operation: str | None = None,
        prefix: str = "",
        dry_run: bool = False,
        unaddressable: Unaddressable | None = None,
    ) -> list[views.Release]:
        from statekeeper.state.reap import reap

        released = reap(
            self.locks,
            caller,
            older_than=parse_duration(older_than, what="older_than"),
            operation=operation,
            prefix=prefix,
            dry_run=dry_run,
            unaddressable=unaddressable,
        )
        return [r.view() for r in released]

"""Soft delete: a deleted state stays restorable, for ``history.trash`` (30 days by default).

A delete (Terraform's DELETE, ``terraform workspace delete`` through the
server, the CLI, the UI) removes only the current version: the SQLite store
remembers which version was current, a versioned bucket puts a delete marker
over it. ``restore`` makes that version current again, byte for byte (on S3:
the delete markers above it are removed); ``purge`` removes every version for
good. Each is one event (``restore``, ``purge``); :meth:`TrashService.expire`
purges what has been in the trash longer than the configured time: each purge
removes only the deletion it listed, so a state written and deleted again since
stays in the trash for the full time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from statekeeper.errors import CapabilityMissing, Conflict, StateNotFound, WriteRace
from statekeeper.events import Action
from statekeeper.security.caller import Caller
from statekeeper.security.grants import visible
from statekeeper.security.policy import Permission, require
from statekeeper.state.globs import literal_prefix
from statekeeper.state.locks import LockService
from statekeeper.state.version import version_from_info
from statekeeper.storage.base import DeletedState, ObjectStore
from statekeeper.terraform.layout import STATEKEEPER_PREFIX
from statekeeper.terraform.names import StateName
from statekeeper.times import utcnow

__all__ = ["RESTORE_OPERATION", "Restored", "TrashService", "Trashed"]

#: The Operation in the LockInfo a restore holds, as a rollback holds ``rollback``.
RESTORE_OPERATION = "restore"


@dataclass(frozen=True)
class Trashed:
    """A deleted state and when it leaves the trash for good (None: when purged by hand)."""

    state: DeletedState
    expires: datetime | None


@dataclass(frozen=True)
class Restored:
    name: str
    version_id: str
    serial: int | None


class TrashService:
    def __init__(
        self,
        store: ObjectStore,
        locks: LockService,
        keep: timedelta | None,
        forget: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        #: Drops the state service's remembered current version of a key: a restore
        #: or purge changes the current version outside a write.
        self._forget = forget or (lambda key: None)
        self.locks = locks
        self.policy = locks.policy
        self.events = locks.events
        #: How long a deleted state stays restorable (None: until purged).
        self.keep = keep

    def require_store(self) -> None:
        """CapabilityMissing, saying why, where the store keeps no deleted states."""
        if not self.store.supports_history_edits:
            raise CapabilityMissing(
                f"the {self.store.scheme} store keeps no deleted states: "
                + (self.store.history_warning or "it keeps no version history")
            )

    def entries(self, caller: Caller, prefix: str = "") -> list[Trashed]:
        """Deleted states under ``prefix`` the caller may read, oldest deletion first."""
        prefix = literal_prefix(prefix)
        self.require_store()
        out = []
        for state in self.store.deleted(prefix):
            if state.key.startswith(STATEKEEPER_PREFIX):
                continue  # statekeeper's own records in a bucket, not states
            if not visible(self.policy, caller, state.key):
                continue
            expires = state.deleted + self.keep if self.keep is not None else None
            out.append(Trashed(state, expires))
        return sorted(out, key=lambda t: t.state.deleted)

    def restore(self, name: StateName, caller: Caller) -> Restored:
        """Make the version current before the delete current again (admin), under the
        state's lock: a lock held on the deleted name is a run about to write a new state
        there, whose write a restore under it would make fail (another lineage)."""
        with self.events.event(Action.RESTORE, caller, name) as event:
            require(self.policy, caller, name, Permission.ADMIN, "restore")
            self.require_store()
            key = str(name)
            with (
                self.locks.holding(name, RESTORE_OPERATION, caller) as lock,
                self.locks.serialized(name),
            ):
                event.lock(lock)
                if self.store.head(key) is not None:
                    raise Conflict(
                        f"{name} exists (it was written again since it was deleted, or "
                        "was never deleted): there is nothing to restore"
                    )
                self._forget(key)
                info = self.store.undelete(key)
                obj = self.store.get(key)
                version = version_from_info(key, info, obj.data if obj else None)
                if version.md5 and self.locks.locks.keeps_digests:
                    # What Terraform's S3 backend checks the restored bytes against.
                    self.locks.locks.put_digest(key, version.md5)
            event.version, event.serial = version.version_id, version.serial
            return Restored(key, version.version_id, version.serial)

    def purge(
        self,
        name: StateName,
        caller: Caller,
        *,
        reason: str | None = None,
        deleted: datetime | None = None,
    ) -> int:
        """Remove every version of the deleted state ``name`` for good (admin).

        With ``deleted``, only the deletion a listing saw then (WriteRace when the
        state was written and deleted again since).
        """
        with self.events.event(Action.PURGE, caller, name) as event:
            require(self.policy, caller, name, Permission.ADMIN, "purge")
            self.require_store()
            with self.locks.serialized(name):
                self._forget(str(name))
                removed = self.store.purge(str(name), deleted)
            event.detail = f"removed {removed} version(s)" + (f" ({reason})" if reason else "")
            return removed

    def expire(self, caller: Caller, now: datetime | None = None) -> list[tuple[str, int]]:
        """Purge every state in the trash longer than the configured time.

        Returns each purged state's name and how many versions went with it.

        Each is a ``purge`` by ``caller``, who needs the admin permission on it.
        """
        if self.keep is None or not self.store.supports_history_edits:
            return []
        limit = (now or utcnow()) - self.keep
        out = []
        for state in self.store.deleted():
            if state.key.startswith(STATEKEEPER_PREFIX) or state.deleted > limit:
                continue
            try:
                # The deletion listed, not whichever is in the trash by the time the
                # purge runs: one made since is not expired.
                removed = self.purge(
                    StateName(state.key),
                    caller,
                    reason="in the trash too long",
                    deleted=state.deleted,
                )
            except (StateNotFound, WriteRace):
                continue  # restored, written again or deleted again meanwhile
            out.append((state.key, removed))
        return out

"""Reading state: the current state or one version, whole or as chunks; each read one event.

A caller with the ``outputs`` permission but not ``read`` gets the current state
with its resources stripped (what ``terraform_remote_state`` needs); an older
version is history, refused without ``read``. Every read remembers the version it
found current (:class:`~statekeeper.state.known.KnownVersions`), which the write
that usually follows checks against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

from statekeeper.errors import Forbidden, StateNotFound, VersionNotFound
from statekeeper.events import Action, Draft, EventStream
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, Policy, require
from statekeeper.state.known import KnownVersions
from statekeeper.state.version import StateVersion, version_from_info
from statekeeper.storage.base import ObjectStore
from statekeeper.terraform.names import StateName
from statekeeper.terraform.remote_state import outputs_only
from statekeeper.terraform.statedoc import StateDoc

__all__ = ["CurrentState", "StateReads", "StateStream"]


@dataclass(frozen=True)
class CurrentState:
    version: StateVersion
    data: bytes


@dataclass(frozen=True)
class StateStream:
    """The current state (or one version) with its bytes as chunks, read once."""

    version: StateVersion
    chunks: Iterator[bytes]


class StateReads:
    """The reads of :class:`~statekeeper.state.service.StateService`."""

    def __init__(self, store: ObjectStore, policy: Policy, events: EventStream) -> None:
        self.store = store
        self.policy = policy
        self.events = events
        self._known = KnownVersions()

    def read(
        self, name: StateName, caller: Caller, version_id: str | None = None
    ) -> CurrentState | None:
        """The current state (or one version); None when there is no state.

        A caller with the ``outputs`` permission but not ``read`` gets the current
        state with its resources stripped (what ``terraform_remote_state`` needs),
        and a 403 naming ``read`` for any other version.
        """
        with self.events.event(Action.READ, caller, name) as event:
            return self._recorded(event, name, caller, version_id)

    def read_listed(self, name: StateName, caller: Caller, version_id: str) -> CurrentState | None:
        """A version a history listing named; None when it was removed since.

        A prune or a compaction (this server's or another's on the same store)
        may remove a version between the listing and this read. That version is
        no longer history: the listing answers without it, and its read is no
        event. The caller neither read it nor failed to, and a failed ``read`` in
        the trail would tell an auditor of a failure no caller met.
        """
        with self.events.event(Action.READ, caller, name) as event:
            try:
                current = self._recorded(event, name, caller, version_id)
            except VersionNotFound:
                event.changed = False
                return None
        if current is None:
            raise StateNotFound(f"there is no state named {name}")
        return current

    def _recorded(
        self, event: Draft, name: StateName, caller: Caller, version_id: str | None
    ) -> CurrentState | None:
        """:meth:`_read`, with what it found told to the read's event."""
        event.version = version_id
        current = self._read(name, caller, version_id)
        if current is None:
            event.detail = "no state"
        else:
            event.version = current.version.version_id
            event.serial = current.version.serial
        return current

    def _read(self, name: StateName, caller: Caller, version_id: str | None) -> CurrentState | None:
        full = self.policy.allows(caller, name, Permission.READ)
        if not full:
            # The least permission that reads anything here; the refusal names it.
            require(self.policy, caller, name, Permission.OUTPUTS, "read")
            if version_id is not None:
                self._require_current(name, caller, version_id)
        obj = self.store.get(str(name), version_id)
        if obj is None:
            return None
        if version_id is None:
            self._known.remember(str(name), obj.info)
        version = version_from_info(str(name), obj.info, obj.data)
        if full:
            return CurrentState(version, obj.data)
        if StateDoc.parse(obj.data).encrypted:
            raise Forbidden(
                f"{caller.actor} may read only the outputs of {name}, and an OpenTofu "
                "encrypted state cannot be stripped to its outputs: it needs 'read'"
            )
        data = outputs_only(obj.data)
        return CurrentState(
            replace(
                version,
                size=len(data),
                md5=hashlib.md5(data).hexdigest(),
                sha256=hashlib.sha256(data).hexdigest(),
            ),
            data,
        )

    def _require_current(self, name: StateName, caller: Caller, version_id: str) -> None:
        """``outputs`` reads the current state's outputs, what ``terraform_remote_state``
        reads; an older version is history, which needs ``read``."""
        current = self.store.head(str(name))
        if current is None or current.version_id != version_id:
            raise Forbidden(
                f"{caller.actor} may read only the current outputs of {name}: reading "
                f"version {version_id} needs the 'read' permission on it"
            )

    def read_existing(
        self, name: StateName, caller: Caller, version_id: str | None = None
    ) -> CurrentState:
        """Like :meth:`read`, but a missing state is an error."""
        current = self.read(name, caller, version_id)
        if current is None:
            raise StateNotFound(f"there is no state named {name}")
        return current

    def read_stream(self, name: StateName, caller: Caller) -> StateStream | None:
        """Like :meth:`read` for the current state, its bytes read as they are sent.

        A state whose facts are all in its metadata (every state statekeeper
        wrote) streams; one written by Terraform's own S3 backend, or read by a
        caller allowed only its outputs, is read whole as by :meth:`read`.
        """
        if not self.policy.allows(caller, name, Permission.READ):
            return self._whole(self.read(name, caller))
        with self.events.event(Action.READ, caller, name) as event:
            opened = self.store.open(str(name))
            if opened is None:
                event.detail = "no state"
                return None
            fields = StateVersion.metadata_fields(dict(opened.info.metadata))
            if not {"md5", "sha256", "serial", "lineage"} <= fields.keys():
                close = getattr(opened.chunks, "close", None)
                if close is not None:
                    close()
                obj = self.store.get(str(name))
                if obj is None:
                    event.detail = "no state"
                    return None
                opened = replace(opened, info=obj.info, chunks=iter((obj.data,)))
                version = version_from_info(str(name), obj.info, obj.data)
            else:
                version = version_from_info(str(name), opened.info)
            self._known.remember(str(name), opened.info)
            event.version = version.version_id
            event.serial = version.serial
            return StateStream(version, opened.chunks)

    @staticmethod
    def _whole(current: CurrentState | None) -> StateStream | None:
        return None if current is None else StateStream(current.version, iter((current.data,)))

"""Looking at one state: its versions, one version's content, and diffs between them.

A version is named by its ID as ``history`` lists it (an S3 VersionId, a
SQLite row number), by ``serial:N`` (the newest version with that serial), or
by ``current``. History and diffs read the version bytes, so their cost grows
with the number of versions asked for; listings elsewhere never download.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from statekeeper.errors import (
    BadRequest,
    ConfigError,
    EncryptedState,
    InvalidState,
    StateNotFound,
    StorageError,
    UnreadableState,
    VersionNotFound,
)
from statekeeper.patterns import literal, whole
from statekeeper.security.caller import Caller
from statekeeper.state.diff import diff_states
from statekeeper.state.history import HistoryService
from statekeeper.state.reads import CurrentState
from statekeeper.state.service import StateService
from statekeeper.state.version import StateVersion
from statekeeper.state.views import DiffView, HistoryEntry
from statekeeper.terraform.names import StateName
from statekeeper.terraform.statedoc import StateDoc

__all__ = ["SERIAL_REF", "VERSION_REF_PATTERN", "Inspector", "resolve_version"]

#: Listings of a history tried when every version of one was removed before it was read.
_LISTINGS = 5
#: The start of a ref by serial (``serial:7``); any other ref names a version ID or current.
SERIAL_REF = "serial:"
#: The refs :func:`resolve_version` reads, as a JSON Schema pattern (:mod:`statekeeper.patterns`):
#: ``serial:`` and a whole number as history prints it, or anything else (an ID, current).
VERSION_REF_PATTERN = whole(
    rf"(?!{literal(SERIAL_REF)})[\s\S]*|{literal(SERIAL_REF)}(?:0|[1-9][0-9]*)"
)


def resolve_version(versions: list[StateVersion], ref: str) -> StateVersion:
    """The version ``ref`` names among ``versions`` (newest first), as written: a ref
    with blank space around it names no version (``" 1"`` is refused as ``"01"`` is),
    rather than one it was stripped to."""
    if not versions:
        raise VersionNotFound("the state has no versions")
    if ref in ("current", "latest"):
        return next((v for v in versions if v.is_current), versions[0])
    if ref.startswith(SERIAL_REF):
        number = ref.removeprefix(SERIAL_REF)
        # Written as history prints a serial, as a version ID is: serial:01 named
        # serial 1 while the bare 01 named no version.
        if not (number.isascii() and number.isdigit() and number == str(int(number))):
            raise BadRequest(
                f"{ref!r} is not serial:N with N a whole number as history prints it, "
                "without sign, blank space or leading zeros (e.g. serial:7)"
            )
        for v in versions:
            if v.serial == int(number):
                return v
        raise VersionNotFound(
            f"no version of {versions[0].name} has serial {number}; "
            f"run 'statekeeper history {versions[0].name}' to see the versions"
        )
    for v in versions:
        if v.version_id == ref:
            return v
    raise VersionNotFound(
        f"{versions[0].name} has no version {ref!r}; run 'statekeeper history "
        f"{versions[0].name}' to see the version IDs (or name one as serial:N)"
    )


class Inspector:
    """Read-only views of one state's history, built on the state and history services."""

    def __init__(self, states: StateService, history: HistoryService) -> None:
        self.states = states
        self.history = history

    def versions(self, name: StateName, caller: Caller) -> list[StateVersion]:
        return self.history.versions(name, caller)

    def _bytes(self, name: StateName, caller: Caller, version: StateVersion) -> bytes:
        return self.states.read_existing(name, caller, version.version_id).data

    def filled(self, version: StateVersion, data: bytes) -> StateVersion:
        """``version`` with what its bytes tell when the store recorded no metadata
        (Terraform's own S3 writes carry none)."""
        if version.serial is not None and version.sha256 is not None:
            return version
        serial: int | None
        lineage: str | None
        try:
            doc = StateDoc.parse(data)
            serial, lineage = doc.serial, doc.lineage
        except BadRequest:
            serial, lineage = version.serial, version.lineage
        return replace(
            version,
            serial=version.serial if version.serial is not None else serial,
            lineage=version.lineage if version.lineage is not None else lineage,
            sha256=version.sha256 or hashlib.sha256(data).hexdigest(),
            md5=version.md5 or hashlib.md5(data).hexdigest(),
        )

    def _listing(self, name: StateName, caller: Caller, *refs: str | None) -> list[StateVersion]:
        """The versions, with serials read from the bytes where a ``serial:N`` ref needs them."""
        versions = self.versions(name, caller)
        wants_serial = any(r is not None and r.startswith(SERIAL_REF) for r in refs)
        if wants_serial and any(v.serial is None for v in versions):
            versions = [
                v if v.serial is not None else self.filled(v, self._bytes(name, caller, v))
                for v in versions
            ]
        return versions

    def resolve(self, name: StateName, caller: Caller, ref: str) -> StateVersion:
        """The version ``ref`` names (an ID, ``serial:N`` or ``current``)."""
        return resolve_version(self._listing(name, caller, ref), ref)

    def history_entries(
        self, name: StateName, caller: Caller, limit: int | None = None
    ) -> list[HistoryEntry]:
        """Versions newest first, each with the count of resources it changed."""
        for _ in range(_LISTINGS):
            versions = self.versions(name, caller)
            shown_count = limit or len(versions)
            read, every_version_read = self._read_listed(name, caller, versions, shown_count)
            if read or not versions:
                break
            # Every version listed was removed before it could be read: writes and the
            # prune went on meanwhile (the newest listed is pruned only once two newer
            # ones exist). The history has versions still: list it again.
        entries = []
        for i, (listed, newer) in enumerate(read[:shown_count]):
            v = listed if newer is None else self.filled(listed, newer)
            older = read[i + 1][1] if i + 1 < len(read) else None
            is_oldest = i + 1 >= len(read) and every_version_read
            count: int | None
            try:
                if newer is None or (older is None and not is_oldest):
                    count = None
                else:
                    count = diff_states(older, newer).resources_changed
            except (EncryptedState, BadRequest):
                count = None
            entries.append(HistoryEntry.of(v, count))
        return entries

    def _read_listed(
        self, name: StateName, caller: Caller, versions: list[StateVersion], shown_count: int
    ) -> tuple[list[tuple[StateVersion, bytes | None]], bool]:
        """The listed versions with their bytes, one more than shown (to count the
        oldest shown version's changes); and whether every version was read."""
        read: list[tuple[StateVersion, bytes | None]] = []
        for v in versions:
            if len(read) > shown_count:
                return read, False
            if not v.size:
                read.append((v, None))
                continue
            try:
                got = self.states.read_listed(name, caller, v.version_id)
            except (ConfigError, StorageError):
                # Sealed under a master key this server does not hold (a store mixed
                # before it recorded its keys) or damaged: still listed, from its
                # metadata; reading it alone says what is wrong.
                read.append((v, None))
                continue
            # None: pruned or compacted since the listing (a prune runs beside
            # requests, on this server or another): no longer history, not listed.
            if got is not None:
                read.append((v, got.data))
        return read, True

    def read(self, name: StateName, caller: Caller, version: str | None = None) -> CurrentState:
        """One version (an ID, ``serial:N``, default the current one), facts and bytes."""
        return self.states.read_existing(name, caller, self._target(name, caller, version))

    def _target(self, name: StateName, caller: Caller, ref: str | None) -> str | None:
        if ref is None or ref in ("current", "latest"):
            return None
        if ref.startswith(SERIAL_REF) or not self.states.store.supports_versions:
            return self.resolve(name, caller, ref).version_id
        return ref

    def pull(self, name: StateName, caller: Caller, version: str | None = None) -> bytes:
        """The bytes of a version, verbatim."""
        return self.read(name, caller, version).data

    def diff(
        self,
        name: StateName,
        caller: Caller,
        from_ref: str | None = None,
        to_ref: str | None = None,
    ) -> DiffView:
        """From ``from_ref`` (default: the version before ``to_ref``) to ``to_ref`` (current)."""
        versions = self._listing(name, caller, from_ref, to_ref)
        after = resolve_version(versions, to_ref or "current")
        if from_ref is not None:
            before: StateVersion | None = resolve_version(versions, from_ref)
        else:
            idx = versions.index(after)
            before = versions[idx + 1] if idx + 1 < len(versions) else None
        new = self._bytes(name, caller, after)
        old = self._bytes(name, caller, before) if before is not None else None
        if not new:
            raise StateNotFound(f"version {after.version_id} of {name} is empty")
        if old is not None and before is not None:
            before = self.filled(before, old)
        after = self.filled(after, new)
        frm = None if before is None else before.version_id
        try:
            changes = diff_states(old, new)
        except InvalidState:
            # Stored bytes that are no state (an object written by hand): the data is at
            # fault, not the request, so 422 naming the version, as `show` answers.
            if old is not None and before is not None:
                _readable(name, before, old)
            _readable(name, after, new)
            raise
        return DiffView.between(str(name), frm, after.version_id, changes)


def _readable(name: StateName, version: StateVersion, data: bytes) -> None:
    """UnreadableState naming ``version`` when its bytes are no state."""
    try:
        diff_states(None, data)
    except InvalidState as exc:
        raise UnreadableState(
            f"version {version.version_id} of {name} is not a state: {exc.message}"
        ) from exc

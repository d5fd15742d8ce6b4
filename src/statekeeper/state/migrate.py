"""Copying states between stores, version by version, byte for byte.

A source is a store (any URL) or local ``terraform.tfstate`` files (read-only).
Each state is copied under the destination's lock (Operation ``migrate``),
oldest version first, through :meth:`StateService.write`, so the destination's
digests and version records are kept as for any write.

Resumable: a source version whose sha256 the destination already holds is
skipped (each destination version counts once, so a history that returns to
earlier bytes is copied in full). Every copied version is read back and its
sha256 compared.

The serial guard: a history replayed oldest to newest has increasing serials
and passes it. A history that went backwards (``terraform state push -force``,
a rollback) is replayed verbatim too: once this run has written a version of a
state, the following versions of that state are written with ``force``. The
first write of a state is forced only when the caller asks (``force``), since
it may replace an unrelated state that was already at the destination.

Each state copied (not in a dry run) is one ``migrate`` event, naming the last
version written and how many were copied and skipped.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from statekeeper.errors import (
    BadRequest,
    ChecksumMismatch,
    InvalidState,
    StateConflict,
    StatekeeperError,
    StorageError,
    UnreadableState,
)
from statekeeper.events import Action
from statekeeper.security.caller import Caller
from statekeeper.state import views
from statekeeper.state.lineage import FORCE_HINT
from statekeeper.state.listing import Unaddressable, is_state_key
from statekeeper.state.locks import LockService
from statekeeper.state.service import StateService
from statekeeper.state.version import Provenance, version_from_info
from statekeeper.storage.base import ObjectInfo, ObjectStore
from statekeeper.terraform.names import StateName
from statekeeper.terraform.statedoc import StateDoc

__all__ = [
    "FileSource",
    "MigrationReport",
    "SourceVersion",
    "StateCopy",
    "StoreSource",
    "migrate",
]

MIGRATE_OPERATION = "migrate"


@dataclass(frozen=True)
class SourceVersion:
    """One version to copy; ``load`` fetches its bytes."""

    label: str
    size: int
    load: Callable[[], bytes]
    #: Who wrote it at the source, and when (kept by the copy; None when unknown).
    actor: str | None = None
    created: datetime | None = None


class Source(Protocol):
    #: The keys :meth:`names` left out: states that no state name can hold.
    left_out: Unaddressable

    def names(self, prefix: str) -> list[str]:
        """The state names to copy, in order."""
        ...

    def versions(self, name: str, with_history: bool) -> list[SourceVersion]:
        """Oldest first; only the current one without ``with_history``."""
        ...

    def check(self, names: list[str]) -> None:
        """Raise InvalidState naming the first of ``names`` that is not a state, before
        anything is copied, where that is cheap to know."""
        ...


class StoreSource:
    """Any store, read through the driver interface."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.left_out = Unaddressable()

    def names(self, prefix: str) -> list[str]:
        scan = self.store.scan(prefix)
        return [info.key for info in scan if is_state_key(info.key, self.left_out)]

    def _loader(self, name: str, version_id: str | None) -> Callable[[], bytes]:
        def load() -> bytes:
            obj = self.store.get(name, version_id)
            if obj is None:
                raise StorageError(f"{name} disappeared from the source during the copy")
            return obj.data

        return load

    def versions(self, name: str, with_history: bool) -> list[SourceVersion]:
        if with_history and self.store.supports_versions:
            infos = [i for i in reversed(self.store.versions(name)) if i.size > 0]
            return [self._version(name, i, i.version_id) for i in infos]
        head = self.store.head(name)
        if head is None:
            return []
        return [self._version(name, head, None)]

    def check(self, names: list[str]) -> None:
        # A store's versions were states when written, and reading each one twice would
        # double the copy's reads: a bad one is named when it is reached.
        return None

    def _version(self, name: str, info: ObjectInfo, version_id: str | None) -> SourceVersion:
        facts = version_from_info(name, info)
        return SourceVersion(
            info.version_id, info.size, self._loader(name, version_id), facts.actor, facts.created
        )


class FileSource:
    """``terraform.tfstate`` files: one file (named by the caller) or a directory tree.

    In a directory every ``*.tfstate`` file is a state named by its path
    relative to the directory (``terraform.tfstate.d/dev/terraform.tfstate``
    included); backups (``*.tfstate.backup``) are not states.
    """

    def __init__(self, path: Path, name: str | None = None) -> None:
        self.path = path
        self.left_out = Unaddressable()  # every file's name is checked below
        if path.is_dir():
            if name is not None:
                raise BadRequest(
                    f"{path} is a directory: its states are named by their paths; "
                    "--name is for a single file"
                )
            self.files = {
                str(p.relative_to(path).as_posix()): p
                for p in sorted(path.rglob("*.tfstate"))
                if p.is_file()
            }
        elif path.is_file():
            if not name:
                raise BadRequest(
                    f"{path} is a single state file: name the destination state with "
                    "--name (e.g. --name team/app/prod.tfstate)"
                )
            self.files = {name: path}
        else:
            raise BadRequest(f"{path} does not exist; give a terraform.tfstate file or a directory")
        for n in self.files:
            StateName(n)

    def names(self, prefix: str) -> list[str]:
        return [n for n in self.files if n.startswith(prefix)]

    def versions(self, name: str, with_history: bool) -> list[SourceVersion]:
        path = self.files[name]

        def load() -> bytes:
            try:
                return path.read_bytes()
            except OSError as exc:
                raise StorageError(f"cannot read {path}: {exc}") from exc

        stat = path.stat()
        # A file records no writer; its modification time is when it was written.
        written = datetime.fromtimestamp(stat.st_mtime, UTC)
        return [SourceVersion(str(path), stat.st_size, load, None, written)]

    def check(self, names: list[str]) -> None:
        # Files are anything anyone saved: each is read once more, so that a directory
        # with one bad file copies nothing rather than the files before it.
        for name in names:
            (version,) = self.versions(name, with_history=False)
            _parse(name, version, version.load())


@dataclass
class StateCopy:
    """What happened to one state."""

    name: str
    copied: list[str] = field(default_factory=list)
    skipped: int = 0
    bytes_copied: int = 0
    planned: int = 0
    #: Why the real run would refuse this state (a dry run); None: it would go ahead.
    refused: str | None = None

    def view(self) -> views.StateCopied:
        return views.StateCopied(
            name=self.name,
            copied=len(self.copied),
            copied_versions=list(self.copied),
            skipped=self.skipped,
            planned=self.planned,
            bytes=self.bytes_copied,
            refused=self.refused,
        )


@dataclass
class MigrationReport:
    dry_run: bool
    states: list[StateCopy] = field(default_factory=list)
    #: Source keys not copied: no state name can hold them (the run fails for them).
    unaddressable: list[str] = field(default_factory=list)

    def view(self) -> views.MigrationResult:
        return views.MigrationResult(
            dry_run=self.dry_run,
            states=[s.view() for s in self.states],
            copied=sum(len(s.copied) for s in self.states),
            skipped=sum(s.skipped for s in self.states),
            planned=sum(s.planned for s in self.states if s.refused is None),
            unaddressable=self.unaddressable,
        )


#: Progress events: ("state", name, total_versions) then ("version", name, size) per version.
Progress = Callable[[str, str, int], None]


def _unreadable(data: bytes) -> str | None:
    """Why ``data`` is not a state; None when it is one."""
    try:
        StateDoc.parse(data, keep_document=False)
    except InvalidState as exc:
        return exc.message
    return None


def _parse(name: str, version: SourceVersion, data: bytes) -> None:
    """``data`` must be a state: UnreadableState naming the state and its source version
    (the source's data is at fault, not the command: exit 1)."""
    problem = _unreadable(data)
    if problem is not None:
        where = name if version.label == name else f"{name} (from {version.label})"
        raise UnreadableState(f"{where}: {problem}")


def _refusal(exc: StateConflict) -> str:
    """The guard's refusal, naming migrate's own --force."""
    push_hint = FORCE_HINT.format(command="statekeeper push --force")
    return exc.message.removesuffix(push_hint) + FORCE_HINT.format(
        command="statekeeper migrate --force"
    )


def _present(states: StateService, name: str) -> Counter[str]:
    """The sha256 of every version the destination holds of ``name``."""
    store = states.store
    if not store.supports_versions:
        obj = store.get(name)
        return Counter([hashlib.sha256(obj.data).hexdigest()] if obj else [])
    shas: Counter[str] = Counter()
    for info in store.versions(name):
        if info.size == 0:
            continue
        sha = info.metadata.get("sha256") if info.has_metadata else None
        if not sha:
            obj = store.get(name, info.version_id)
            sha = hashlib.sha256(obj.data).hexdigest() if obj else None
        if sha:
            shas[sha] += 1
    return shas


def _copy_state(
    source: Source,
    dest: StateService,
    locks: LockService,
    name: str,
    caller: Caller,
    *,
    with_history: bool,
    dry_run: bool,
    force: bool,
    progress: Progress,
) -> StateCopy:
    report = StateCopy(name)
    versions = source.versions(name, with_history)
    progress("state", name, len(versions))
    state = StateName(name)

    def plan() -> Iterator[tuple[SourceVersion, bytes]]:
        present = _present(dest, name)
        for v in versions:
            data = v.load()
            sha = hashlib.sha256(data).hexdigest()
            if present[sha] > 0:
                present[sha] -= 1
                report.skipped += 1
                progress("version", name, v.size)
                continue
            report.planned += 1
            yield v, data

    if dry_run:
        # What the real run checks, without its lock or writes: the lock is free, each
        # version is a state, and the first one written passes the serial/lineage guard
        # (the others are written with force, as a replayed history is).
        holders = locks.holders(state)
        if holders:
            report.refused = f"locked by {holders[0].describe()}"
            return report
        for v, data in plan():
            problem = _unreadable(data)
            if problem is not None:
                report.refused = f"not a state ({v.label}: {problem})"
                return report
            if report.planned == 1:
                try:
                    dest.check_write(state, data, force=force)
                except StateConflict as exc:
                    report.refused = _refusal(exc)
            progress("version", name, v.size)
        return report
    with dest.events.event(Action.MIGRATE, caller, state) as event:
        with locks.holding(state, MIGRATE_OPERATION, caller) as lock:
            event.lock(lock)
            wrote = False
            for v, data in plan():
                _parse(name, v, data)  # a clear error naming the version, before any write
                try:
                    outcome = dest.write(
                        state,
                        data,
                        caller,
                        lock_id=lock.id,
                        force=force or wrote,
                        provenance=Provenance(v.actor, v.created),
                    )
                except StateConflict as exc:
                    raise StateConflict(f"{name}: {_refusal(exc)}") from exc
                wrote = True
                back = dest.store.get(name, outcome.version.version_id)
                expected = hashlib.sha256(data).hexdigest()
                if back is None or hashlib.sha256(back.data).hexdigest() != expected:
                    raise ChecksumMismatch(
                        f"{name}: version {outcome.version.version_id} read back from the "
                        f"destination does not match source version {v.label} (sha256 "
                        f"{expected}); the copy stopped here, re-run to resume"
                    )
                report.copied.append(outcome.version.version_id)
                report.bytes_copied += len(data)
                event.version, event.serial = outcome.version.version_id, outcome.version.serial
                progress("version", name, v.size)
        event.detail = f"copied {len(report.copied)} version(s), {report.skipped} already present"
    return report


def migrate(
    source: Source,
    dest: StateService,
    locks: LockService,
    caller: Caller,
    *,
    prefix: str = "",
    with_history: bool = False,
    dry_run: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> MigrationReport:
    """Copy every state under ``prefix`` from ``source`` into ``dest``.

    An error stops the copy; a note on it says what was copied before it (the
    CLI prints it), since those states stay copied. Source keys that are no state
    name cannot be copied under their key: they are listed in the report's
    ``unaddressable``, and the copy is not a success (the CLI exits 1).
    """
    report = MigrationReport(dry_run)
    names = source.names(prefix)
    report.unaddressable = list(source.left_out.keys)
    if not dry_run:  # a dry run lists each state that is not one, and goes on
        try:
            source.check(names)
        except StatekeeperError as exc:
            exc.add_note("nothing was copied: every source file is checked before the first copy")
            raise
    for name in names:
        try:
            copied = _copy_state(
                source,
                dest,
                locks,
                name,
                caller,
                with_history=with_history,
                dry_run=dry_run,
                force=force,
                progress=progress or (lambda *_: None),
            )
        except StatekeeperError as exc:
            done = [f"{s.name} ({len(s.copied)} version(s))" for s in report.states if s.copied]
            if not dry_run:
                exc.add_note(
                    "copied before this error, and kept: "
                    + (", ".join(done) + " (a new run skips them)" if done else "nothing")
                )
            raise
        report.states.append(copied)
    return report

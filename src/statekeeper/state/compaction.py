"""Collapsing the intermediate snapshots a lock's holder wrote, when the lock is released.

Since Terraform 1.5 a long apply persists its state every 20 s under one lock,
so one apply can leave dozens of versions. When that lock is released (an
UNLOCK, a force-unlock, a reap, an expiry) the versions written under its ID
are collapsed into the last one, which records how many it replaced. Kept
whatever the rule: the version current when the lock was taken (it was
written under another lock, so it is never in the run), any version of the
run that another writer built on (the next version was written under another
lock ID, or none), the version a rollback restored, the current version, and
with ``keep_every = N`` every Nth intermediate snapshot.

Operator commands (push, rollback, migrate) hold their lock inside their own
event and release it without an UNLOCK event, so nothing they write is
compacted: a migration's copied history stays whole.

:class:`Compactor` subscribes to the event stream: the release has already
happened when it runs, so a failure to compact is logged with the event and
never undoes the release; what it left is ordinary history, which the
retention rules (``statekeeper prune``) still apply to. A release is followed
at once by whoever waited for the lock: each removal holds only while the
current version is still the one planned from, so a rollback landing meanwhile
(restoring one of the run's snapshots) stops the compaction, and the rest of
the run stays as ordinary history.

Only the versions written since the lock was taken can be in its run, so a
release of a lock this process saw taken reads just those: it walks back from
the current version to the one current at the LOCK (remembered then), a few
indexed reads, where listing the whole history cost ~0.1 ms per version on
every UNLOCK (3.4 ms per cycle once a state had 500 versions). A lock taken
before a restart, or through another server, is planned from the whole
history as before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from statekeeper.errors import VersionNotFound, WriteRace
from statekeeper.events import Action, Event, EventStream
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, Policy, require
from statekeeper.state.hygiene import HistoryPolicy
from statekeeper.state.replaced import ReplacedLedger
from statekeeper.state.version import StateVersion, version_from_info
from statekeeper.storage.base import ObjectStore
from statekeeper.terraform.names import StateName

__all__ = ["Compaction", "Compactor", "plan_compaction"]

#: The releases that end a lock's run of writes.
_RELEASES = frozenset({Action.UNLOCK, Action.FORCE_UNLOCK, Action.REAP, Action.EXPIRE})
#: Locks whose starting version is remembered (the oldest is forgotten first: a lock
#: never released must not grow the memory; its release then lists the whole history).
_REMEMBERED = 4096
#: Versions walked back one by one before listing the whole history is cheaper.
_WALK = 256


class _Unknown:
    """A lock whose start this process did not see taken (see :meth:`Compactor._start`)."""


_UNKNOWN = _Unknown()


@dataclass(frozen=True)
class Compaction:
    """What compacting one lock's writes keeps and removes."""

    name: str
    lock_id: str
    #: The version that stands for the run (its last); None when it wrote nothing, or
    #: when one count showed it wrote too little to remove anything (not read further).
    kept: str | None
    removed: tuple[str, ...]


def plan_compaction(
    name: str, versions: list[StateVersion], lock_id: str, keep_every: int
) -> Compaction:
    """Which of ``versions`` (newest first) written under ``lock_id`` may go."""
    oldest_first = list(reversed(versions))
    restored = {v.restored_from for v in versions if v.restored_from}
    run = [i for i, v in enumerate(oldest_first) if v.lock_id == lock_id]
    if not run:
        return Compaction(name, lock_id, None, ())
    last = run[-1]
    removed: list[str] = []
    for n, i in enumerate(run[:-1], start=1):
        version = oldest_first[i]
        after = oldest_first[i + 1]
        if (
            after.lock_id != lock_id  # another writer built on it
            or version.is_current
            or version.version_id in restored
            or (keep_every and n % keep_every == 0)
        ):
            continue
        removed.append(version.version_id)
    return Compaction(name, lock_id, oldest_first[last].version_id, tuple(removed))


class Compactor:
    """Compacts a state's history when one of its locks is released."""

    def __init__(
        self,
        store: ObjectStore,
        ledger: ReplacedLedger,
        history: HistoryPolicy,
        policy: Policy,
        events: EventStream,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.history = history
        self.policy = policy
        self.events = events
        #: (state, lock ID) → the version current when that lock was taken here.
        self._taken: dict[tuple[str, str], str | None] = {}
        self._guard = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.store.supports_history_edits and self.history.compacts(self.store.scheme)

    def on_event(self, event: Event) -> None:
        """The stream's subscriber: a successful release of a lock starts a compaction
        (a lock taken is remembered with the version its run starts after)."""
        if event.outcome != "ok" or not (event.lock_id and event.state and self.enabled):
            return
        if event.action is Action.LOCK:
            # Where a listing is a request per page (S3) one listing beats a walk: there
            # version_before lists too. Elsewhere each step is one indexed read.
            if not self.store.costly_listing:
                self._remember(event.state, event.lock_id)
        elif event.action in _RELEASES:
            caller = Caller(actor=event.actor, remote_addr=event.remote_addr, claims=event.claims)
            self.compact(StateName(event.state), event.lock_id, caller)

    def _remember(self, key: str, lock_id: str) -> None:
        # Read after the lock is taken and before its holder is answered: every version
        # of its run is newer than this one.
        with self._guard:
            if (key, lock_id) in self._taken:
                return  # a LOCK retried by its holder: its run began at the first one
        current = self.store.head(key)
        with self._guard:
            if len(self._taken) >= _REMEMBERED:
                del self._taken[next(iter(self._taken))]
            self._taken.setdefault((key, lock_id), None if current is None else current.version_id)

    def _start(self, key: str, lock_id: str) -> str | _Unknown | None:
        """The version current when ``lock_id`` was taken here (None: the state was new),
        forgotten as it is told."""
        with self._guard:
            return self._taken.pop((key, lock_id), _UNKNOWN)

    def _since(self, key: str, start: str | None) -> list[StateVersion] | None:
        """The versions written since ``start`` was current, newest first, walked back
        from the current one; None when that cannot be told (then the whole history
        is read)."""
        info = self.store.head(key)
        if info is None:
            return None  # deleted meanwhile: its versions are listed by key
        newer: list[StateVersion] = []
        try:
            while info.version_id != start:
                newer.append(version_from_info(key, info))
                before = self.store.version_before(key, info.version_id)
                if before is None:
                    # The first version: the state was new at the LOCK, or ``start`` is
                    # gone (pruned meanwhile), and then everything walked is all there is.
                    return newer
                if before == start:
                    return newer  # the run ends here (most runs: one write per lock)
                if len(newer) >= _WALK:
                    return None
                info = self.store.head(key, before)
                if info is None:
                    return None
        except VersionNotFound:
            return None  # removed while walked (a prune, another compaction): list them
        return newer

    def compact(self, name: StateName, lock_id: str, caller: Caller) -> Compaction:
        """Remove the intermediate snapshots written under ``lock_id``; one ``compact`` event.

        Nothing to remove records nothing: most locks write once (or never). The
        caller needs ``write``, as for the release that starts it.
        """
        key = str(name)
        if not self.policy.allows(caller, name, Permission.WRITE):
            # Only a refusal is recorded: an event is opened for nothing on every release.
            with self.events.event(Action.COMPACT, caller, name, record_success=False):
                require(self.policy, caller, name, Permission.WRITE, "compact the history of")
        start = self._start(key, lock_id)
        if isinstance(start, _Unknown):
            versions = None
        elif self.store.count_newer(key, start, 2) < 2:
            # Most locks write once or never: then nothing of theirs can go, and one count
            # (one indexed statement on SQLite) tells so without walking the history.
            return Compaction(key, lock_id, None, ())
        else:
            versions = self._since(key, start)
        if versions is None:
            versions = [version_from_info(key, i) for i in self.store.versions(key)]
        plan = plan_compaction(key, versions, lock_id, self.history.keep_every)
        if not plan.removed or plan.kept is None:
            return plan
        if not versions[0].is_current:
            return Compaction(key, lock_id, plan.kept, ())  # deleted meanwhile: the trash's
        current = versions[0].version_id
        with self.events.event(Action.COMPACT, caller, name) as event:
            event.lock_id = lock_id
            event.version = plan.kept
            gone: list[str] = []
            stopped = ""
            try:
                for version_id in plan.removed:
                    try:
                        self.store.delete_version(key, version_id, current)
                    except VersionNotFound:
                        continue  # removed by another server's compaction or a prune
                    except WriteRace:
                        # Written since the plan: a rollback may have restored one of
                        # these. What is left stays as ordinary history.
                        stopped = f"; stopped, {key} was written since"
                        break
                    gone.append(version_id)
            finally:
                # Counted even when a removal failed half-way: those removed are gone.
                if gone:
                    self.ledger.add(key, plan.kept, len(gone))
                event.detail = (
                    f"removed {len(gone)} intermediate snapshot(s) written under lock "
                    f"{lock_id}; version {plan.kept} stands for them{stopped}"
                )
                # A prune (of this server or another) removed them all first.
                event.changed = bool(gone)
        return Compaction(key, lock_id, plan.kept, tuple(gone))

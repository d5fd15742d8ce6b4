"""History hygiene racing the writes it must not undo, on the embedded store on disk.

Each race is driven step by step, not by timing: the other party acts at the
exact point between a listing and the removal that acts on it, through the
hooks real deployments have there (an event subscriber, a storage observer).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from statekeeper.app import Services
from statekeeper.events import Action, Event
from statekeeper.security.audit import AuditFilter
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings
from statekeeper.state.compaction import Compactor
from statekeeper.state.hygiene import parse_history
from statekeeper.state.inspection import Inspector
from statekeeper.state.prune import prune
from statekeeper.state.rollback import rollback
from statekeeper.storage.base import ObjectStore
from statekeeper.storage.metered import MeteredStore
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.statefiles import state_bytes

NAME = StateName("team/app.tfstate")
#: Listed after NAME (the trash is listed by name), so purged after it.
LATER = StateName("team/zz.tfstate")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[[str], Services]]:
    made: list[Services] = []

    def build(history: str) -> Services:
        settings = Settings(data_dir=tmp_path / "data", history=parse_history(history))
        made.append(Services.build(settings))
        return made[-1]

    yield build
    for s in made:
        s.close()


def test_expiry_purges_only_the_deletion_it_listed(
    services: Callable[[str], Services], caller: Caller
) -> None:
    s = services('trash = "1s"')
    assert s.trash is not None
    for name in (NAME, LATER):
        s.states.write(name, state_bytes(1), caller)
        s.states.delete(name, caller)
    time.sleep(1.1)  # both deletions expire

    done: list[str] = []

    def meanwhile(event: Event) -> None:
        # Between the expiry's listing and its purge of LATER, LATER is written and
        # deleted again: a new deletion, not one second old.
        if event.action is Action.PURGE and event.state == str(NAME) and not done:
            done.append(str(NAME))
            s.states.write(LATER, state_bytes(2), caller)
            s.states.delete(LATER, caller)

    s.events.subscribe(meanwhile)
    assert s.trash.expire(caller) == [(str(NAME), 1)]
    assert done == [str(NAME)]
    (kept,) = s.trash.entries(caller)
    assert kept.state.key == str(LATER)
    restored = s.trash.restore(LATER, caller)
    assert restored.serial == 2
    assert s.states.read_existing(LATER, caller).data == state_bytes(2)


class _AfterFirstRemoval:
    """A storage observer that runs ``act`` once, when the first version removal returns."""

    def __init__(self, act: Callable[[], None]) -> None:
        self.act: Callable[[], None] | None = act

    def storage_timer(self, driver: str, operation: str) -> Callable[[float], None]:
        def took(seconds: float) -> None:
            if operation == "delete_version" and self.act is not None:
                act, self.act = self.act, None
                act()

        return took

    def storage_call(self, driver: str, operation: str, seconds: float, error: str | None) -> None:
        pass

    def state_stored(self, size: int) -> None:
        pass


class _BeforeFirstRemoval(MeteredStore):
    """``inner`` with ``act`` run once, just before the first version removal starts."""

    def __init__(self, inner: ObjectStore, act: Callable[[], None]) -> None:
        super().__init__(inner, _AfterFirstRemoval(lambda: None))
        self.act: Callable[[], None] | None = act

    def delete_version(self, key: str, version_id: str, current: str | None = None) -> None:
        if self.act is not None:
            act, self.act = self.act, None
            act()
        super().delete_version(key, version_id, current)


def _elsewhere(work: Callable[[], object]) -> Callable[[], None]:
    """``work`` run to its end in a thread of its own, as another server would."""

    def run() -> None:
        other = threading.Thread(target=work)
        other.start()
        other.join()

    return run


def _prune_events(s: Services) -> list[Event]:
    return [e for e in s.audit.query(AuditFilter()) if e.action is Action.PRUNE]


def _rollback_elsewhere(s: Services, caller: Caller, version_id: str) -> Callable[[], None]:
    """A rollback of NAME to ``version_id`` by another operator, run to its end in a thread
    of its own (its store calls are not the observed store's)."""

    def roll_back() -> None:
        def run() -> None:
            inspector = Inspector(s.states, s.history)
            rollback(s.states, s.locks, inspector, NAME, version_id, caller)

        other = threading.Thread(target=run)
        other.start()
        other.join()

    return roll_back


def test_a_rollback_landing_during_a_prune_keeps_the_version_it_restored(
    services: Callable[[str], Services], caller: Caller
) -> None:
    s = services('[[retention]]\nstates = "team/**"\nkeep_last = 1')
    for serial in (1, 2, 3, 4):
        s.states.write(NAME, state_bytes(serial), caller)
    v4, v3, v2, v1 = (v.version_id for v in s.history.versions(NAME, caller))

    # Another operator's rollback: the prune has planned to remove v3, v2 and v1, and
    # has removed v3.
    store = MeteredStore(s.store, _AfterFirstRemoval(_rollback_elsewhere(s, caller, v2)))
    (pruned,) = prune(store, s.settings.history, s.policy, s.events, caller)
    kept = s.history.versions(NAME, caller)
    assert kept[0].restored_from == v2 and kept[0].serial == 5
    # The rollback's version stays (current) and so does v2, which it restored.
    assert [v.version_id for v in kept[1:]] == [v2]
    assert set(pruned.removed) == {v3, v4, v1} and pruned.kept == 2


def test_a_rollback_landing_during_a_compaction_keeps_the_snapshot_it_restored(
    services: Callable[[str], Services], caller: Caller
) -> None:
    s = services("compact = false")
    assert s.ledger is not None
    # One apply's four snapshots under its lock, then its release (compaction is
    # run by hand below, with the rollback landing in the middle of it).
    lock = LockInfo.new("OperationTypeApply", caller.actor)
    s.locks.lock(NAME, lock.body, caller)
    for serial in (1, 2, 3, 4):
        s.states.write(NAME, state_bytes(serial), caller, lock_id=lock.id)
    s.locks.unlock(NAME, lock.body, caller)
    v4, v3, v2, v1 = (v.version_id for v in s.history.versions(NAME, caller))

    # Another operator's rollback takes the lock just released: the compaction has
    # planned to remove v1, v2 and v3, and has removed v1.
    store = MeteredStore(s.store, _AfterFirstRemoval(_rollback_elsewhere(s, caller, v2)))
    compactor = Compactor(store, s.ledger, parse_history(""), s.policy, s.events)
    done = compactor.compact(NAME, lock.id, caller)
    kept = s.history.versions(NAME, caller)
    assert kept[0].restored_from == v2 and kept[0].serial == 5
    # The compaction stopped at the rollback: v2, which it restored, stays, and so
    # does v3 (the next release of a lock compacts its own run, not this one).
    assert [v.version_id for v in kept[1:]] == [v4, v3, v2]
    assert done.removed == (v1,) and kept[1].replaced == 1


@pytest.mark.parametrize("rule", ["keep_last = 1", 'keep_for = "1s"'])
def test_a_deletion_landing_during_a_prune_stops_that_state_and_nothing_else(
    services: Callable[[str], Services], caller: Caller, rule: str
) -> None:
    s = services(f'[[retention]]\nstates = "team/**"\n{rule}')
    assert s.trash is not None
    for name in (NAME, LATER):
        for serial in (1, 2, 3):
            s.states.write(name, state_bytes(serial), caller)
    time.sleep(1.1)  # every version but the current one is older than keep_for
    v3, v2, v1 = (v.version_id for v in s.history.versions(NAME, caller))

    def delete_elsewhere() -> None:
        other = threading.Thread(target=s.states.delete, args=(NAME, caller))
        other.start()
        other.join()

    # Another operator deletes NAME once the prune has removed its first version.
    store = MeteredStore(s.store, _AfterFirstRemoval(delete_elsewhere))
    first, later = prune(store, s.settings.history, s.policy, s.events, caller)
    # What the prune removed before the deletion is gone; the rest is the trash's,
    # and the prune went on to the next state.
    assert first.name == str(NAME) and len(first.removed) == 1
    assert later.name == str(LATER) and len(later.removed) == 2 and later.kept == 1
    (trashed,) = s.trash.entries(caller)
    assert trashed.state.key == str(NAME)
    restored = s.trash.restore(NAME, caller)
    assert restored.serial == 3
    kept = {v.version_id for v in s.history.versions(NAME, caller)}
    assert v3 in kept and len(kept & {v2, v1}) == 1


KEEP_ONE = '[[retention]]\nstates = "team/**"\nkeep_last = 1'


def test_a_prune_that_another_server_beat_to_every_removal_records_nothing(
    services: Callable[[str], Services], caller: Caller
) -> None:
    # Two servers on one data directory, each with its background prune.
    s, other = services(KEEP_ONE), services(KEEP_ONE)
    for serial in (1, 2, 3, 4):
        s.states.write(NAME, state_bytes(serial), caller)

    def prune_there() -> object:
        return prune(other.store, other.settings.history, other.policy, other.events, caller)

    # The other server prunes the same versions once this prune has planned them.
    store = _BeforeFirstRemoval(s.store, _elsewhere(prune_there))
    assert prune(store, s.settings.history, s.policy, s.events, caller) == []
    assert [v.serial for v in s.history.versions(NAME, caller)] == [4]
    # One prune removed them: one event, not a second saying "removed 0 version(s)".
    (event,) = _prune_events(s)
    assert event.detail is not None and event.detail.startswith("removed 3 version(s)")


def test_a_prune_sharing_its_removals_with_another_server_counts_what_stays(
    services: Callable[[str], Services], caller: Caller
) -> None:
    s, other = services(KEEP_ONE), services(KEEP_ONE)
    for serial in (1, 2, 3, 4):
        s.states.write(NAME, state_bytes(serial), caller)
    v4, v3, _, _ = (v.version_id for v in s.history.versions(NAME, caller))

    def prune_there() -> object:
        return prune(other.store, other.settings.history, other.policy, other.events, caller)

    # The other server prunes the rest once this prune has removed its first version.
    store = MeteredStore(s.store, _AfterFirstRemoval(_elsewhere(prune_there)))
    (pruned,) = prune(store, s.settings.history, s.policy, s.events, caller)
    assert pruned.removed == (v3,)
    assert pruned.kept == 1  # v4, the current version: not those the other removed
    assert [v.version_id for v in s.history.versions(NAME, caller)] == [v4]
    details = sorted(e.detail or "" for e in _prune_events(s))
    assert [d.split(" by ")[0] for d in details] == ["removed 1 version(s)", "removed 2 version(s)"]


def test_a_compaction_that_a_prune_beat_to_every_removal_records_nothing(
    services: Callable[[str], Services], caller: Caller
) -> None:
    s = services(f"compact = false\n{KEEP_ONE}")
    other = services(KEEP_ONE)
    assert s.ledger is not None
    lock = LockInfo.new("OperationTypeApply", caller.actor)
    s.locks.lock(NAME, lock.body, caller)
    for serial in (1, 2, 3, 4):
        s.states.write(NAME, state_bytes(serial), caller, lock_id=lock.id)
    s.locks.unlock(NAME, lock.body, caller)

    def prune_there() -> object:
        return prune(other.store, other.settings.history, other.policy, other.events, caller)

    # Another server's prune removes the snapshots once the compaction has planned them.
    store = _BeforeFirstRemoval(s.store, _elsewhere(prune_there))
    compactor = Compactor(store, s.ledger, parse_history(""), s.policy, s.events)
    assert compactor.compact(NAME, lock.id, caller).removed == ()
    assert [v.serial for v in s.history.versions(NAME, caller)] == [4]
    actions = [e.action for e in s.audit.query(AuditFilter())]
    assert Action.COMPACT not in actions and actions.count(Action.PRUNE) == 1

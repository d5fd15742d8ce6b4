"""History hygiene on the embedded store: compaction, retention, the trash, compression."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from statekeeper.app import Services
from statekeeper.errors import Conflict
from statekeeper.events import Action, Event
from statekeeper.security.audit import AuditFilter
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings
from statekeeper.state.compaction import Compactor
from statekeeper.state.hygiene import parse_history
from statekeeper.state.inspection import Inspector
from statekeeper.state.prune import prune
from statekeeper.state.rollback import rollback
from statekeeper.storage.metered import MeteredStore
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.statefiles import instance, state_bytes
from statekeeper.times import utcnow

NAME = StateName("team/app.tfstate")


def build(tmp_path: Path, history: str = "") -> Services:
    return Services.build(Settings(data_dir=tmp_path / "data", history=parse_history(history)))


#: Services with the given ``[history]`` settings on the test's data directory.
Build = Callable[..., Services]


@pytest.fixture
def built(tmp_path: Path) -> Iterator[Build]:
    """:func:`build` for the test, each one closed when it ends."""
    made: list[Services] = []

    def build_here(history: str = "") -> Services:
        made.append(build(tmp_path, history))
        return made[-1]

    yield build_here
    for s in made:
        s.close()


@pytest.fixture
def hygienic(built: Build) -> tuple[Services, list[Event]]:
    s = built()
    seen: list[Event] = []
    s.events.subscribe(seen.append)
    return s, seen


def apply_run(s: Services, caller: Caller, first_serial: int, writes: int) -> LockInfo:
    """A lock, ``writes`` snapshots under it (as a long apply persists them), the unlock."""
    lock = LockInfo.new("OperationTypeApply", caller.actor)
    s.locks.lock(NAME, lock.body, caller)
    for serial in range(first_serial, first_serial + writes):
        s.states.write(NAME, state_bytes(serial), caller, lock_id=lock.id)
    s.locks.unlock(NAME, lock.body, caller)
    return lock


def history(s: Services, caller: Caller) -> list[tuple[int | None, int, bool]]:
    return [(v.serial, v.replaced, v.is_current) for v in s.history.versions(NAME, caller)]


def test_release_collapses_a_runs_intermediate_snapshots(
    hygienic: tuple[Services, list[Event]], caller: Caller
) -> None:
    s, seen = hygienic
    apply_run(s, caller, 1, 1)  # the version current when the next lock is taken
    lock = apply_run(s, caller, 2, 4)
    assert history(s, caller) == [(5, 3, True), (1, 0, False)]
    compact = [e for e in seen if e.action is Action.COMPACT]
    assert len(compact) == 1 and compact[0].lock_id == lock.id
    assert compact[0].detail is not None and "removed 3 intermediate" in compact[0].detail
    # The audit trail records the unlock before the compaction it started.
    audited = s.audit.query(AuditFilter())
    assert [e.action for e in audited[-2:]] == [Action.UNLOCK, Action.COMPACT]
    assert audited[-1].version == s.history.versions(NAME, caller)[0].version_id


def test_keep_every_nth_and_versions_another_writer_built_on(built: Build, caller: Caller) -> None:
    s = built("keep_every = 2")
    apply_run(s, caller, 1, 6)  # intermediates 1..5: keeps 2 and 4, and 6 (the last)
    assert [v[0] for v in history(s, caller)] == [6, 4, 2]
    # A -lock=false write in the middle of a lock's run: what it built on stays.
    lock = LockInfo.new("OperationTypeApply", caller.actor)
    s.locks.lock(NAME, lock.body, caller)
    s.states.write(NAME, state_bytes(7), caller, lock_id=lock.id)
    s.states.write(NAME, state_bytes(8), caller, lock_id=lock.id)
    s.locks.force_unlock(NAME, caller, lock_id=lock.id)
    s.states.write(NAME, state_bytes(9), caller)  # no lock, built on 8
    s.locks.lock(NAME, lock.body, caller)
    s.states.write(NAME, state_bytes(10), caller, lock_id=lock.id)
    s.locks.unlock(NAME, lock.body, caller)
    # 7 went at the force-unlock; 8 stays (9 built on it); 10 is the run's last.
    assert [v[0] for v in history(s, caller)] == [10, 9, 8, 6, 4, 2]


class _Calls:
    """The storage operations a compactor makes (``MeteredStore``'s observer)."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def storage_timer(self, driver: str, operation: str) -> Callable[[float], None]:
        return lambda seconds: self.made.append(operation)

    def storage_call(self, driver: str, operation: str, seconds: float, error: str | None) -> None:
        self.made.append(operation)

    def state_stored(self, size: int) -> None:
        pass


def _watched_compactor(s: Services) -> _Calls:
    """A compactor on a metered view of ``s``'s store (``s`` built with compaction off)."""
    calls = _Calls()
    assert s.ledger is not None
    compactor = Compactor(
        MeteredStore(s.store, calls), s.ledger, parse_history(""), s.policy, s.events
    )
    s.events.subscribe(compactor.on_event)
    return calls


def test_a_release_reads_only_the_versions_written_since_its_lock(
    built: Build, caller: Caller
) -> None:
    s = built("compact = false")
    calls = _watched_compactor(s)
    for serial in range(1, 41):
        apply_run(s, caller, serial, 1)  # a history of 40 versions, one per apply
    assert "versions" not in calls.made
    calls.made.clear()
    apply_run(s, caller, 41, 4)
    assert history(s, caller)[:2] == [(44, 3, True), (40, 0, False)]
    assert len(history(s, caller)) == 41
    # The LOCK's read, then back from 44 to 41, whose version_before is 40, the
    # LOCK's own (not read again); no listing of the 40 before.
    assert "versions" not in calls.made
    assert calls.made.count("head") == 1 + 4
    assert calls.made.count("delete_version") == 3


def test_a_release_after_one_write_or_none_makes_one_count_and_no_walk(
    built: Build, caller: Caller
) -> None:
    s = built("compact = false")
    calls = _watched_compactor(s)
    for serial in range(1, 6):
        apply_run(s, caller, serial, 1)
    calls.made.clear()
    apply_run(s, caller, 6, 1)
    # The LOCK's read of where its run starts; at the UNLOCK, one count.
    assert calls.made == ["head", "count_newer"]
    calls.made.clear()
    apply_run(s, caller, 7, 0)  # a lock that wrote nothing
    assert calls.made == ["head", "count_newer"]
    assert [v[0] for v in history(s, caller)] == [6, 5, 4, 3, 2, 1]


def test_a_lock_retried_by_its_holder_mid_run_still_compacts_the_whole_run(
    built: Build, caller: Caller
) -> None:
    s = built("compact = false")
    calls = _watched_compactor(s)
    apply_run(s, caller, 1, 1)
    lock = LockInfo.new("OperationTypeApply", caller.actor)
    s.locks.lock(NAME, lock.body, caller)
    s.states.write(NAME, state_bytes(2), caller, lock_id=lock.id)
    s.states.write(NAME, state_bytes(3), caller, lock_id=lock.id)
    s.locks.lock(NAME, lock.body, caller)  # the holder's retry: taken already, 200
    s.states.write(NAME, state_bytes(4), caller, lock_id=lock.id)
    calls.made.clear()
    s.locks.unlock(NAME, lock.body, caller)
    assert history(s, caller) == [(4, 2, True), (1, 0, False)]
    assert "versions" not in calls.made


def test_a_lock_taken_before_the_server_started_is_compacted_from_the_whole_history(
    built: Build, caller: Caller
) -> None:
    s = built("compact = false")
    apply_run(s, caller, 1, 1)
    lock = LockInfo.new("OperationTypeApply", caller.actor)
    s.locks.lock(NAME, lock.body, caller)  # before the compactor was there to see it
    calls = _watched_compactor(s)
    for serial in (2, 3, 4):
        s.states.write(NAME, state_bytes(serial), caller, lock_id=lock.id)
    s.locks.unlock(NAME, lock.body, caller)
    assert calls.made.count("versions") == 1
    assert history(s, caller) == [(4, 2, True), (1, 0, False)]


def test_compaction_off_keeps_every_snapshot(built: Build, caller: Caller) -> None:
    s = built("compact = false")
    apply_run(s, caller, 1, 3)
    assert [v[0] for v in history(s, caller)] == [3, 2, 1]


def test_rollback_target_survives_prune(built: Build, caller: Caller) -> None:
    s = built('[[retention]]\nstates = "team/**"\nkeep_last = 2')
    for serial in (1, 2, 3, 4):
        apply_run(s, caller, serial, 1)
    first = s.history.versions(NAME, caller)[-1]
    rollback(s.states, s.locks, Inspector(s.states, s.history), NAME, first.version_id, caller)
    dry = prune(s.store, s.settings.history, s.policy, s.events, caller, dry_run=True)
    assert [len(p.removed) for p in dry] == [2]
    assert len(s.history.versions(NAME, caller)) == 5  # a dry run removes nothing
    done = prune(s.store, s.settings.history, s.policy, s.events, caller)
    kept = s.history.versions(NAME, caller)
    # The newest two (the rollback's and serial 4) and serial 1, which it restored.
    assert [v.serial for v in kept] == [5, 4, 1]
    assert done[0].removed == dry[0].removed
    assert kept[0].restored_from == first.version_id
    assert any(e.action is Action.PRUNE for e in s.audit.query(AuditFilter()))
    # keep_for: everything is recent, so nothing more goes.
    recent = parse_history('[[retention]]\nstates = "**"\nkeep_last = 1\nkeep_for = "1d"')
    assert prune(s.store, recent, s.policy, s.events, caller) == []
    old = prune(s.store, recent, s.policy, s.events, caller, now=utcnow() + timedelta(days=2))
    assert [len(p.removed) for p in old] == [1]  # serial 4; 1 is a rollback's target


def test_trash_restore_and_purge(built: Build, caller: Caller) -> None:
    s = built('trash = "1d"')
    apply_run(s, caller, 1, 1)
    data = state_bytes(2, resources=[instance("terraform_data", "x", {"id": "x"})])
    s.states.write(NAME, data, caller)
    s.states.delete(NAME, caller)
    assert s.states.read(NAME, caller) is None
    assert s.trash is not None
    listed = s.trash.entries(caller)
    assert [t.state.key for t in listed] == [str(NAME)]
    assert listed[0].expires is not None
    restored = s.trash.restore(NAME, caller)
    assert restored.serial == 2
    current = s.states.read_existing(NAME, caller)
    assert current.data == data
    assert s.lock_table.get_digest(str(NAME)) == current.version.md5
    with pytest.raises(Conflict):
        s.trash.restore(NAME, caller)  # it is current: nothing to restore
    s.states.delete(NAME, caller)
    assert s.trash.expire(caller) == []  # not a day old yet
    assert s.trash.expire(caller, now=utcnow() + timedelta(days=2)) == [(str(NAME), 2)]
    assert s.trash.entries(caller) == []
    assert s.store.versions(str(NAME)) == []
    actions = [e.action for e in s.audit.query(AuditFilter())]
    assert Action.RESTORE in actions and Action.PURGE in actions


def test_compressed_rows_read_back_verbatim_beside_plain_ones(
    tmp_path: Path, built: Build, caller: Caller
) -> None:
    many = [instance("terraform_data", f"r{i}", {"id": f"id-{i}"}) for i in range(200)]
    data = state_bytes(1, resources=many)
    plain = build(tmp_path)
    plain.close()
    # A database from before compression: a plain row, no codec column value.
    db = sqlite3.connect(tmp_path / "data" / "statekeeper.db")
    db.execute(
        "INSERT INTO objects (key, data, size, metadata, created) VALUES (?, ?, ?, '{}', ?)",
        ("old.tfstate", data, len(data), utcnow().isoformat()),
    )
    db.execute("INSERT INTO current (key, object_id) VALUES ('old.tfstate', last_insert_rowid())")
    db.commit()
    db.close()
    s = built()
    s.states.write(NAME, data, caller)
    assert s.states.read_existing(NAME, caller).data == data
    assert s.states.read_existing(StateName("old.tfstate"), caller).data == data
    head = s.store.head(str(NAME))
    assert head is not None and head.size == len(data)
    db = sqlite3.connect(tmp_path / "data" / "statekeeper.db")
    rows = db.execute("SELECT key, codec, length(data), size FROM objects").fetchall()
    db.close()
    by_key = {r[0]: r[1:] for r in rows}
    assert by_key["old.tfstate"][0] is None
    codec, stored, size = by_key[str(NAME)]
    assert codec == "zstd" and stored * 5 < size


def test_a_large_state_streamed_in_is_compressed_hashed_plain_and_streamed_out_verbatim(
    tmp_path: Path, built: Build, caller: Caller
) -> None:
    """Over 8 MiB: the body goes through the upload's spool file into compressed pieces,
    and the GET path streams it back decoded a piece at a time."""
    import hashlib

    many = [
        instance("aws_instance", f"web{i}", {"id": f"i-{i:016x}", "tags": {"team": "platform"}})
        for i in range(60_000)
    ]
    data = state_bytes(1, resources=many)
    assert len(data) > 9 << 20
    s = built()
    chunks = (data[at : at + 65536] for at in range(0, len(data), 65536))
    written = s.states.write(NAME, chunks, caller).version
    assert written.md5 == hashlib.md5(data).hexdigest()
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert written.size == len(data)
    stream = s.states.read_stream(NAME, caller)
    assert stream is not None
    assert stream.version.md5 == written.md5
    assert b"".join(stream.chunks) == data
    db = sqlite3.connect(tmp_path / "data" / "statekeeper.db")
    codec, stored = db.execute(
        "SELECT o.codec, sum(length(p.data)) FROM objects o "
        "JOIN object_pieces p ON p.id = o.id WHERE o.key = ?",
        (str(NAME),),
    ).fetchone()
    db.close()
    assert codec == "zstd" and stored * 5 < len(data)


def test_a_migrated_history_written_under_one_lock_is_not_compacted(
    hygienic: tuple[Services, list[Event]], caller: Caller
) -> None:
    from statekeeper.state import migrate
    from statekeeper.storage.memory import MemoryStore

    s, seen = hygienic
    source = MemoryStore("hygiene-migrate-source")
    for serial in (1, 2, 3):
        source.put(str(NAME), state_bytes(serial), {})
    migrate.migrate(migrate.StoreSource(source), s.states, s.locks, caller, with_history=True)
    assert [v[0] for v in history(s, caller)] == [3, 2, 1]
    assert not [e for e in seen if e.action is Action.COMPACT]

"""Driver contracts, written once and run against every driver.

A test module subclasses a suite and provides fixtures:

- ``ObjectStoreContract`` needs ``store`` (an empty :class:`ObjectStore`).
- ``HistoryEditsContract`` needs ``store`` too, one with ``supports_history_edits``.
- ``LockTableContract`` needs ``lock_tables``: two independent handles on
  one empty backend, as upstream's ``TestRemoteLocks(a, b)`` takes two clients.

The lock cases follow Terraform's ``internal/states/remote/testing.go`` and
``internal/backend/testing.go`` (``docs/protocol.md#conformance``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from statekeeper.errors import (
    CapabilityMissing,
    LockConflict,
    LockMismatch,
    LockNotFound,
    StateNotFound,
    StorageError,
    VersionNotFound,
    WriteRace,
)
from statekeeper.storage.base import LockTable, ObjectStore
from statekeeper.terraform.layout import lock_file_key
from statekeeper.terraform.lockinfo import LockInfo

__all__ = [
    "CompareAndSwapContract",
    "HistoryEditsContract",
    "LockTableContract",
    "ObjectStoreContract",
]

STATE = (
    b'{\n  "version": 4,\n  "terraform_version": "1.15.5",\n  "serial": 2,\n'
    b'  "lineage": "stub-lineage",\n  "outputs": {},\n  "resources": [],\n'
    b'  "check_results": null\n}\n'
)
# Conditional puts are what lock files are made with; these keys are lock files.
LOCK_FILE = lock_file_key("c")
RACE_LOCK_FILE = lock_file_key("race")


class _ObjectStoreBasics:
    def test_probe_answers_and_creates_nothing(self, store: ObjectStore) -> None:
        store.probe()
        assert list(store.scan()) == []

    def test_get_missing_is_none(self, store: ObjectStore) -> None:
        assert store.get("nothing/here.tfstate") is None
        assert store.head("nothing/here.tfstate") is None

    def test_put_get_byte_identical(self, store: ObjectStore) -> None:
        # Upstream TestClient: what is read back is byte-identical to what was put.
        info = store.put("a/b.tfstate", STATE, {"serial": "2"})
        got = store.get("a/b.tfstate")
        assert got is not None
        assert got.data == STATE
        assert got.info.size == len(STATE) == info.size
        assert got.info.version_id == info.version_id
        assert dict(got.info.metadata)["serial"] == "2"

    def test_delete_then_get_is_none(self, store: ObjectStore) -> None:
        store.put("gone.tfstate", STATE, {})
        store.delete("gone.tfstate")
        assert store.get("gone.tfstate") is None

    def test_list_by_prefix_in_key_order(self, store: ObjectStore) -> None:
        for key in ("team/b.tfstate", "team/a.tfstate", "other/c.tfstate", "env:/dev/team/a"):
            store.put(key, STATE, {})
        assert [i.key for i in store.scan("team/")] == ["team/a.tfstate", "team/b.tfstate"]
        assert {i.key for i in store.scan()} >= {"other/c.tfstate", "env:/dev/team/a"}
        store.delete("team/a.tfstate")
        assert [i.key for i in store.scan("team/")] == ["team/b.tfstate"]

    def test_versions_newest_first(self, store: ObjectStore) -> None:
        if not store.supports_versions:
            with pytest.raises(CapabilityMissing):
                store.versions("v.tfstate")
            return
        bodies = [STATE.replace(b'"serial": 2', f'"serial": {n}'.encode()) for n in (1, 2, 3)]
        ids = [
            store.put("v.tfstate", body, {"serial": str(n)}).version_id
            for n, body in zip((1, 2, 3), bodies, strict=True)
        ]
        versions = store.versions("v.tfstate")
        assert [v.version_id for v in versions][:3] == ids[::-1]
        assert versions[0].is_latest and not versions[1].is_latest
        old = store.get("v.tfstate", ids[0])
        assert old is not None and old.data == bodies[0]
        assert hashlib.sha256(old.data).hexdigest() == hashlib.sha256(bodies[0]).hexdigest()
        with pytest.raises(VersionNotFound):
            store.get("v.tfstate", "no-such-version")

    def test_version_before_names_the_previous_version(self, store: ObjectStore) -> None:
        if not store.supports_versions:
            with pytest.raises(CapabilityMissing):
                store.version_before("k", "1")
            return
        ids = [store.put("k", bytes([n]), {}).version_id for n in range(3)]
        store.put("other", b"x", {})
        assert store.version_before("k", ids[2]) == ids[1]
        assert store.version_before("k", ids[1]) == ids[0]
        assert store.version_before("k", ids[0]) is None
        with pytest.raises(VersionNotFound):
            store.version_before("k", "404")

    def test_with_previous_reads_a_version_and_the_one_before(self, store: ObjectStore) -> None:
        if not store.supports_versions:
            return
        bodies = [b'{"serial": %d}' % n for n in range(3)]
        ids = [store.put("w", body, {"m": "1"}).version_id for body in bodies]
        store.put("other", b"x", {})
        got = store.with_previous("w", ids[2])
        assert (got.data, got.previous, got.previous_data) == (bodies[2], ids[1], bodies[1])
        # The caller holds the one before: it is named, not read.
        got = store.with_previous("w", ids[2], known=ids[1])
        assert (got.data, got.previous, got.previous_data) == (bodies[2], ids[1], None)
        got = store.with_previous("w", ids[0], known=ids[1])
        assert (got.data, got.previous, got.previous_data) == (bodies[0], None, None)
        with pytest.raises(VersionNotFound):
            store.with_previous("w", "404")

    def test_versions_survive_delete(self, store: ObjectStore) -> None:
        first = store.put("d.tfstate", STATE, {})
        if not store.supports_versions:
            # No history: the deleted bytes are gone, and the store says so.
            store.delete("d.tfstate")
            assert store.get("d.tfstate") is None
            with pytest.raises(CapabilityMissing):
                store.versions("d.tfstate")
            return
        store.delete("d.tfstate")
        assert store.get("d.tfstate") is None
        old = store.get("d.tfstate", first.version_id)
        assert old is not None and old.data == STATE

    def test_put_if_absent(self, store: ObjectStore) -> None:
        if not store.supports_conditional_put:
            with pytest.raises(CapabilityMissing):
                store.put_if_absent(LOCK_FILE, b"{}", {})
            return
        assert store.put_if_absent(LOCK_FILE, b'{"ID":"1"}', {}) is True
        assert store.put_if_absent(LOCK_FILE, b'{"ID":"2"}', {}) is False
        got = store.get(LOCK_FILE)
        assert got is not None and got.data == b'{"ID":"1"}'

    def test_put_if_absent_one_winner_under_contention(self, store: ObjectStore) -> None:
        if not store.supports_conditional_put:
            with pytest.raises(CapabilityMissing):
                store.put_if_absent(RACE_LOCK_FILE, b"{}", {})
            return
        wins: list[int] = []
        barrier = threading.Barrier(8)

        def attempt(n: int) -> None:
            barrier.wait()
            if store.put_if_absent(RACE_LOCK_FILE, f'{{"ID":"{n}"}}'.encode(), {}):
                wins.append(n)

        threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1


def _info(who: str, lock_id: str | None = None) -> LockInfo:
    return LockInfo.new("test", who, version="1.15.5", lock_id=lock_id)


class LockTableContract:
    def test_probe_answers_and_locks_nothing(
        self, lock_tables: tuple[LockTable, LockTable]
    ) -> None:
        a, _ = lock_tables
        a.probe()
        assert list(a.scan()) == []

    def test_remote_locks(self, lock_tables: tuple[LockTable, LockTable]) -> None:
        # Upstream TestRemoteLocks(a, b), step by step.
        a, b = lock_tables
        info_a, info_b = _info("clientA"), _info("clientB")
        a.acquire("s.tfstate", info_a)
        with pytest.raises(LockConflict) as conflict:
            b.acquire("s.tfstate", info_b)
        assert conflict.value.holder.id == info_a.id
        assert conflict.value.holder.who == "clientA"
        a.release("s.tfstate", info_a.id)
        b.acquire("s.tfstate", info_b)
        assert info_b.id != info_a.id
        b.release("s.tfstate", info_b.id)
        assert a.read("s.tfstate") is None

    def test_holder_is_read_back_verbatim(self, lock_tables: tuple[LockTable, LockTable]) -> None:
        a, b = lock_tables
        info = _info("root@vm")
        a.acquire("v.tfstate", info)
        held = b.read("v.tfstate")
        assert held is not None
        assert held.id == info.id and held.who == "root@vm" and held.operation == "test"
        assert held.created == info.created
        a.release("v.tfstate", info.id)

    def test_server_time_is_kept_with_the_lock(
        self, lock_tables: tuple[LockTable, LockTable]
    ) -> None:
        """The server's receive time is the lock's age, whatever the client's clock says."""
        a, b = lock_tables
        taken = datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)
        info = LockInfo.new("test", "skewed@vm", created=datetime(2000, 1, 1, tzinfo=UTC))
        a.acquire("t.tfstate", replace(info.with_facts("ci", "10.0.0.9"), acquired=taken))
        held = b.read("t.tfstate")
        assert held is not None
        assert held.acquired == taken and held.since == taken and held.age_source == "server"
        assert held.created == info.created  # kept for display
        assert held.id == info.id
        ((_, scanned),) = [(k, lock) for k, lock in b.scan() if k == "t.tfstate"]
        assert scanned.acquired == taken
        a.release("t.tfstate", info.id)

    def test_release_with_wrong_id_is_refused(
        self, lock_tables: tuple[LockTable, LockTable]
    ) -> None:
        a, b = lock_tables
        info = _info("clientA")
        a.acquire("w.tfstate", info)
        with pytest.raises(LockMismatch) as mismatch:
            b.release("w.tfstate", "not-the-id")
        assert mismatch.value.holder.id == info.id
        assert a.read("w.tfstate") is not None
        with pytest.raises(LockNotFound):
            b.release("free.tfstate", info.id)
        a.release("w.tfstate", info.id)

    def test_force_release_from_other_handle(
        self, lock_tables: tuple[LockTable, LockTable]
    ) -> None:
        # Upstream testLocks force variant: B unlocks A's lock by the holder's ID.
        a, b = lock_tables
        info_a, info_b = _info("clientA"), _info("clientB")
        a.acquire("f.tfstate", info_a)
        with pytest.raises(LockConflict) as conflict:
            b.acquire("f.tfstate", info_b)
        b.release("f.tfstate", conflict.value.holder.id)
        b.acquire("f.tfstate", info_b)
        removed = a.force_release("f.tfstate")
        assert removed is not None and removed.id == info_b.id
        assert a.force_release("f.tfstate") is None

    def test_delete_if_held_by_then(self, lock_tables: tuple[LockTable, LockTable]) -> None:
        """``then`` runs once the lock is deleted, never when another holds it; where it
        runs in the delete's transaction, its failure undoes the delete."""
        a, b = lock_tables
        info = _info("clientA")
        a.acquire("d.tfstate", info)
        ran: list[str] = []
        assert not b.delete_if_held_by_then("d.tfstate", "not-the-id", lambda: ran.append("x"))
        assert ran == [] and a.read("d.tfstate") is not None
        if b.then_in_transaction:

            def fails() -> None:
                b.acquire("d-beside.tfstate", _info("beside"))
                raise LockConflict(info)

            with pytest.raises(LockConflict):
                b.delete_if_held_by_then("d.tfstate", info.id, fails)
            assert a.read("d.tfstate") is not None and a.read("d-beside.tfstate") is None
        assert b.delete_if_held_by_then("d.tfstate", info.id, lambda: ran.append("deleted"))
        assert ran == ["deleted"] and a.read("d.tfstate") is None

    def test_locks_are_per_state(self, lock_tables: tuple[LockTable, LockTable]) -> None:
        a, b = lock_tables
        one, two = _info("one"), _info("two")
        a.acquire("team/one.tfstate", one)
        b.acquire("team/two.tfstate", two)
        listed = dict(a.scan("team/"))
        assert {k: v.id for k, v in listed.items()} == {
            "team/one.tfstate": one.id,
            "team/two.tfstate": two.id,
        }
        a.release("team/one.tfstate", one.id)
        b.release("team/two.tfstate", two.id)
        assert list(a.scan("team/")) == []

    def test_one_holder_under_contention(self, lock_tables: tuple[LockTable, LockTable]) -> None:
        a, b = lock_tables
        winners: list[str] = []
        barrier = threading.Barrier(10)

        def attempt(n: int) -> None:
            info = _info(f"client{n}")
            barrier.wait()
            try:
                (a if n % 2 else b).acquire("race.tfstate", info)
            except LockConflict:
                return
            winners.append(info.id)

        threads = [threading.Thread(target=attempt, args=(n,)) for n in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1
        a.release("race.tfstate", winners[0])

    def test_digests(self, lock_tables: tuple[LockTable, LockTable]) -> None:
        a, b = lock_tables
        if not a.keeps_digests:
            assert a.get_digest("x.tfstate") is None
            return
        digest = hashlib.md5(STATE).hexdigest()
        assert a.get_digest("x.tfstate") is None
        a.put_digest("x.tfstate", digest)
        assert b.get_digest("x.tfstate") == digest
        b.delete_digest("x.tfstate")
        assert a.get_digest("x.tfstate") is None


class CompareAndSwapContract:
    """``replace`` writes only over the version the caller saw (needs ``store``)."""

    def test_replace_over_expected_version(self, store: ObjectStore) -> None:
        if not store.supports_compare_and_swap:
            with pytest.raises(CapabilityMissing):
                store.replace("cas.tfstate", STATE, {}, None)
            return
        first = store.replace("cas.tfstate", STATE, {"serial": "2"}, None)
        with pytest.raises(WriteRace):
            store.replace("cas.tfstate", STATE, {}, None)  # it exists now
        seen = store.head("cas.tfstate")
        assert seen is not None
        second = store.replace("cas.tfstate", STATE + b" ", {"serial": "3"}, seen)
        with pytest.raises(WriteRace):
            store.replace("cas.tfstate", STATE + b"  ", {}, seen)  # stale: second landed
        got = store.get("cas.tfstate")
        assert got is not None
        assert got.data == STATE + b" "
        assert got.info.version_id == second.version_id
        if store.supports_versions:
            assert second.version_id != first.version_id

    def test_one_replace_wins_from_the_same_version(self, store: ObjectStore) -> None:
        if not store.supports_compare_and_swap:
            return  # the refusal is asserted above
        store.put("casrace.tfstate", STATE, {})
        seen = store.head("casrace.tfstate")
        wins: list[int] = []
        barrier = threading.Barrier(6)

        def attempt(n: int) -> None:
            barrier.wait()
            try:
                store.replace("casrace.tfstate", STATE + b" " * n, {}, seen)
            except WriteRace:
                return
            wins.append(n)

        threads = [threading.Thread(target=attempt, args=(n,)) for n in range(1, 7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        got = store.get("casrace.tfstate")
        assert got is not None
        assert got.data == STATE + b" " * wins[0]


class ObjectStoreContract(_ObjectStoreBasics, CompareAndSwapContract):
    """Everything an ObjectStore promises; subclass it and provide ``store``."""


class HistoryEditsContract:
    """Single versions removed, the trash: stores with ``supports_history_edits``."""

    def test_a_version_goes_but_never_the_current_one(self, store: ObjectStore) -> None:
        assert store.supports_history_edits
        for serial in (1, 2, 3):
            store.put("h.tfstate", STATE.replace(b'"serial": 2', b'"serial": %d' % serial), {})
        newest, middle, oldest = (v.version_id for v in store.versions("h.tfstate"))
        store.delete_version("h.tfstate", middle)
        assert [v.version_id for v in store.versions("h.tfstate")] == [newest, oldest]
        with pytest.raises(StorageError):
            store.delete_version("h.tfstate", newest)
        with pytest.raises(VersionNotFound):
            store.delete_version("h.tfstate", middle)
        got = store.get("h.tfstate")
        assert got is not None and b'"serial": 3' in got.data

    def test_deleted_state_is_listed_restored_verbatim_and_purged(self, store: ObjectStore) -> None:
        store.put("t/a.tfstate", b"{}", {})
        store.put("t/a.tfstate", STATE, {"serial": "2"})
        store.put("t/b.tfstate", STATE, {})
        with pytest.raises(StateNotFound):
            store.undelete("t/a.tfstate")  # not deleted
        store.delete("t/a.tfstate")
        assert store.get("t/a.tfstate") is None
        (listed,) = store.deleted("t/")
        assert listed.key == "t/a.tfstate" and listed.size == len(STATE)
        info = store.undelete("t/a.tfstate")
        assert info.version_id == listed.version_id and info.metadata.get("serial") == "2"
        got = store.get("t/a.tfstate")
        assert got is not None and got.data == STATE
        assert list(store.deleted("t/")) == []
        store.delete("t/a.tfstate")
        assert store.purge("t/a.tfstate") == 2
        assert store.versions("t/a.tfstate") == []
        assert list(store.deleted("t/")) == []
        with pytest.raises(StateNotFound):
            store.purge("t/a.tfstate")
        # A state written again under a deleted name is current, not in the trash.
        store.delete("t/b.tfstate")
        store.put("t/b.tfstate", STATE, {})
        assert list(store.deleted("t/")) == []

    def test_a_removal_holds_only_while_the_current_version_is_the_one_seen(
        self, store: ObjectStore
    ) -> None:
        for serial in (1, 2):
            store.put("r.tfstate", STATE.replace(b'"serial": 2', b'"serial": %d' % serial), {})
        seen, older = (v.version_id for v in store.versions("r.tfstate"))
        # A write (a rollback restoring ``older``) lands after the versions were read.
        store.put("r.tfstate", STATE.replace(b'"serial": 2', b'"serial": 3'), {})
        with pytest.raises(WriteRace):
            store.delete_version("r.tfstate", older, current=seen)
        assert older in [v.version_id for v in store.versions("r.tfstate")]
        newest = store.versions("r.tfstate")[0].version_id
        store.delete_version("r.tfstate", older, current=newest)
        assert [v.version_id for v in store.versions("r.tfstate")] == [newest, seen]
        store.delete("r.tfstate")
        with pytest.raises(WriteRace):
            store.delete_version("r.tfstate", seen, current=newest)  # deleted since

    def test_an_erased_key_leaves_no_version_and_nothing_in_the_trash(
        self, store: ObjectStore
    ) -> None:
        store.put("e.tfstate", STATE, {})
        store.put("e.tfstate", STATE, {"serial": "3"})
        store.put("kept.tfstate", STATE, {})
        store.erase("e.tfstate")
        assert store.get("e.tfstate") is None and store.versions("e.tfstate") == []
        assert list(store.deleted()) == []
        assert [i.key for i in store.scan()] == ["kept.tfstate"]
        store.erase("e.tfstate")  # nothing left to remove: no error

    def test_a_purge_removes_only_the_deletion_it_saw(self, store: ObjectStore) -> None:
        store.put("p/a.tfstate", STATE, {})
        store.delete("p/a.tfstate")
        (listed,) = store.deleted("p/")
        # Written and deleted again after the listing; S3 times its markers to the second.
        time.sleep(1.1)
        store.put("p/a.tfstate", STATE, {"serial": "3"})
        store.delete("p/a.tfstate")
        with pytest.raises(WriteRace):
            store.purge("p/a.tfstate", deleted=listed.deleted)
        (again,) = store.deleted("p/")
        assert again.deleted > listed.deleted and len(store.versions("p/a.tfstate")) == 2
        assert store.purge("p/a.tfstate", deleted=again.deleted) == 2
        assert list(store.deleted("p/")) == []

"""Migration: every version byte-identical, resumable, from stores and from files."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from statekeeper.app import Services
from statekeeper.errors import BadRequest, LockConflict, StateConflict, UnreadableState
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings
from statekeeper.state.migrate import FileSource, StoreSource, migrate
from statekeeper.terraform.names import StateName
from statekeeper.testing.statefiles import instance, state_bytes


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[Services]:
    s = Services.build(Settings(store=f"sqlite:///{tmp_path / 'dest.db'}"))
    yield s
    s.close()


def _history(s: Services, name: str, caller: Caller) -> list[bytes]:
    versions = s.history.versions(StateName(name), caller)
    return [
        s.states.read_existing(StateName(name), caller, v.version_id).data
        for v in reversed(versions)
    ]


def test_store_to_store_with_history_is_byte_identical(
    services: Services, dest: Services, caller: Caller
) -> None:
    a, b = StateName("team/a.tfstate"), StateName("env:/dev/team/a.tfstate")
    for serial in (1, 2, 3):
        services.states.write(
            a, state_bytes(serial, resources=[instance("t", "x", {"n": serial})]), caller
        )
    services.states.write(b, state_bytes(1, lineage="other"), caller)

    report = migrate(
        StoreSource(services.store), dest.states, dest.locks, caller, with_history=True
    )

    assert report.view().copied == 4
    for name in (a, b):
        assert _history(dest, str(name), caller) == _history(services, str(name), caller)
        assert (
            dest.lock_table.get_digest(str(name))
            == hashlib.md5(dest.states.read_existing(name, caller).data).hexdigest()
        )
        assert dest.locks.read(name) is None


def test_a_second_run_resumes_and_copies_only_what_is_new(
    services: Services, dest: Services, caller: Caller
) -> None:
    name = StateName("a.tfstate")
    services.states.write(name, state_bytes(1), caller)
    services.states.write(
        name, state_bytes(2, outputs={"o": {"value": 1, "type": "number"}}), caller
    )
    migrate(StoreSource(services.store), dest.states, dest.locks, caller, with_history=True)
    services.states.write(name, state_bytes(3), caller)

    again = migrate(StoreSource(services.store), dest.states, dest.locks, caller, with_history=True)
    assert (again.states[0].skipped, len(again.states[0].copied)) == (2, 1)
    assert _history(dest, "a.tfstate", caller) == _history(services, "a.tfstate", caller)
    nothing = migrate(
        StoreSource(services.store), dest.states, dest.locks, caller, with_history=True
    )
    assert nothing.view().copied == 0


def test_a_history_that_went_backwards_is_replayed_verbatim(
    services: Services, dest: Services, caller: Caller
) -> None:
    name = StateName("a.tfstate")
    v1, v2 = state_bytes(1), state_bytes(2, resources=[instance("t", "x", {})])
    services.states.write(name, v1, caller)
    services.states.write(name, v2, caller)
    services.states.write(name, v1, caller, force=True)  # a forced push back to serial 1
    migrate(StoreSource(services.store), dest.states, dest.locks, caller, with_history=True)
    assert _history(dest, "a.tfstate", caller) == [v1, v2, v1]


def test_an_unrelated_destination_state_is_not_overwritten_without_force(
    services: Services, dest: Services, caller: Caller
) -> None:
    name = StateName("a.tfstate")
    services.states.write(name, state_bytes(1, lineage="src"), caller)
    dest.states.write(name, state_bytes(9, lineage="dst"), caller)
    with pytest.raises(StateConflict, match="lineage"):
        migrate(StoreSource(services.store), dest.states, dest.locks, caller)
    assert dest.locks.read(name) is None
    migrate(StoreSource(services.store), dest.states, dest.locks, caller, force=True)
    assert dest.states.read_existing(name, caller).data == state_bytes(1, lineage="src")


def test_dry_run_writes_nothing(services: Services, dest: Services, caller: Caller) -> None:
    services.states.write(StateName("a.tfstate"), state_bytes(1), caller)
    report = migrate(StoreSource(services.store), dest.states, dest.locks, caller, dry_run=True)
    assert report.view().planned == 1
    assert list(dest.store.scan()) == []


def test_from_a_local_file_and_a_directory(tmp_path: Path, dest: Services, caller: Caller) -> None:
    data = state_bytes(4, resources=[instance("t", "x", {"a": 1})])
    (tmp_path / "terraform.tfstate").write_bytes(data)
    migrate(
        FileSource(tmp_path / "terraform.tfstate", "team/x.tfstate"),
        dest.states,
        dest.locks,
        caller,
    )
    assert dest.states.read_existing(StateName("team/x.tfstate"), caller).data == data

    tree = tmp_path / "tree"
    (tree / "terraform.tfstate.d" / "dev").mkdir(parents=True)
    (tree / "terraform.tfstate").write_bytes(data)
    (tree / "terraform.tfstate.backup").write_bytes(b"not a state")
    (tree / "terraform.tfstate.d" / "dev" / "terraform.tfstate").write_bytes(state_bytes(1))
    report = migrate(FileSource(tree), dest.states, dest.locks, caller)
    assert sorted(s.name for s in report.states) == [
        "terraform.tfstate",
        "terraform.tfstate.d/dev/terraform.tfstate",
    ]


def test_file_source_errors_say_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "terraform.tfstate").write_bytes(state_bytes(1))
    with pytest.raises(BadRequest, match="--name"):
        FileSource(tmp_path / "terraform.tfstate")
    with pytest.raises(BadRequest, match="does not exist"):
        FileSource(tmp_path / "missing.tfstate", "x")


def test_a_bad_file_in_a_directory_is_named_and_nothing_is_copied(
    tmp_path: Path, dest: Services, caller: Caller
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.tfstate").write_bytes(state_bytes(1))
    (tree / "b.tfstate").write_bytes(b"{not json")
    (tree / "c.tfstate").write_bytes(state_bytes(1))
    with pytest.raises(UnreadableState, match=r"^b\.tfstate .*could not be parsed") as caught:
        migrate(FileSource(tree), dest.states, dest.locks, caller)
    assert "nothing was copied" in " ".join(caught.value.__notes__)
    assert caught.value.exit_code == 1, "the source's data is at fault, not the command"
    assert list(dest.store.scan()) == []

    # The dry run lists it as the real run's refusal, and goes on with the others.
    dry = migrate(FileSource(tree), dest.states, dest.locks, caller, dry_run=True)
    a, b, c = dry.view().states
    assert a.refused is None and c.refused is None and dry.view().planned == 2
    assert b.refused is not None
    assert b.refused.startswith(f"not a state ({tree / 'b.tfstate'}: the state could not")


def test_a_locked_destination_state_is_refused_by_the_dry_run_as_by_the_real_one(
    services: Services, dest: Services, caller: Caller
) -> None:
    for name in ("a.tfstate", "b.tfstate"):
        services.states.write(StateName(name), state_bytes(1), caller)
    taken = dest.locks.lock(
        StateName("b.tfstate"),
        b'{"ID":"tf-1","Operation":"OperationTypeApply","Who":"tf@ci","Version":"1.15.5"}',
        caller,
    )

    dry = migrate(StoreSource(services.store), dest.states, dest.locks, caller, dry_run=True)
    a, b = dry.view().states
    assert a.refused is None and a.planned == 1
    assert b.refused == f"locked by {taken.describe()}" and "ID tf-1" in b.refused

    with pytest.raises(LockConflict, match=r"^b\.tfstate is locked by ID tf-1 held by tf@ci"):
        migrate(StoreSource(services.store), dest.states, dest.locks, caller)


def test_a_dry_run_reports_the_refusal_the_real_run_makes(
    services: Services, dest: Services, caller: Caller
) -> None:
    for name in ("a.tfstate", "c.tfstate"):
        services.states.write(StateName(name), state_bytes(1, lineage="src"), caller)
    dest.states.write(StateName("c.tfstate"), state_bytes(9, lineage="dst"), caller)

    dry = migrate(StoreSource(services.store), dest.states, dest.locks, caller, dry_run=True)
    a, c = dry.view().states
    assert a.refused is None and a.planned == 1
    assert c.refused is not None and c.refused.startswith("cannot import state with lineage")
    assert "statekeeper migrate --force" in c.refused and dry.view().planned == 1
    forced = migrate(
        StoreSource(services.store), dest.states, dest.locks, caller, dry_run=True, force=True
    )
    assert [s.refused for s in forced.states] == [None, None]

    # The real run refuses the same state, and says what it copied before.
    with pytest.raises(StateConflict, match=r"^c\.tfstate: cannot import") as caught:
        migrate(StoreSource(services.store), dest.states, dest.locks, caller)
    assert "copied before this error, and kept: a.tfstate (1 version(s))" in " ".join(
        caught.value.__notes__
    )

"""StateService on the embedded store: concurrent writers, forced writes, digest upkeep."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from statekeeper.app import Services
from statekeeper.errors import LockConflict, StateConflict
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.terraform.names import StateName

NAME = StateName("svc/prod.tfstate")
CALLER = Caller(actor="tester")


def doc(serial: int, tag: str = "", lineage: str = "L") -> bytes:
    outputs = {"tag": {"value": tag, "type": "string"}}
    return json.dumps(
        {"version": 4, "serial": serial, "lineage": lineage, "outputs": outputs}
    ).encode()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = Services.build(load_settings({"data_dir": tmp_path / "data"}, env={}))
    yield built
    built.close()


def race(*actions: Callable[[], object]) -> list[BaseException | None]:
    """Run the callables at once (as the server's thread pool would); their errors."""
    barrier = threading.Barrier(len(actions))
    errors: list[BaseException | None] = [None] * len(actions)

    def run(i: int) -> None:
        barrier.wait()
        try:
            actions[i]()
        except (StateConflict, LockConflict) as exc:
            errors[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_writes_of_the_same_serial_accept_exactly_one(services: Services) -> None:
    services.states.write(NAME, doc(1), CALLER)
    for serial in range(2, 60):
        # Two -lock=false runs that both read serial - 1 and write serial.
        errors = race(
            functools.partial(services.states.write, NAME, doc(serial, "a"), CALLER),
            functools.partial(services.states.write, NAME, doc(serial, "b"), CALLER),
        )
        refused = [e for e in errors if e is not None]
        assert len(refused) == 1, serial
        assert "with a different state that has the same serial" in str(refused[0])
    serials = [v.serial for v in services.history.versions(NAME, CALLER)]
    assert serials == list(range(59, 0, -1))  # one version per serial, none overwritten


def test_forced_write_passes_the_guard_and_is_recorded(services: Services) -> None:
    services.states.write(NAME, doc(5), CALLER)
    with pytest.raises(StateConflict):
        services.states.write(NAME, doc(2, lineage="other"), CALLER)
    outcome = services.states.write(NAME, doc(2, lineage="other"), CALLER, force=True)
    assert outcome.created
    assert services.states.read_existing(NAME, CALLER).data == doc(2, lineage="other")


def test_digest_follows_the_current_state(services: Services) -> None:
    table = services.lock_table
    assert table.keeps_digests
    services.states.write(NAME, doc(1), CALLER)
    assert table.get_digest(str(NAME)) == hashlib.md5(doc(1)).hexdigest()
    services.states.write(NAME, doc(2), CALLER)
    assert table.get_digest(str(NAME)) == hashlib.md5(doc(2)).hexdigest()
    services.states.delete(NAME, CALLER)
    assert table.get_digest(str(NAME)) is None

"""A history listing made while the background prune removes versions: the listing
reads each version's bytes after listing them, and a version pruned in between is
no longer history, not an error (the server answered such a listing with a 404)."""

from __future__ import annotations

import threading
from pathlib import Path

from statekeeper.app import Services
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings
from statekeeper.state.hygiene import parse_history
from statekeeper.state.inspection import Inspector
from statekeeper.state.prune import prune
from statekeeper.terraform.names import StateName
from statekeeper.testing.statefiles import state_bytes

NAME = StateName("kept/app.tfstate")


def test_a_listing_during_a_prune_lists_what_is_left(tmp_path: Path, caller: Caller) -> None:
    history = parse_history('[[retention]]\nstates = "kept/**"\nkeep_last = 2')
    s = Services.build(Settings(data_dir=tmp_path / "data", history=history))
    inspector = Inspector(s.states, s.history)
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer_and_pruner() -> None:
        try:
            for serial in range(1, 400):
                if stop.is_set():
                    return
                s.states.write(NAME, state_bytes(serial), caller)
                prune(s.store, s.settings.history, s.policy, s.events, caller)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)

    s.states.write(NAME, state_bytes(0), caller)
    thread = threading.Thread(target=writer_and_pruner)
    thread.start()
    listings = 0
    try:
        while thread.is_alive() and listings < 300:
            entries = inspector.history_entries(NAME, caller)
            serials = [e.serial for e in entries]
            assert serials == sorted(serials, reverse=True) and serials, serials
            listings += 1
    finally:
        stop.set()
        thread.join()
        s.close()
    assert not failures
    assert listings > 0

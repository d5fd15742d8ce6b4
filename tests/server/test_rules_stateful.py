"""The rules table as a model: random sequences of Terraform requests against the app.

A few lines of Python hold what docs/protocol.md#rules says the answer must be;
hypothesis drives LOCK, UNLOCK, force-unlock, writes and deletes in any order
and checks every status, the served bytes and the number of versions.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from tfwire import Api, lock_body

from statekeeper.app import Services
from statekeeper.errors import StateNotFound
from statekeeper.server.app import create_app
from statekeeper.settings import load_settings
from statekeeper.terraform.names import StateName

NAME = "model/prod.tfstate"
IDS = st.sampled_from(["id-a", "id-b"])
MAYBE_IDS = st.sampled_from([None, "id-a", "id-b"])


def state(serial: int, lineage: str, tag: str) -> bytes:
    doc = {"version": 4, "serial": serial, "lineage": lineage, "outputs": {"t": tag}}
    return json.dumps(doc).encode()


class TerraformRules(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        # Every accepted write stays a version here: compaction, which collapses a
        # lock's writes at its release, is modelled in tests/state/test_hygiene.py.
        self.services = Services.build(
            load_settings(
                {"data_dir": Path(self.tmp.name)}, env={"STATEKEEPER_HISTORY": "compact = false"}
            )
        )
        self.api = Api(create_app(self.services), self.services)
        # The model.
        self.holder: str | None = None
        self.current: tuple[int, str, bytes] | None = None  # serial, lineage, bytes
        self.versions = 0

    def teardown(self) -> None:
        self.api.close()
        self.services.close()
        self.tmp.cleanup()

    def fence_status(self, lock_id: str | None) -> int | None:
        if self.holder is not None and lock_id != self.holder:
            return 423
        if self.holder is None and lock_id is not None:
            return 409
        return None

    @rule(lock_id=IDS)
    def lock(self, lock_id: str) -> None:
        expected = 200 if self.holder in (None, lock_id) else 423
        assert self.api.lock(lock_body(lock_id), NAME).status_code == expected
        if expected == 200:
            self.holder = lock_id

    @rule(lock_id=IDS)
    def unlock(self, lock_id: str) -> None:
        expected = 200 if self.holder == lock_id else 409
        assert self.api.unlock(lock_body(lock_id), NAME).status_code == expected
        if expected == 200:
            self.holder = None

    @rule()
    def force_unlock(self) -> None:
        response = self.api.request("UNLOCK", self.api.url(NAME), content=b"")
        assert response.status_code == (409 if self.holder is None else 200)
        self.holder = None

    @rule(
        serial=st.integers(0, 4),
        lineage=st.sampled_from(["", "L1", "L2"]),
        tag=st.sampled_from(["x", "y", "z"]),
        lock_id=MAYBE_IDS,
        method=st.sampled_from(["POST", "PUT"]),
    )
    def write(self, serial: int, lineage: str, tag: str, lock_id: str | None, method: str) -> None:
        data = state(serial, lineage, tag)
        expected = self.fence_status(lock_id)
        new_version = False
        if expected is None:
            if self.current is None:
                expected, new_version = 200, True
            else:
                cur_serial, cur_lineage, cur_bytes = self.current
                if data == cur_bytes:
                    expected = 200
                elif (cur_lineage and lineage and cur_lineage != lineage) or serial <= cur_serial:
                    expected = 409  # other lineage, older serial, same serial other bytes
                else:
                    expected, new_version = 200, True
        response = self.api.write(data, NAME, lock_id=lock_id, method=method)
        assert response.status_code == expected, response.text
        if new_version:
            self.current = (serial, lineage, data)
            self.versions += 1

    @rule(tag=st.sampled_from(["x", "y", "z"]))
    def next_serial_as_the_holder(self, tag: str) -> None:
        """Terraform's own next write: serial + 1, the same lineage, under its lock."""
        serial, lineage = (self.current[0] + 1, self.current[1]) if self.current else (1, "L1")
        self.write(serial, lineage, tag, self.holder, "POST")

    @rule()
    def retry_as_the_holder(self) -> None:
        """Terraform's retry of a write whose answer was lost: the current bytes again."""
        if self.current is not None:
            serial, lineage, data = self.current
            tag = json.loads(data)["outputs"]["t"]
            self.write(serial, lineage, tag, self.holder, "POST")

    @rule(lock_id=MAYBE_IDS)
    def delete(self, lock_id: str | None) -> None:
        expected = self.fence_status(lock_id) or (404 if self.current is None else 200)
        params = {"ID": lock_id} if lock_id else None
        response = self.api.request("DELETE", self.api.url(NAME), params=params)
        assert response.status_code == expected, response.text
        if expected == 200:
            self.current = None

    @invariant()
    def served_state_and_history_match(self) -> None:
        response = self.api.get(NAME)
        if self.current is None:
            assert response.status_code == 404
        else:
            assert response.status_code == 200
            assert response.content == self.current[2]
        try:
            count = len(self.api.versions(NAME))
        except StateNotFound:
            count = 0
        assert count == self.versions
        held = self.services.locks.read(StateName(NAME))
        assert (held.id if held else None) == self.holder


TerraformRules.TestCase.settings = settings(max_examples=50, stateful_step_count=20, deadline=None)
test_terraform_rules = TerraformRules.TestCase

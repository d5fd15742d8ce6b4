"""Two servers on one store: the serial guard holds across processes' services.

Each ``Services`` stands for one server process (its own connections and its
own in-process mutex); only the store's compare-and-swap orders their writes.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from statekeeper.app import Services
from statekeeper.errors import StateConflict, WriteRace
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.terraform.names import StateName


def _state(serial: int, marker: str) -> bytes:
    doc = {
        "version": 4,
        "terraform_version": "1.15.5",
        "serial": serial,
        "lineage": "L",
        "outputs": {"m": {"value": marker, "type": "string"}},
        "resources": [],
        "check_results": None,
    }
    return json.dumps(doc).encode()


def _race(replicas: list[Services], name: StateName, serial: int) -> tuple[list[str], int]:
    """Four writers, two per replica, all of one serial; the accepted markers, refusals."""
    accepted: list[str] = []
    refused: list[str] = []
    barrier = threading.Barrier(4)

    def write(replica: Services, marker: str) -> None:
        barrier.wait()
        try:
            replica.states.write(name, _state(serial, marker), Caller(marker))
        except (StateConflict, WriteRace):
            refused.append(marker)
        else:
            accepted.append(marker)

    threads = [
        threading.Thread(target=write, args=(replicas[n % 2], f"s{serial}-{n}")) for n in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return accepted, len(refused)


def test_same_serial_from_two_replicas_is_accepted_once(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": tmp_path}, env={})
    replicas = [Services.build(settings) for _ in range(2)]
    name = StateName("team/app.tfstate")
    replicas[0].states.write(name, _state(1, "base"), Caller("ci"))
    for serial in range(2, 22):
        accepted, refused = _race(replicas, name, serial)
        assert len(accepted) == 1, (accepted, refused)
        assert refused == 3
        current = replicas[1].states.read(name, Caller("check"))
        assert current is not None
        assert json.loads(current.data)["outputs"]["m"]["value"] == accepted[0]
    for replica in replicas:
        replica.close()

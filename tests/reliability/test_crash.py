"""Crash: SIGKILL the server at random moments while it writes (embedded SQLite).

A client holds the lock and writes one version after another (serial+1,
states of varying size) while a timer kills the server. After each restart:
every acknowledged version is present with its exact bytes, every stored
version is whole (its bytes parse and match its recorded size and digest),
the current state is the newest version, and the lock the killed server
granted is still there: a second client meets it (423 with the holder's ID),
and its holder can release it.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from reliability_support import lock_body, md5_header, record_figures, size, state_doc

from statekeeper.state.version import StateVersion
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.storage.sqlite.store import SqliteStore
from statekeeper.terraform.statedoc import StateDoc
from statekeeper.testing.processes import StatekeeperServer

WRITES = size(50, 500)
NAME = "reliability/crash.tfstate"


@dataclass
class Acked:
    """Versions the server acknowledged: version id → SHA-256 of the bytes sent."""

    versions: dict[str, str] = field(default_factory=dict)
    attempted: int = 0
    last_serial: int = 0


def _write_until_killed(url: str, lock_id: str, lineage: str, start: int, acked: Acked) -> None:
    rng = random.Random(start)
    serial = start
    with httpx.Client(timeout=30) as http:
        while acked.attempted < WRITES:
            serial += 1
            data = state_doc(serial, lineage, serial, padding=rng.choice([0, 50, 2000, 8000]))
            acked.attempted += 1
            try:
                r = http.post(
                    url,
                    params={"ID": lock_id},
                    content=data,
                    headers={"Content-MD5": md5_header(data)},
                )
            except httpx.TransportError:
                return  # killed mid-request: this write is unacknowledged
            assert r.status_code == 200, r.text
            acked.versions[r.json()["version_id"]] = hashlib.sha256(data).hexdigest()
            acked.last_serial = serial


def _check_store(db_path: Path, acked: Acked) -> tuple[int, int]:
    """(versions stored, current serial); asserts nothing acknowledged is lost or torn."""
    store = SqliteStore(SqliteDatabase(db_path))
    try:
        versions = store.versions(NAME)
        for info in versions:
            obj = store.get(NAME, info.version_id)
            assert obj is not None
            recorded = StateVersion.metadata_fields(dict(obj.info.metadata))
            assert len(obj.data) == info.size, f"version {info.version_id} is torn"
            assert hashlib.sha256(obj.data).hexdigest() == recorded["sha256"]
            assert StateDoc.parse(obj.data).serial == recorded["serial"]
        stored = {v.version_id for v in versions}
        lost = set(acked.versions) - stored
        assert not lost, f"acknowledged versions lost: {sorted(lost)}"
        for version_id, sha in acked.versions.items():
            obj = store.get(NAME, version_id)
            assert obj is not None and hashlib.sha256(obj.data).hexdigest() == sha
        current = store.get(NAME)
        if not versions:  # killed before the first write committed
            assert current is None
            return 0, 0
        assert current is not None and current.info.version_id == versions[0].version_id
        return len(versions), StateDoc.parse(current.data).serial
    finally:
        store.close()


#: Every acknowledged write must stay a version: no compaction at the UNLOCK of each round.
KEEP = {"STATEKEEPER_HISTORY": "compact = false"}


@pytest.mark.timeout(3600)
def test_kill_during_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    db_path = data_dir / "statekeeper.db"
    lineage = str(uuid.uuid4())
    acked = Acked()
    rng = random.Random(7)
    kills = 0
    serial = 0
    while acked.attempted < WRITES:
        server = StatekeeperServer(tmp_path / "server", "--data-dir", str(data_dir), env=KEEP)
        server.start()
        url = server.state_url(NAME)
        lock_id = str(uuid.uuid4())
        body = lock_body(lock_id, who="crash@test")
        assert httpx.request("LOCK", url, content=body, timeout=30).status_code == 200
        timer = threading.Timer(rng.uniform(0.05, 0.6), server.kill)
        timer.start()
        _write_until_killed(url, lock_id, lineage, serial, acked)
        timer.join()
        if server.proc.returncode is not None:
            kills += 1
        server.kill()

        stored, serial = _check_store(db_path, acked)
        assert serial >= acked.last_serial

        # The killed server's lock survives the restart, and its holder can release it.
        server = StatekeeperServer(tmp_path / "server", "--data-dir", str(data_dir), env=KEEP)
        server.start()
        try:
            other = httpx.request("LOCK", url := server.state_url(NAME), content=lock_body())
            assert other.status_code == 423
            assert json.loads(other.content)["ID"] == lock_id
            current = httpx.get(url, timeout=30)
            if serial == 0:
                assert current.status_code == 404
            else:
                assert current.status_code == 200
                assert json.loads(current.content)["serial"] == serial
            assert httpx.request("UNLOCK", url, content=body, timeout=30).status_code == 200
        finally:
            server.stop()

    record_figures(
        "crash (SIGKILL during writes)",
        "sqlite",
        0,
        servers=1,
        clients=1,
        rounds=acked.attempted,
        faults=kills,
        notes=f"{len(acked.versions)} writes acknowledged, all present and intact; "
        f"{stored} versions stored",
    )
    assert kills > 0

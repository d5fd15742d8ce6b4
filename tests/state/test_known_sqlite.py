"""Writes on the embedded store check against the version this process last saw, without
reading the current row again; a version another process wrote meanwhile (the same file)
fails the write's compare-and-swap and the write is checked again against the store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from statekeeper.app import Services
from statekeeper.errors import StateConflict
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.terraform.names import StateName

NAME = StateName("team/app.tfstate")
CI = Caller("ci", "127.0.0.1")
#: What a HEAD of the current version reads, outside the write's own transaction.
CURRENT_ROW = "FROM current c JOIN objects o ON o.id = c.object_id"
#: The write fence's read of the lock.
LOCK_READ = f"SELECT body, actor, remote_addr, acquired FROM locks WHERE key = '{NAME}'"


def _state(serial: int, lineage: str = "L", marker: str = "") -> bytes:
    doc = {
        "version": 4,
        "serial": serial,
        "lineage": lineage,
        "outputs": {"m": {"value": marker or f"s{serial}", "type": "string"}},
        "resources": [],
    }
    return json.dumps(doc).encode()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Services]]:
    """Two services on one database file, as two servers sharing it."""
    built = [Services.build(load_settings({"data_dir": tmp_path}, env={})) for _ in range(2)]
    yield built
    for replica in built:
        replica.close()


def _db(services: Services) -> SqliteDatabase:
    db = services.store.records.database
    assert db is not None
    return db


def _serial(replica: Services) -> int:
    current = replica.states.read_stream(NAME, CI)
    assert current is not None
    return int(json.loads(b"".join(current.chunks))["serial"])


def test_a_write_after_a_read_reads_the_current_row_no_more(replicas: list[Services]) -> None:
    a = replicas[0]
    a.states.write(NAME, _state(1), CI)
    db = _db(a)
    for serial in range(2, 5):
        assert _serial(a) == serial - 1
        statements: list[str] = []
        trace = statements.append
        db.run(lambda conn: conn.set_trace_callback(trace))  # noqa: B023 - run at once
        try:
            assert a.states.write(NAME, _state(serial), CI).created
        finally:
            db.run(lambda conn: conn.set_trace_callback(None))
        assert not [s for s in statements if CURRENT_ROW in s]
        # The fence's read of the lock is one statement, no transaction of its own (the
        # last BEGIN is the trace's own end); then the write's.
        assert [s for s in statements if "FROM locks" in s] == [LOCK_READ]
        assert statements[:-1].count("BEGIN") == 0
        assert statements.count("BEGIN IMMEDIATE") == 1


def test_a_version_written_by_another_process_is_checked_again(replicas: list[Services]) -> None:
    a, b = replicas
    a.states.write(NAME, _state(1), CI)
    assert _serial(a) == 1  # a remembers serial 1
    b.states.write(NAME, _state(2), CI)
    # Accepted against the store's serial 2, although a remembered 1.
    assert a.states.write(NAME, _state(3), CI).created
    assert _serial(b) == 3
    # A stale serial is refused against the store's version, not the remembered one.
    b.states.write(NAME, _state(4), CI)
    with pytest.raises(StateConflict):
        a.states.write(NAME, _state(4, marker="other bytes"), CI)
    assert _serial(b) == 4
    assert len(a.store.versions(str(NAME))) == 4


def test_a_refusal_against_the_remembered_version_is_not_the_answer(
    replicas: list[Services],
) -> None:
    a, b = replicas
    a.states.write(NAME, _state(5, lineage="old"), CI)
    assert _serial(a) == 5  # a remembers lineage "old"
    b.states.write(NAME, _state(1, lineage="new"), CI, force=True)
    # Against the remembered version this is another lineage; against the store's, serial 2 > 1.
    assert a.states.write(NAME, _state(2, lineage="new"), CI).created
    assert _serial(b) == 2

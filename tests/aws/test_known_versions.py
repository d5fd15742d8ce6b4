"""Writes on S3 check against the version this replica last saw, without a HEAD; a version
changed by another replica meanwhile is caught by If-Match and the write is checked again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from statekeeper.app import Services
from statekeeper.errors import StateConflict
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.telemetry.metrics import Metrics
from statekeeper.terraform.names import StateName

NAME = StateName("team/app.tfstate")
CI = Caller("ci", "127.0.0.1")


def _state(serial: int, lineage: str = "L", marker: str = "") -> bytes:
    doc = {
        "version": 4,
        "terraform_version": "1.15.5",
        "serial": serial,
        "lineage": lineage,
        "outputs": {"m": {"value": marker or f"s{serial}", "type": "string"}},
        "resources": [],
        "check_results": None,
    }
    return json.dumps(doc).encode()


@pytest.fixture
def replicas(tmp_path: Path, bucket: str, table: str) -> Iterator[list[Services]]:
    built = []
    for n in range(2):
        settings = load_settings(
            {
                "data_dir": tmp_path / f"r{n}",
                "store": f"s3://{bucket}",
                "locks": f"dynamodb://{table}",
            },
            env={},
        )
        built.append(Services.build(settings, metrics=Metrics(None)))
    yield built
    for replica in built:
        replica.close()


def _heads(replica: Services) -> float:
    assert replica.metrics is not None
    samples = replica.metrics.storage_seconds.collect()[0].samples
    return sum(
        s.value
        for s in samples
        if s.name.endswith("_count") and s.labels.get("operation") == "head"
    )


def _serial(replica: Services) -> int:
    current = replica.states.read(NAME, CI)
    assert current is not None
    return int(json.loads(current.data)["serial"])


def test_a_write_after_a_read_makes_no_head_request(replicas: list[Services]) -> None:
    a = replicas[0]
    a.states.write(NAME, _state(1), CI)
    before = _heads(a)
    for serial in range(2, 5):
        assert _serial(a) == serial - 1
        assert a.states.write(NAME, _state(serial), CI).created
    assert _heads(a) == before


def test_a_version_written_by_another_replica_is_checked_again(replicas: list[Services]) -> None:
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
    assert json.loads(b.states.read(NAME, CI).data)["outputs"]["m"]["value"] == "s4"  # type: ignore[union-attr]


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

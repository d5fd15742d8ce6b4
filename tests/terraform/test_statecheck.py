"""A large body checked in a child process: the same verdicts as the reader in process."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from statekeeper.app import Services
from statekeeper.errors import ChecksumMismatch, InvalidState, StorageError
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings
from statekeeper.terraform import statecheck
from statekeeper.terraform.names import StateName
from statekeeper.terraform.statestream import StateDocReader

MB = 1 << 20


def _resources(count: int) -> str:
    item = '{{"mode":"managed","type":"terraform_data","name":"r{0}","instances":[{{"a":"{1}"}}]}}'
    return ",".join(item.format(i, "p" * 200) for i in range(count))


BIG = _resources(20000)  # about 5 MB
BODIES = [
    f'{{"version":4,"serial":3,"lineage":"l-1","resources":[{BIG}]}}',
    f'{{"version":4,"serial":3,"lineage":"l-1","resources":[{BIG}],"serial":4}}',
    f'{{"version":4,"serial":3,"lineage":"l-1","resources":[{BIG},]}}',
    f'{{"version":4,"serial":3,"lineage":"l-1","resources":[{BIG}]',
    f'{{"version":4,"serial":1e400,"resources":[{BIG}]}}',
    f'{{"version":4,"outputs":{{"a":"\\ud800","a":1}},"resources":[{BIG}]}}',
    f'{{"version":4,"outputs":{{"a":"\\ud800"}},"resources":[{BIG}]}}',
    f'{{"encryption_version":"v0","encrypted_data":"{"A" * 5 * MB}"}}',
    f"[{BIG}]",
    "",
]


def _verdict(reader: Any, data: bytes) -> tuple[Any, ...]:
    try:
        for start in range(0, len(data), MB):
            reader.feed(data[start : start + MB])
        doc = reader.finish()
    except InvalidState as exc:
        return ("refused", exc.message)
    return (doc.serial, doc.lineage, doc.format_version, doc.terraform_version, doc.encrypted)


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_the_child_decides_as_the_reader_in_process(body: str) -> None:
    data = body.encode("utf-8", "surrogatepass")
    child = statecheck.start()
    assert child is not None
    try:
        assert _verdict(child, data) == _verdict(StateDocReader(), data)
    finally:
        child.close()


def test_bytes_that_are_not_utf8_are_refused_in_the_child_too() -> None:
    data = b'{"version":4,"x":"\xff"}' + b" " * (3 * MB)
    child = statecheck.start()
    assert child is not None
    try:
        verdict = _verdict(child, data)
    finally:
        child.close()
    assert verdict == _verdict(StateDocReader(), data)
    assert "not UTF-8" in verdict[1]


def test_the_child_gets_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No credential of the server reaches the process that reads request bodies."""
    monkeypatch.setenv("STATEKEEPER_MASTER_KEY", "c2VjcmV0")
    child = statecheck.start()
    assert child is not None
    try:
        assert Path(f"/proc/{child.pid}/environ").read_bytes() == b""
    finally:
        child.close()


def test_a_child_that_dies_is_a_storage_error_not_a_verdict() -> None:
    child = statecheck.start()
    assert child is not None
    try:
        os.kill(child.pid, signal.SIGKILL)
        for _ in range(8):
            child.feed(b" " * MB)
        with pytest.raises(StorageError, match="nothing was written: retry"):
            child.finish()
    finally:
        child.close()


def _chunks(data: bytes) -> list[bytes]:
    return [data[start : start + MB] for start in range(0, len(data), MB)]


def test_a_large_write_is_checked_and_stored_verbatim(tmp_path: Path) -> None:
    """Through the service, in request-sized chunks: a large state (checked in a child)
    is stored byte for byte; a broken one, or one whose Content-MD5 does not match, is
    refused as a small one is."""
    services = Services.build(Settings(data_dir=tmp_path / "data"))
    name, caller = StateName("big/prod.tfstate"), Caller(actor="alice")
    try:
        good = json.dumps(
            json.loads(f'{{"version":4,"serial":1,"lineage":"l","resources":[{BIG}]}}'), indent=2
        ).encode()
        assert len(good) > 4 * MB
        services.states.write(name, _chunks(good), caller)
        assert services.store.get(str(name)).data == good  # type: ignore[union-attr]

        broken = good.replace(b'"serial": 1', b'"serial": 2').replace(b"}\n  ]", b"},\n  ]")
        with pytest.raises(InvalidState, match="Expecting value"):
            services.states.write(name, _chunks(broken), caller)

        again = good.replace(b'"serial": 1', b'"serial": 2')
        wrong = "1B2M2Y8AsgTpgAmY7PhCfg=="  # the MD5 of no bytes
        with pytest.raises(ChecksumMismatch):
            services.states.write(name, _chunks(again), caller, content_md5=wrong)
        assert services.store.get(str(name)).data == good  # type: ignore[union-attr]
    finally:
        services.close()

"""Acknowledged writes survive ``kill -9`` of the server; so does a held lock.

A client thread streams states with increasing serials and records every
write the server acknowledged (200). The server is SIGKILLed mid-stream and
started again on the same data directory, three times over.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from watch import services_of

from statekeeper.security.caller import Caller
from statekeeper.terraform.names import StateName
from statekeeper.terraform.statedoc import StateDoc
from statekeeper.testing.processes import StatekeeperServer

Serve = Callable[..., StatekeeperServer]

NAME = "durable/prod.tfstate"
LINEAGE = str(uuid.uuid4())
LOCK_ID = str(uuid.uuid4())
LOCK = json.dumps(
    {
        "ID": LOCK_ID,
        "Operation": "OperationTypeApply",
        "Info": "",
        "Who": "ci@runner",
        "Version": "1.15.0",
        "Created": "2026-11-23T11:13:27.558548621Z",
        "Path": "",
    },
    separators=(",", ":"),
).encode()
WRITES_PER_ROUND = 40


def state(serial: int) -> bytes:
    # Some tens of KiB, different for every serial.
    filler = hashlib.sha256(str(serial).encode()).hexdigest() * 600
    doc = {
        "version": 4,
        "terraform_version": "1.15.0",
        "serial": serial,
        "lineage": LINEAGE,
        "outputs": {"filler": {"value": filler, "type": "string"}},
        "resources": [],
        "check_results": None,
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


@dataclass
class Stream:
    """Writes serial after serial until the connection breaks."""

    port: int
    next_serial: int
    acknowledged: dict[int, str] = field(default_factory=dict)  # serial -> sha256
    in_flight: int | None = None
    enough: threading.Event = field(default_factory=threading.Event)
    failure: str | None = None

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        acked_now = 0
        try:
            while True:
                serial = self.next_serial
                data = state(serial)
                self.in_flight = serial
                conn.request(
                    "POST",
                    f"/state/{NAME}?ID={LOCK_ID}",
                    body=data,
                    headers={
                        "Content-Type": "application/json",
                        "Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode(),
                    },
                )
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    self.failure = f"serial {serial}: {response.status} {body!r}"
                    return
                self.acknowledged[serial] = hashlib.sha256(data).hexdigest()
                self.in_flight = None
                self.next_serial += 1
                acked_now += 1
                if acked_now >= WRITES_PER_ROUND:
                    self.enough.set()
        except (OSError, http.client.HTTPException):
            return  # the server was killed
        finally:
            self.enough.set()
            conn.close()


def lock(server: StatekeeperServer, body: bytes, method: str = "LOCK") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, f"/state/{NAME}", body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check_history(server: StatekeeperServer, stream: Stream) -> None:
    """Every acknowledged version is there, byte for byte; the current one is the newest."""
    with services_of(server) as services:
        caller = Caller(actor="test")
        versions = services.history.versions(StateName(NAME), caller)
        by_serial = {v.serial: v for v in versions}
        for serial, sha256 in stream.acknowledged.items():
            version = by_serial.get(serial)
            assert version is not None, f"acknowledged serial {serial} was lost"
            stored = services.states.read_existing(StateName(NAME), caller, version.version_id)
            assert hashlib.sha256(stored.data).hexdigest() == sha256, serial
            assert version.sha256 == sha256
        # Nothing but what was sent: acknowledged writes and at most the one in flight.
        allowed = set(stream.acknowledged) | {stream.next_serial}
        assert set(by_serial) <= allowed
        assert len(versions) == len(by_serial)

        current = services.states.read_existing(StateName(NAME), caller)
        doc = StateDoc.parse(current.data)
        last = max(stream.acknowledged)
        if doc.serial == last:
            assert hashlib.sha256(current.data).hexdigest() == stream.acknowledged[last]
        else:
            # A write that completed but whose answer the kill cut off.
            assert doc.serial == stream.next_serial == stream.in_flight
            assert current.data == state(doc.serial)


def test_acknowledged_writes_and_the_lock_survive_sigkill(serve: Serve) -> None:
    server = serve()
    assert lock(server, LOCK)[0] == 200
    stream = Stream(server.port, next_serial=1)

    for _round in range(3):
        writer = threading.Thread(target=stream.run, daemon=True)
        writer.start()
        assert stream.enough.wait(120), "the writer made no progress"
        assert stream.failure is None, stream.failure
        # Land the kill at a random point of a later write, not just after an answer.
        time.sleep(random.uniform(0, 0.2))
        server.kill()
        writer.join(60)
        assert not writer.is_alive()
        assert stream.failure is None, stream.failure

        server = serve()  # the same data directory, a new process
        check_history(server, stream)
        # Carry on after whatever the server holds now.
        with services_of(server) as services:
            current = services.states.read_existing(StateName(NAME), Caller(actor="test"))
        if StateDoc.parse(current.data).serial == stream.next_serial:
            stream.acknowledged[stream.next_serial] = hashlib.sha256(current.data).hexdigest()
            stream.next_serial += 1
        stream = Stream(
            server.port, next_serial=stream.next_serial, acknowledged=stream.acknowledged
        )

        # The lock held at the kill is still held, by the same holder.
        status, body = lock(server, LOCK.replace(LOCK_ID.encode(), b"someone-else"))
        assert status == 423
        assert json.loads(body)["ID"] == LOCK_ID
        assert json.loads(body)["Who"] == "ci@runner"

    assert len(stream.acknowledged) >= 3 * WRITES_PER_ROUND

    # Terraform's force-unlock (an empty body) releases it after the restarts.
    assert lock(server, b"", method="UNLOCK")[0] == 200
    assert lock(server, LOCK.replace(LOCK_ID.encode(), b"next"))[0] == 200

"""The protocol on the wire: a real ``statekeeper serve`` process and raw HTTP/1.1.

``http.client`` sends what it is given: chunked bodies, literal dot segments,
and Terraform's force-unlock exactly as Terraform 1.11 was observed sending it.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator

import pytest
from tfwire import lock_body, md5_header, state_bytes

from statekeeper.app import Services
from statekeeper.events import Action
from statekeeper.security.audit import AuditFilter
from statekeeper.settings import load_settings
from statekeeper.testing.processes import StatekeeperServer

NAME = "wire/prod.tfstate"


class Wire:
    def __init__(self, server: StatekeeperServer) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

    def send(
        self,
        method: str,
        path: str,
        body: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
        *,
        chunked: bool = False,
    ) -> tuple[int, bytes]:
        self.conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = self.conn.getresponse()
        return response.status, response.read()


@pytest.fixture
def wire(serve: Callable[..., StatekeeperServer]) -> Iterator[Wire]:
    client = Wire(serve())
    yield client
    client.conn.close()


def test_chunked_state_upload_is_decoded(wire: Wire) -> None:
    data = state_bytes(1)
    parts = iter([data[:13], data[13:200], data[200:]])
    status, _ = wire.send(
        "POST",
        f"/state/{NAME}",
        parts,
        {"Content-Type": "application/json", "Content-MD5": md5_header(data)},
        chunked=True,
    )
    assert status == 200
    assert wire.send("GET", f"/state/{NAME}") == (200, data)


@pytest.mark.parametrize("chunked", [True, False], ids=["streamed", "one-piece"])
def test_every_request_after_a_write_on_one_connection_is_audited(
    serve: Callable[..., StatekeeperServer], chunked: bool
) -> None:
    # A body larger than uvicorn's read buffer (64 KiB) pauses the connection's reading;
    # resumed from a task started in the write's own context, it once left every later
    # request on the connection inside that context, recording no event at all.
    server = serve()
    wire = Wire(server)
    data = state_bytes(1, outputs={"blob": {"value": "x" * 200_000, "type": "string"}})
    lock = lock_body("audited")
    body: bytes | Iterator[bytes] = iter([data[:100], data[100:]]) if chunked else data
    assert wire.send("LOCK", f"/state/{NAME}", lock)[0] == 200
    assert wire.send("POST", f"/state/{NAME}?ID=audited", body, chunked=chunked)[0] == 200
    assert wire.send("GET", f"/state/{NAME}")[0] == 200
    assert wire.send("UNLOCK", f"/state/{NAME}", lock)[0] == 200
    wire.conn.close()
    server.stop()
    services = Services.build(load_settings({"data_dir": server.workdir / ".statekeeper"}, env={}))
    try:
        actions = [e.action for e in services.audit.query(AuditFilter(state=NAME))]
    finally:
        services.close()
    assert sorted(actions) == sorted([Action.LOCK, Action.WRITE, Action.READ, Action.UNLOCK])


def test_terraform_force_unlock_as_sent_on_the_wire(wire: Wire) -> None:
    holder = lock_body()
    assert wire.send("LOCK", f"/state/{NAME}", holder)[0] == 200
    # Terraform 1.11.4: chunked, zero length, with Content-Type and the MD5 of nothing.
    status, body = wire.send(
        "UNLOCK",
        f"/state/{NAME}",
        iter([]),
        {"Content-Type": "application/json", "Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="},
        chunked=True,
    )
    assert status == 200
    assert json.loads(body)["ID"] == json.loads(holder)["ID"]  # what was released
    assert wire.send("LOCK", f"/state/{NAME}", lock_body())[0] == 200


@pytest.mark.parametrize("path", ["/state/a/../b.tfstate", "/state/..", "/state/a/./b"])
def test_literal_dot_segments_are_400(wire: Wire, path: str) -> None:
    status, body = wire.send("GET", path)
    assert status == 400
    reply = json.loads(body)
    assert reply["error"] == "invalid_state_name"
    assert "'..'" in reply["message"]


def test_unknown_method_is_405_json(wire: Wire) -> None:
    status, body = wire.send("PROPFIND", f"/state/{NAME}")
    assert status == 405
    assert json.loads(body)["error"] == "method_not_allowed"


def test_lock_conflict_on_the_wire_is_423_with_holder(wire: Wire) -> None:
    holder = lock_body(who="alice@ci")
    assert wire.send("LOCK", f"/state/{NAME}", holder)[0] == 200
    status, body = wire.send("LOCK", f"/state/{NAME}", lock_body(who="bob@laptop"))
    assert status == 423
    assert json.loads(body)["Who"] == "alice@ci"

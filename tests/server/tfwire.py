"""Terraform's side of the http protocol, for tests: states, LockInfo bodies, a client.

``Api`` speaks to the app the way Terraform's client does (``Content-MD5`` on
every body, ``?ID=`` on writes under a lock); its ``services`` is the same
wiring the app uses, for looking behind the wire (history, locks).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from statekeeper.app import Services
from statekeeper.security.caller import Caller
from statekeeper.state.version import StateVersion
from statekeeper.terraform.names import StateName

NAME = "team/app/prod.tfstate"
LINEAGE = "9f3e0c1e-7a55-4c53-a7a4-2f4b1f3f0f01"


def state_bytes(serial: int, lineage: str = LINEAGE, **extra: Any) -> bytes:
    """A minimal format-4 state document, indented the way Terraform writes it."""
    doc: dict[str, Any] = {
        "version": 4,
        "terraform_version": "1.15.0",
        "serial": serial,
        "lineage": lineage,
        "outputs": {},
        "resources": [],
        "check_results": None,
        **extra,
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def lock_body(
    lock_id: str | None = None, who: str = "alice@ci", operation: str = "OperationTypeApply"
) -> bytes:
    """A LockInfo as Terraform marshals it: compact, its field order, nanosecond Created."""
    info = {
        "ID": lock_id or str(uuid.uuid4()),
        "Operation": operation,
        "Info": "",
        "Who": who,
        "Version": "1.15.0",
        "Created": "2026-11-23T11:13:27.558548621Z",
        "Path": "",
    }
    return json.dumps(info, separators=(",", ":")).encode()


def md5_header(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends on ``sock`` until it closes the connection."""
    out = b""
    while chunk := sock.recv(4096):
        out += chunk
    return out


def refusal(answer: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A whole raw HTTP/1.1 answer in the server's error shape: its status, headers
    (names lower-cased) and JSON body, which must be exactly the length it says."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (f.partition(":") for f in fields)}
    assert headers["content-type"] == "application/json", answer
    assert int(headers["content-length"]) == len(body), answer
    error = json.loads(body)
    assert set(error) == {"error", "message"}, error
    return int(status_line.split()[1]), headers, error


async def chunked(*parts: bytes) -> AsyncIterator[bytes]:
    """A request body of unknown length: it goes out with Transfer-Encoding: chunked."""
    for part in parts:
        yield part


class Api:
    """Terraform's http client, request for request, over ``httpx.ASGITransport``.

    The calls are synchronous (each runs on a private event loop) so that tests,
    including hypothesis tests, read like Terraform's own sequence of requests.
    """

    def __init__(self, app: Any, services: Services) -> None:
        self.services = services
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 4711)),
            base_url="http://localhost",
        )

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def url(self, name: str = NAME) -> str:
        return f"/state/{name}"

    def get(self, name: str = NAME) -> httpx.Response:
        return self.request("GET", self.url(name))

    def write(
        self,
        data: bytes,
        name: str = NAME,
        *,
        lock_id: str | None = None,
        method: str = "POST",
        md5: str | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json", "Content-MD5": md5 or md5_header(data)}
        params = {"ID": lock_id} if lock_id is not None else None
        return self.request(method, self.url(name), content=data, headers=headers, params=params)

    def lock(self, body: bytes, name: str = NAME) -> httpx.Response:
        return self.request(
            "LOCK",
            self.url(name),
            content=body,
            headers={"Content-Type": "application/json", "Content-MD5": md5_header(body)},
        )

    def unlock(self, body: bytes, name: str = NAME) -> httpx.Response:
        headers = {"Content-Type": "application/json", "Content-MD5": md5_header(body)}
        return self.request("UNLOCK", self.url(name), content=body, headers=headers)

    def versions(self, name: str = NAME) -> list[StateVersion]:
        return self.services.history.versions(StateName(name), Caller(actor="test"))

    def current(self, name: str = NAME) -> bytes | None:
        current = self.services.states.read(StateName(name), Caller(actor="test"))
        return None if current is None else current.data

"""A large state through a real ``statekeeper serve``: checked on the fast path where it can
be, on the exact one where it cannot, and stored and served verbatim either way."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator

import pytest
from tfwire import LINEAGE, md5_header

from statekeeper.testing.processes import StatekeeperServer

NAME = "big/prod.tfstate"
_ITEM = (
    '{{\n      "mode": "managed",\n      "type": "terraform_data",\n      "name": "r{i}",\n'
    '      "instances": [{{"attributes": {{"id": "{i}", "note": "ré\\ud83d\\ude00\\u0000{pad}"}},'
    ' "sensitive_attributes": []}}]\n    }}'
)


def _state(serial: int, items: int, odd: dict[int, str]) -> bytes:
    """A format-4 state of ``items`` resources, indented as Terraform writes it; ``odd``
    replaces some of them (by index) with items the fast path leaves to the exact one."""
    resources = [odd.get(i) or _ITEM.format(i=i, pad="p" * 400) for i in range(items)]
    head = json.dumps(
        {"version": 4, "terraform_version": "1.15.0", "serial": serial, "lineage": LINEAGE},
        indent=2,
    )[:-2]
    return (head + ',\n  "resources": [\n    ' + ",\n    ".join(resources) + "\n  ]\n}\n").encode()


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _send(server: StatekeeperServer, method: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        headers = {"Content-Type": "application/json"}
        if body is not None:
            headers["Content-MD5"] = md5_header(body)
        conn.request(
            method,
            f"/state/{NAME}",
            body=body and _chunks(body, 1 << 16),
            headers=headers,
            encode_chunked=body is not None,
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


#: Items the fast path cannot vouch for, spread through the array.
_ODD = {
    5: '{"mode": "managed", "name": "wide", "v": 1180591620717411303424}',  # 2**70
    20_000: '{"mode": "managed", "name": "huge", "v": 1e400}',
    40_000: '{"mode": "managed", "name": "deep", "v": ' + "[" * 850 + "]" * 850 + "}",
    50_000: '{"mode": "managed", "name": "kept", "v": "\\ud800", "v": "replaced"}',
}


@pytest.fixture(scope="module")
def big() -> bytes:
    return _state(2, 55_000, _ODD)


def test_a_large_state_is_stored_and_served_verbatim(
    serve: Callable[..., StatekeeperServer], big: bytes
) -> None:
    assert len(big) > 30_000_000
    server = serve()
    assert _send(server, "POST", big)[0] == 200
    assert _send(server, "GET") == (200, big)


def test_a_large_state_refused_deep_inside_leaves_the_previous_version(
    serve: Callable[..., StatekeeperServer], big: bytes
) -> None:
    server = serve()
    assert _send(server, "POST", big)[0] == 200
    lone = _state(3, 55_000, {**_ODD, 54_000: '{"mode": "managed", "v": "\\udc00"}'})
    status, body = _send(server, "POST", lone)
    assert status == 400
    assert json.loads(body)["error"] == "invalid_state"
    assert "lone UTF-16 surrogate" in json.loads(body)["message"]
    assert _send(server, "GET") == (200, big)

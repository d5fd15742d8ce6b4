"""Bad input at the wire of a real ``statekeeper serve``: headers, trailers, LockInfo size.

These go through uvicorn's own HTTP parser, which the ASGI tests skip: a
chunked body's trailer fields and repeated headers only exist on the wire.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.security.support import basic, make_tokens
from tfwire import lock_body, md5_header, state_bytes

from statekeeper.testing.processes import StatekeeperServer

NAME = "team/app.tfstate"


def _raw(server: StatekeeperServer, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as is; the status and body of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _chunked_post(path: str, body: bytes, trailer: bytes, extra_headers: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n".encode()
        + extra_headers
        + b"Transfer-Encoding: chunked\r\nTrailer: Content-MD5\r\nConnection: close\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n"
        + trailer
        + b"\r\n"
    )


def _wrong_md5() -> bytes:
    return base64.b64encode(hashlib.md5(b"something else").digest())


def test_a_chunked_trailer_is_not_taken_as_the_content_md5(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    data = state_bytes(1)
    # No Content-MD5 header: a wrong one in the trailer must not be checked...
    status, body = _raw(
        server,
        _chunked_post(f"/state/{NAME}", data, b"Content-MD5: " + _wrong_md5() + b"\r\n"),
    )
    assert status == 200, body
    assert httpx.get(server.state_url(NAME)).content == data
    # ...nor override a right header: the header is what the client declared.
    data2 = state_bytes(2)
    status, body = _raw(
        server,
        _chunked_post(
            f"/state/{NAME}",
            data2,
            b"Content-MD5: " + _wrong_md5() + b"\r\n",
            extra_headers=f"Content-MD5: {md5_header(data2)}\r\n".encode(),
        ),
    )
    assert status == 200, body
    # A wrong header is still caught, whatever the trailer says.
    status, body = _raw(
        server,
        _chunked_post(
            f"/state/{NAME}",
            state_bytes(3),
            f"Content-MD5: {md5_header(state_bytes(3))}\r\n".encode(),
            extra_headers=b"Content-MD5: " + _wrong_md5() + b"\r\n",
        ),
    )
    assert status == 400 and json.loads(body)["error"] == "checksum_mismatch"
    assert httpx.get(server.state_url(NAME)).content == data2


def test_two_content_md5_headers_are_400(serve: Callable[..., StatekeeperServer]) -> None:
    server = serve()
    data = state_bytes(1)
    response = httpx.post(
        server.state_url(NAME),
        content=data,
        headers=[("Content-MD5", md5_header(data)), ("Content-MD5", md5_header(b"x"))],
    )
    assert response.status_code == 400
    assert "2 Content-MD5 headers" in response.json()["message"]
    assert httpx.get(server.state_url(NAME)).status_code == 404


def test_two_authorization_headers_are_400(
    serve: Callable[..., StatekeeperServer], tmp_path: Path
) -> None:
    workdir = tmp_path / "secured"
    secrets = make_tokens(workdir, {"root": ["**:admin"], "reader": ["**:read"]})
    server = serve(workdir=workdir)
    root, reader = basic("root", secrets["root"]), basic("reader", secrets["reader"])
    assert httpx.post(server.state_url(NAME), content=state_bytes(1), headers=root).is_success
    for pair in (
        [root["Authorization"], reader["Authorization"]],
        [reader["Authorization"], root["Authorization"]],
        [root["Authorization"], root["Authorization"]],
    ):
        response = httpx.post(
            server.state_url(NAME),
            content=state_bytes(2),
            headers=[("Authorization", value) for value in pair],
        )
        assert response.status_code == 400, response.text
        assert "2 Authorization headers" in response.json()["message"]
    assert httpx.get(server.state_url(NAME), headers=reader).json()["serial"] == 1


def test_a_lockinfo_over_the_limit_is_413_naming_it_and_never_stored(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve(env={"STATEKEEPER_MAX_LOCK_INFO": "1K"})
    big = json.dumps({"ID": "big", "Info": "i" * 2000}).encode()
    for method in ("LOCK", "UNLOCK"):
        response = httpx.request(method, server.state_url(NAME), content=big, timeout=60)
        assert response.status_code == 413, response.text
        assert "1024 bytes" in response.json()["message"]
        assert "max_lock_info" in response.json()["message"]
    assert httpx.get(f"{server.url}/api/v1/locks").json() == []
    # What Terraform sends is far below it.
    assert httpx.request("LOCK", server.state_url(NAME), content=lock_body("ok")).is_success


def test_a_20_mib_lockinfo_is_refused_by_default(serve: Callable[..., StatekeeperServer]) -> None:
    server = serve()
    huge = json.dumps({"ID": "huge", "Info": "i" * (20 * 1024**2)}).encode()
    response = httpx.request("LOCK", server.state_url(NAME), content=huge, timeout=60)
    assert response.status_code == 413
    assert "16384 bytes" in response.json()["message"]
    assert httpx.get(f"{server.url}/api/v1/locks").json() == []


@pytest.mark.parametrize("field", ["ID", "Who", "Info", "Extra"])
def test_a_lone_surrogate_in_a_lockinfo_is_400_and_leaves_the_server_usable(
    serve: Callable[..., StatekeeperServer], field: str
) -> None:
    server = serve()
    body = json.dumps({"ID": "x", field: "a\ud800"}).encode()
    response = httpx.request("LOCK", server.state_url(NAME), content=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_lock_info"
    assert "surrogate" in response.json()["message"]
    assert httpx.get(f"{server.url}/api/v1/locks").status_code == 200
    assert httpx.request("LOCK", server.state_url(NAME), content=lock_body("y")).is_success
    assert "Traceback" not in server.log()


def test_a_chunked_trailer_is_not_taken_as_credentials(
    serve: Callable[..., StatekeeperServer], tmp_path: Path
) -> None:
    workdir = tmp_path / "secured"
    secrets = make_tokens(workdir, {"root": ["**:admin"]})
    server = serve(workdir=workdir)
    trailer = f"Authorization: {basic('root', secrets['root'])['Authorization']}\r\n".encode()
    status, body = _raw(server, _chunked_post(f"/state/{NAME}", state_bytes(1), trailer))
    assert status == 401, body
    root = basic("root", secrets["root"])
    assert httpx.get(server.state_url(NAME), headers=root).status_code == 404


def _audit(server: StatekeeperServer) -> list[tuple[str, str]]:
    events = httpx.get(f"{server.url}/api/v1/audit", timeout=30).json()["events"]
    return [(e["action"], e["outcome"]) for e in events]


def test_a_lock_or_unlock_whose_content_md5_does_not_match_is_400_and_audited(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    url, body = server.state_url(NAME), lock_body("md5")
    wrong = {"Content-MD5": _wrong_md5().decode()}
    refused = httpx.request("LOCK", url, content=body, headers=wrong)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "checksum_mismatch"
    assert httpx.get(f"{server.url}/api/v1/locks").json() == []
    assert (
        httpx.request(
            "LOCK", url, content=body, headers={"Content-MD5": md5_header(body)}
        ).status_code
        == 200
    )
    refused = httpx.request("UNLOCK", url, content=body, headers=wrong)
    assert refused.status_code == 400, refused.text
    assert [lock["id"] for lock in httpx.get(f"{server.url}/api/v1/locks").json()] == ["md5"]
    assert ("lock", "checksum_mismatch") in _audit(server)
    assert ("unlock", "checksum_mismatch") in _audit(server)


def test_a_push_whose_content_md5_does_not_match_is_400_and_stores_nothing(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    pushed = httpx.put(
        f"{server.url}/api/v1/content/{NAME}",
        content=state_bytes(1),
        headers={"Content-MD5": _wrong_md5().decode()},
    )
    assert pushed.status_code == 400, pushed.text
    assert pushed.json()["error"] == "checksum_mismatch"
    assert httpx.get(server.state_url(NAME)).status_code == 404
    assert ("push", "checksum_mismatch") in _audit(server)
    right = httpx.put(
        f"{server.url}/api/v1/content/{NAME}",
        content=state_bytes(1),
        headers={"Content-MD5": md5_header(state_bytes(1))},
    )
    assert right.status_code == 200, right.text


def test_a_body_refused_by_its_declared_length_is_audited(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve(env={"STATEKEEPER_MAX_BODY": "4K"})
    big = b"{" + b" " * 8192 + b"}"
    assert httpx.post(server.state_url(NAME), content=big).status_code == 413
    assert httpx.request("LOCK", server.state_url(NAME), content=big).status_code == 413
    assert httpx.put(f"{server.url}/api/v1/content/{NAME}", content=big).status_code == 413
    recorded = _audit(server)
    for action in ("write", "lock", "push"):
        assert (action, "payload_too_large") in recorded, recorded

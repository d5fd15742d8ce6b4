"""No body is read for a caller who may not send it (#11.6).

Each request sends only its headers, declaring a body of hundreds of MiB, and
waits for the answer: the server must answer 401/403/413 from the headers
alone. A server that reads the body first never answers, and the socket's
timeout fails the test.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.security.support import basic, make_tokens

from statekeeper.testing.processes import StatekeeperServer

DECLARED = 500 * 1024**2  # under max_body (512 MiB): only the permission can refuse it


def _headers_only(
    server: StatekeeperServer, method: str, path: str, headers: dict[str, str]
) -> str:
    """Send a request's headers (no body) and return the status line of the answer."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0].decode()


@pytest.fixture
def secured(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> tuple[StatekeeperServer, dict[str, str]]:
    secrets = make_tokens(
        tmp_path / "server",
        {"reader": ["team/*:read"], "stranger": ["elsewhere/**:admin"], "writer": ["team/*:write"]},
    )
    return serve(workdir=tmp_path / "server"), secrets


@pytest.mark.parametrize(
    ("method", "path", "who"),
    [
        ("POST", "/state/team/a.tfstate", "reader"),
        ("POST", "/state/team/a.tfstate", "stranger"),
        ("PUT", "/state/team/a.tfstate?ID=x", "stranger"),
        ("LOCK", "/state/team/a.tfstate", "reader"),
        ("UNLOCK", "/state/team/a.tfstate", "stranger"),
        ("POST", "/lock/team/a.tfstate", "reader"),
        ("PUT", "/api/v1/content/team/a.tfstate", "reader"),
        ("PUT", "/api/v1/content/team/a.tfstate?force=true", "writer"),
    ],
)
def test_a_forbidden_upload_is_refused_before_its_body(
    secured: tuple[StatekeeperServer, dict[str, str]], method: str, path: str, who: str
) -> None:
    server, secrets = secured
    headers = {**basic(who, secrets[who]), "Content-Length": str(DECLARED)}
    assert _headers_only(server, method, path, headers) == "HTTP/1.1 403 Forbidden"


def test_an_unauthenticated_upload_is_refused_before_its_body(
    secured: tuple[StatekeeperServer, dict[str, str]],
) -> None:
    server, _ = secured
    headers = {"Content-Length": str(DECLARED)}
    status = _headers_only(server, "POST", "/state/team/a.tfstate", headers)
    assert status == "HTTP/1.1 401 Unauthorized"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/rollback/team/a.tfstate"),
        ("POST", "/api/v1/reap"),
        ("POST", "/api/v1/tokens"),
    ],
)
def test_a_control_body_is_small_whoever_sends_it(
    secured: tuple[StatekeeperServer, dict[str, str]], method: str, path: str
) -> None:
    """FastAPI parses JSON bodies before the route can check a permission: they are
    bounded to a small document for everyone, the declared length refused at once."""
    server, secrets = secured
    headers = {**basic("stranger", secrets["stranger"]), "Content-Length": str(DECLARED)}
    assert _headers_only(server, method, path, headers) == "HTTP/1.1 413 Request Entity Too Large"


def test_a_chunked_control_body_is_cut_at_the_limit(
    secured: tuple[StatekeeperServer, dict[str, str]],
) -> None:
    import httpx

    server, secrets = secured

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 4096

    r = httpx.post(
        server.url + "/api/v1/reap",
        content=chunks(),
        headers=basic("stranger", secrets["stranger"]),
        timeout=10,
    )
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"
    ok = httpx.post(
        server.url + "/api/v1/reap",
        json={"older_than": "1h", "prefix": "elsewhere/", "dry_run": True},
        headers=basic("stranger", secrets["stranger"]),
        timeout=10,
    )
    assert ok.status_code == 200, ok.text

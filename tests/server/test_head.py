"""HEAD is answered wherever GET is, as GET is, with no body: HTTP asks it of a server.

Every GET operation the OpenAPI document publishes, the health and metrics
routes and Terraform's state route, against a real ``statekeeper serve``; the
UI's pages are checked the same way in ``tests/ui/test_pages.py``.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable

from tfwire import state_bytes

from statekeeper.testing.processes import StatekeeperServer

NAME = "team/app.tfstate"


def _ask(server: StatekeeperServer, method: str, target: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (but the date and the request ID) and every byte sent after the
    head, until the server closes: a HEAD's body would show here, not hidden by a client."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (f.partition(":") for f in fields)}
    for varying in ("date", "x-request-id"):
        headers.pop(varying, None)
    return int(status_line.split()[1]), headers, body


def test_every_get_route_answers_head_as_get(serve: Callable[..., StatekeeperServer]) -> None:
    server = serve()
    with urllib.request.urlopen(
        urllib.request.Request(server.state_url(NAME), data=state_bytes(1), method="POST")
    ):
        pass
    with urllib.request.urlopen(server.url + "/api/v1/openapi.json") as response:
        paths = json.load(response)["paths"]
    queries = {"/api/v1/search": "?q=app"}  # the one GET operation with a required parameter
    api = [
        path.replace("{name}", NAME) + queries.get(path, "")
        for path, ops in paths.items()
        if "get" in ops
    ]
    assert len(api) >= 13 and all(path.startswith("/api/v1/") for path in api)
    others = ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", f"/state/{NAME}"]
    missing = ["/state/missing.tfstate", "/api/v1/states/missing.tfstate"]  # a 404 alike
    for target in api + others + missing:
        get_status, get_headers, _ = _ask(server, "GET", target)
        head_status, head_headers, nothing = _ask(server, "HEAD", target)
        assert get_status != 405, target
        assert get_status == 200 or target in missing, (target, get_status)
        assert head_status == get_status, (target, head_status, get_status)
        assert nothing == b"", target
        if target != "/metrics":  # its counters change between the two requests
            assert head_headers == get_headers, target
    # A route without GET still refuses HEAD, naming it.
    status, _, _ = _ask(server, "HEAD", "/api/v1/reap")
    assert status == 405

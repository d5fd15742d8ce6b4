"""Requests the ASGI app never sees are refused in the server's one error shape.

The HTTP parser's refusals (uvicorn's ``400 Invalid HTTP request received``) and
``CONNECT`` are answered by the connection's protocol (``server/connections.py``)
before any route runs; raw bytes against a real ``statekeeper serve``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import httpx
from tfwire import refusal, state_bytes, until_closed

from statekeeper.testing.processes import StatekeeperServer

#: In every bad request below: it must never reach the server's log.
MARKER = "marker-7f3a9c"

#: Requests the parser refuses (``MARK`` stands for the marker), with its reason.
MALFORMED = [
    (
        b"POST /state/a HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Marker: MARK\r\n"
        b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "Duplicate Content-Length",
    ),
    (
        b"POST /state/a HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Marker: MARK\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding can't be present with Content-Length",
    ),
    (b"G@T /MARK HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "Invalid method encountered"),
    (b"GET /MARK HTTP/7.0\r\nHost: 127.0.0.1\r\n\r\n", "Invalid HTTP version"),
    (b"GET MARK HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "Unexpected char in url"),
    (b"GET /state/a HTTP/1.1\r\nHost: 127.0.0.1\r\nX Marker: MARK\r\n\r\n", "Invalid header token"),
    # Refused in the body, once the app has the request: the 400 is still its answer.
    (
        b"POST /state/a HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nMARK\r\n",
        "Invalid character in chunk size",
    ),
]


def _exchange(server: StatekeeperServer, request: bytes) -> bytes:
    """Send ``request`` in one write; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        return until_closed(sock)


def test_a_request_the_parser_refuses_is_a_400_in_the_error_shape(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    for request, reason in MALFORMED:
        before = server.log()
        status, headers, error = refusal(
            _exchange(server, request.replace(b"MARK", MARKER.encode()))
        )
        assert (status, error["error"]) == (400, "bad_request"), reason
        assert headers["connection"] == "close"
        assert error["message"].startswith(f"the request is not valid HTTP/1.1: {reason}")
        assert "send it again" in error["message"]
        # uvicorn's one warning is kept; the request's bytes are nowhere in the log.
        logged = server.log()[len(before) :].splitlines()
        assert logged == ["WARNING:  Invalid HTTP request received."], (reason, logged)
    assert MARKER not in server.log()
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_connect_is_a_405_naming_the_method_with_one_log_line(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    # Before: a plain-text 400 and "Invalid HTTP request received." for the first
    # form; the app's 405 and uvicorn's two WebSocket warnings for the second.
    for target in ("example.com:443", "/healthz"):
        before = server.log()
        request = f"CONNECT {target} HTTP/1.1\r\nHost: {MARKER}:443\r\n\r\n".encode()
        status, headers, error = refusal(_exchange(server, request))
        assert (status, error["error"]) == (405, "method_not_allowed"), target
        assert headers["connection"] == "close"
        assert error["message"].startswith("CONNECT is not allowed")
        assert "not a proxy" in error["message"]
        logged = server.log()[len(before) :].splitlines()
        assert logged == ["WARNING:  CONNECT refused (405): statekeeper is not a proxy"], logged
    assert MARKER not in server.log()
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_a_refusal_after_pipelined_requests_leaves_their_answers_whole(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    first = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for refused in (
        b"CONNECT /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"G@T / HTTP/1.1\r\n\r\n",
    ):
        answer = _exchange(server, first + refused)
        # The first request's answer, alone: nothing cut into it, nothing read as it.
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), answer
        assert b"connection: close" in head
        assert json.loads(body)["status"] == "ok", answer


#: Requests that ask to upgrade the connection, as a browser's WebSocket and curl's
#: ``--http2`` over http:// send them.
UPGRADES = [
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
]


def test_an_upgrade_request_is_answered_as_http_without_uvicorns_warnings(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    # Before: answered, with uvicorn's "Unsupported upgrade request." and "No supported
    # WebSocket library detected" in the log, and a request sent right after it unanswered.
    last = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    for upgrade in UPGRADES:
        before = server.log()
        answers = _exchange(server, upgrade + last).split(b"HTTP/1.1 ")[1:]
        assert len(answers) == 2, answers
        for answer in answers:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"200 OK\r\n"), answer
            assert json.loads(body)["status"] == "ok", answer
        assert server.log()[len(before) :] == "", upgrade


def test_an_upgrade_request_with_a_body_is_a_400_with_one_log_line(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    # Before: the parser ended the request at its headers: the state was written as
    # empty (a 400 invalid_state), its bytes then read as the next request.
    body = state_bytes(1)
    request = (
        b"POST /state/a HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    before = server.log()
    status, headers, error = refusal(_exchange(server, request))
    assert (status, error["error"]) == (400, "bad_request")
    assert headers["connection"] == "close"
    assert "send the request without the Upgrade header" in error["message"]
    logged = server.log()[len(before) :].splitlines()
    assert logged == ["WARNING:  Upgrade request with a body refused (400)"], logged
    assert httpx.get(server.url + "/state/a").status_code == 404

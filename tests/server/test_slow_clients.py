"""Slow clients cannot hold the server (#11.12): raw sockets against ``statekeeper serve``.

A connection that never finishes its headers is answered 408 and closed after
``header_timeout``; connections beyond ``max_connections`` are answered 503 and
closed at once, and the server serves again as soon as the slow ones are gone.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
from tfwire import refusal, until_closed

from statekeeper.testing.processes import StatekeeperServer


def _connect(server: StatekeeperServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def test_a_client_that_never_finishes_its_headers_is_cut_off(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve(env={"STATEKEEPER_HEADER_TIMEOUT": "1"})
    silent = _connect(server)  # sends nothing at all
    dripping = _connect(server)
    dripping.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    for _ in range(4):  # a header line now and then, never the blank line
        time.sleep(0.4)
        try:
            dripping.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
    for sock in (dripping, silent):
        status, headers, error = refusal(until_closed(sock))
        assert (status, error["error"], headers["connection"]) == (408, "header_timeout", "close")
        assert error["message"].startswith("the request headers took longer than 1 s")
    assert time.monotonic() - started < 8
    # A keep-alive connection gets the same deadline for its next request's headers.
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b"}"):  # the whole answer: headers, then the JSON body
            first += sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.3)
        sock.sendall(b"Host: x\r\n")  # ...and then nothing more
        answer = until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_connections_beyond_the_limit_are_refused_and_the_server_recovers(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve(env={"STATEKEEPER_MAX_CONNECTIONS": "20", "STATEKEEPER_HEADER_TIMEOUT": "3"})
    held = [_connect(server) for _ in range(20)]
    for sock in held:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # slow clients, headers unfinished
    time.sleep(0.3)
    with _connect(server) as extra:
        # Read before sending: the server closes at once, and a request it never
        # read would make that close a reset that discards the answer.
        status, headers, error = refusal(until_closed(extra))
    assert (status, error["error"], headers["retry-after"]) == (503, "too_many_connections", "1")
    assert "20 connections open" in error["message"]
    for sock in held:
        sock.close()
    deadline = time.monotonic() + 10
    while True:  # the closed sockets are noticed by the server at once
        try:
            if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not recover"
        time.sleep(0.1)


def test_request_headers_past_64_kib_are_refused_at_once_and_others_go_on(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        started = time.monotonic()
        sent = 0
        try:
            while sent < 100 * 1024 * 1024:  # refused long before 100 MiB
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:
            pass  # the server closed the connection
        answer = until_closed(sock)
    status, headers, error = refusal(answer)
    assert (status, error["error"], headers["connection"]) == (431, "headers_too_large", "close")
    assert "larger than 64 KiB" in error["message"]
    assert sent < 4 * 1024 * 1024
    assert time.monotonic() - started < 10
    # Headers of a size real clients send, on a connection of their own, still pass.
    headers = {"X-Padding": "p" * 16_000}
    assert httpx.get(server.url + "/healthz", headers=headers).status_code == 200

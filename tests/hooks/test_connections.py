"""The sender's HTTP: kept-alive connections to real receivers, a connection the receiver
dropped, the answers' framings, and the SSRF guard on every new connection."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from tests.hooks.test_webhooks import FAST, NAME, SECRET, add_hook, statekeeper
from tests.security.support import lock_body, state_json

from statekeeper.errors import BadRequest
from statekeeper.hooks.guard import parse_allow
from statekeeper.hooks.signing import verify
from statekeeper.hooks.transport import BadAnswer, Connections
from statekeeper.testing.processes import SRC, StatekeeperServer

LOOPBACK = parse_allow("127.0.0.1")


class KeepAliveReceiver(ThreadingHTTPServer):
    """An HTTP/1.1 receiver, as real ones are: answers with a Content-Length and keeps the
    connection; closes one left idle for ``idle`` seconds. Notes each delivery's
    connection (the client's port)."""

    def __init__(self, idle: float | None = None) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = idle  # the idle connection's read times out: the server closes it

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.deliveries.append(
                    {
                        "port": self.client_address[1],
                        "event": json.loads(body),
                        "verified": verify(self.headers["Statekeeper-Signature"], body, SECRET),
                    }
                )
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/hook"
        self.deliveries: list[dict[str, Any]] = []

    def connections(self) -> int:
        return len({d["port"] for d in self.deliveries})

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            assert time.monotonic() < deadline, f"{len(self.deliveries)} deliveries"
            time.sleep(0.05)


def running(idle: float | None = None) -> Iterator[KeepAliveReceiver]:
    server = KeepAliveReceiver(idle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def keepalive() -> Iterator[KeepAliveReceiver]:
    yield from running()


@pytest.fixture
def idle_closing() -> Iterator[KeepAliveReceiver]:
    yield from running(idle=0.3)


def cycles(server: StatekeeperServer, count: int, first: int = 1) -> None:
    """``count`` lock cycles (LOCK, write, UNLOCK) on one state, writing serials from
    ``first``."""
    with httpx.Client(timeout=30) as http:
        url = server.state_url(NAME)
        for serial in range(first, first + count):
            lock_id = str(uuid.uuid4())
            assert http.request("LOCK", url, content=lock_body(lock_id)).status_code == 200
            written = http.post(url, params={"ID": lock_id}, content=state_json(serial))
            assert written.status_code == 200
            assert http.request("UNLOCK", url, content=lock_body(lock_id)).status_code == 200


def attempts(workdir: Any) -> list[tuple[int, str]]:
    log = json.loads(statekeeper(workdir, "hooks", "deliveries", "--json"))
    return sorted({(r["attempt"], r["outcome"]) for r in log})


def test_deliveries_share_a_kept_alive_connection(
    tmp_path: Any, serve: Callable[..., StatekeeperServer], keepalive: KeepAliveReceiver
) -> None:
    workdir = tmp_path / "server"
    add_hook(workdir, keepalive.url)
    server = serve(workdir=workdir, env=FAST)
    cycles(server, 10)
    keepalive.wait_for(30)
    time.sleep(1)
    assert len(keepalive.deliveries) == 30
    assert all(d["verified"] for d in keepalive.deliveries)
    # 30 deliveries on one connection (two if the worker was replaced meanwhile).
    assert keepalive.connections() <= 2
    assert attempts(workdir) == [(1, "delivered")]


def test_a_connection_the_receiver_dropped_is_replaced_without_a_failed_attempt(
    tmp_path: Any, serve: Callable[..., StatekeeperServer], idle_closing: KeepAliveReceiver
) -> None:
    workdir = tmp_path / "server"
    add_hook(workdir, idle_closing.url, "--event", "state.written")
    server = serve(workdir=workdir, env=FAST)
    # Each write after the receiver closed the connection the last delivery left open:
    # its delivery waited for, then twice the receiver's idle time (on a loaded machine
    # the worker, at a low priority, could otherwise deliver two writes back to back).
    for serial in range(1, 5):
        cycles(server, 1, first=serial)
        idle_closing.wait_for(serial)
        time.sleep(0.6)
    serials = [d["event"]["data"]["serial"] for d in idle_closing.deliveries]
    assert serials == [1, 2, 3, 4]  # each once
    assert idle_closing.connections() == 4
    assert attempts(workdir) == [(1, "delivered")]
    metrics = httpx.get(server.url + "/metrics", timeout=30).text
    assert 'statekeeper_queue_failures_total{queue="webhooks"} 0.0' in metrics


def test_a_receiver_that_never_answers_holds_the_others_one_timeout_a_round(
    tmp_path: Any, serve: Callable[..., StatekeeperServer], keepalive: KeepAliveReceiver
) -> None:
    # Connections to it are made (the kernel accepts them) and never answered.
    silent = socket.create_server(("127.0.0.1", 0), backlog=64)
    silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
    workdir = tmp_path / "server"
    # "a-silent" sorts first: each event's row for it comes before the other hook's.
    for name, url in (("a-silent", silent_url), ("b-ok", keepalive.url)):
        statekeeper(
            workdir, "hooks", "add", name, "--url", url, "--secret", SECRET,
            "--event", "state.written", env=FAST,
        )  # fmt: skip
    server = serve(workdir=workdir, env=FAST)
    try:
        cycles(server, 6)
        # One 10 s timeout an event would hold the sixth delivery a minute; one a round
        # holds it one or two timeouts.
        keepalive.wait_for(6, timeout=40)
        assert sorted(d["event"]["data"]["serial"] for d in keepalive.deliveries) == [*range(1, 7)]
        listed = statekeeper(workdir, "hooks", "deliveries", "--hook", "a-silent", "--json")
        log = json.loads(listed)
        errors = [r["error"] for r in log]
        assert any(e.startswith("TimeoutError") for e in errors), errors
        address = silent_url.split("/")[2]
        skipped = f"not sent: {address} did not answer a delivery before it this round"
        assert any(e.startswith(skipped) for e in errors), errors
        assert {r["outcome"] for r in log} == {"retry"}
    finally:
        silent.close()


def test_the_guard_checks_each_connection_the_sender_opens(
    tmp_path: Any, serve: Callable[..., StatekeeperServer], keepalive: KeepAliveReceiver
) -> None:
    # Added while loopback was allowed; the server that delivers does not allow it.
    workdir = tmp_path / "server"
    add_hook(workdir, keepalive.url, "--event", "lock.acquired")
    server = serve(workdir=workdir, env={"STATEKEEPER_HOOKS_ATTEMPTS": "1"})
    lock = lock_body(str(uuid.uuid4()))
    locked = httpx.request("LOCK", server.state_url(NAME), content=lock, timeout=30)
    assert locked.status_code == 200
    deadline = time.monotonic() + 30
    while not (log := json.loads(statekeeper(workdir, "hooks", "deliveries", "--json"))):
        assert time.monotonic() < deadline, "no attempt was made"
        time.sleep(0.2)
    assert [r["outcome"] for r in log] == ["dead"]
    assert "deliveries may not go there" in log[0]["error"]
    assert keepalive.deliveries == []


def test_a_refused_destination_opens_no_connection(keepalive: KeepAliveReceiver) -> None:
    connections = Connections(5.0)
    with pytest.raises(BadRequest, match="loopback"):
        connections.post(keepalive.url, b"{}", {})
    assert connections.opened == 0 and keepalive.deliveries == []


class Scripted:
    """A raw TCP receiver answering each request with the next of ``answers``, then
    closing the connection when ``close`` says so; a byte every ``pace`` seconds when
    given."""

    def __init__(self, answers: list[bytes], close: bool = False, pace: float = 0.0) -> None:
        self.answers = answers
        self.close = close
        self.pace = pace
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/x"
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                while self.answers:
                    request = b""
                    while b"\r\n\r\n" not in request or not request.endswith(b"}"):
                        data = conn.recv(65536)
                        if not data:
                            break
                        request += data
                    if not request:
                        break
                    self._answer(conn, self.answers.pop(0))
                    if self.close:
                        break

    def _answer(self, conn: socket.socket, answer: bytes) -> None:
        if not self.pace:
            conn.sendall(answer)
            return
        for i in range(len(answer)):
            time.sleep(self.pace)
            try:
                conn.sendall(answer[i : i + 1])
            except OSError:
                return  # the sender gave up


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", True),
        (
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\n\r\n",
            True,
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
    ],
)
def test_answers_are_read_by_their_framing(answer: bytes, kept: bool) -> None:
    receiver = Scripted([answer, answer])
    connections = Connections(5.0, LOOPBACK)
    try:
        first = connections.post(receiver.url, b"{}", {})
        assert 200 <= first < 300
        if kept:  # the second on the same connection
            assert connections.post(receiver.url, b"{}", {}) == first
            assert connections.opened == 1
    finally:
        connections.close()
        receiver.listener.close()


def test_an_answer_without_a_length_runs_to_the_close() -> None:
    receiver = Scripted([b"HTTP/1.1 500 Oops\r\n\r\nthe body", b"HTTP/1.1 200 OK\r\n\r\n"], True)
    connections = Connections(5.0, LOOPBACK)
    try:
        assert connections.post(receiver.url, b"{}", {}) == 500
        assert connections.post(receiver.url, b"{}", {}) == 200
        assert connections.opened == 2
    finally:
        connections.close()
        receiver.listener.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 2OO OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    ],
)
def test_an_answer_that_is_not_http_fails_the_attempt(answer: bytes) -> None:
    receiver = Scripted([answer], close=True)
    connections = Connections(5.0, LOOPBACK)
    try:
        with pytest.raises(BadAnswer):
            connections.post(receiver.url, b"{}", {})
    finally:
        connections.close()
        receiver.listener.close()


def test_a_receiver_answering_a_byte_at_a_time_is_cut_off_at_the_timeout() -> None:
    # Each byte comes well within the timeout; the whole answer would take 7.6 s.
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    receiver = Scripted([answer], close=True, pace=0.2)
    connections = Connections(1.0, LOOPBACK)
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            connections.post(receiver.url, b"{}", {})
        assert time.monotonic() - start < 3.0
    finally:
        connections.close()
        receiver.listener.close()


def test_a_kept_connection_closed_by_the_receiver_is_replaced() -> None:
    # The receiver closes after each answer without saying so (no Connection: close).
    ok = b"HTTP/1.1 204 No Content\r\n\r\n"
    receiver = Scripted([ok, ok, ok], close=True)
    connections = Connections(5.0, LOOPBACK)
    try:
        for _ in range(3):
            assert connections.post(receiver.url, b"{}", {}) == 204
            time.sleep(0.1)  # the receiver's close reaches this side
        assert connections.opened == 3 and receiver.accepted == 3
    finally:
        connections.close()
        receiver.listener.close()


def test_hooks_test_sends_a_signed_ping(tmp_path: Any, keepalive: KeepAliveReceiver) -> None:
    workdir = tmp_path / "server"
    add_hook(workdir, keepalive.url)
    data_dir = str(workdir / ".statekeeper")
    proc = subprocess.run(
        [sys.executable, "-m", "statekeeper", "hooks", "test", "ci", "--data-dir", data_dir],
        env={**os.environ, "PYTHONPATH": str(SRC), **FAST},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "hook ci answered 204" in proc.stderr
    (ping,) = keepalive.deliveries
    assert ping["verified"] and ping["event"]["type"] == "io.statekeeper.ping"

"""Large states on a real ``statekeeper serve``: streamed in, stored verbatim, streamed out.

The body goes through hashing, validation and the store's upload as it
arrives, so the server's memory does not grow with the state; what is refused
(too large, cut short) leaves nothing behind and the previous version current.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import signal
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from statekeeper.testing.processes import StatekeeperServer

Serve = Callable[..., StatekeeperServer]
MB = 1024 * 1024
LINEAGE = str(uuid.uuid4())


def big_state(size: int, serial: int) -> bytes:
    """A valid v4 state of about ``size`` bytes, in an unusual but legal layout."""
    pad = "x" * 900
    item = json.dumps({"mode": "managed", "type": "terraform_data", "name": "r", "pad": pad})
    count = max(1, size // (len(item) + 4))
    resources = ",\n\t ".join([item] * count)
    head = f'{{ "version" : 4,"serial":{serial}, "lineage": "{LINEAGE}", "outputs":{{}},\r\n'
    return f'{head}"resources": [ {resources} ] }}\n'.encode()


def post(server: StatekeeperServer, name: str, body: bytes) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    conn.request("POST", f"/state/{name}", body=body, headers={"Content-MD5": md5})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def get(server: StatekeeperServer, name: str) -> tuple[int, bytes, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("GET", f"/state/{name}")
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data, response.getheader("Content-MD5")


def rows(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "statekeeper.db") as db:
        count: int = db.execute("SELECT count(*) FROM objects").fetchone()[0]
    return count


def leftovers(data_dir: Path) -> list[str]:
    """Upload spool files left beside the database."""
    return [p.name for p in data_dir.iterdir() if p.name.startswith(".upload-")]


def chunked(server: StatekeeperServer, name: str, pieces: list[bytes], *, end: bool) -> bytes:
    """POST ``pieces`` as a chunked body; without ``end`` the client goes away mid-body."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    sock.sendall(
        f"POST /state/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n\r\n".encode()
    )
    answer = b""
    try:
        for piece in pieces:
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        if end:
            sock.sendall(b"0\r\n\r\n")
        else:
            sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            answer += chunk
    except (ConnectionResetError, BrokenPipeError):
        # A server that answered before the end of the body closes with the rest
        # unread: the kernel may then drop its answer for a reset.
        answer = answer or b"(reset)"
    sock.close()
    return answer


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_body_over_the_limit_is_413_and_nothing_is_stored(serve: Serve, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = serve("--data-dir", str(data_dir), env={"STATEKEEPER_MAX_BODY": str(2 * MB)})
    # Declared: refused by its Content-Length before any of it is read. Only the head is
    # sent: a client still sending 3 MB when the server answers and closes may see the
    # answer dropped for a reset (on a loaded machine it did).
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(
            f"POST /state/big/declared HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {3 * MB}\r\nContent-Type: application/json\r\n\r\n".encode()
        )
        declared = b""
        while chunk := sock.recv(65536):
            declared += chunk
    assert declared.startswith(b"HTTP/1.1 413"), declared[:200]
    # Undeclared (chunked): refused when the limit is passed, mid-body.
    answer = chunked(
        server,
        "big/chunked",
        [big_state(3 * MB, 1)[i : i + MB] for i in range(0, 3 * MB, MB)],
        end=True,
    )
    assert answer.startswith(b"HTTP/1.1 413") or answer == b"(reset)", answer[:200]
    assert get(server, "big/declared")[0] == 404
    assert get(server, "big/chunked")[0] == 404
    assert rows(data_dir) == 0
    assert leftovers(data_dir) == []


def test_a_truncated_chunked_upload_leaves_the_previous_version(
    serve: Serve, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = serve("--data-dir", str(data_dir))
    first = big_state(3 * MB, 1)
    assert post(server, "cut/prod", first).status == 200
    second = big_state(5 * MB, 2)
    chunked(server, "cut/prod", [second[: 3 * MB]], end=False)
    status, data, _ = get(server, "cut/prod")
    assert status == 200 and data == first
    assert rows(data_dir) == 1
    assert leftovers(data_dir) == []
    # The server goes on taking writes.
    assert post(server, "cut/prod", second).status == 200
    assert get(server, "cut/prod")[1] == second


def test_a_large_state_round_trips_verbatim_in_bounded_memory(serve: Serve, tmp_path: Path) -> None:
    """A 200 MB push and pull: the bytes come back as sent, and the server's peak
    memory grows by a small part of the state (about 4x the state before streaming)."""
    data_dir = tmp_path / "data"
    server = serve("--data-dir", str(data_dir))
    small = big_state(MB, 1)
    assert post(server, "rss/prod", small).status == 200
    get(server, "rss/prod")
    before = vm_hwm_kib(server.proc.pid) * 1024
    state = big_state(200 * MB, 2)
    assert post(server, "rss/prod", state).status == 200
    pushed = vm_hwm_kib(server.proc.pid) * 1024
    status, data, md5 = get(server, "rss/prod")
    peak = vm_hwm_kib(server.proc.pid) * 1024
    assert status == 200
    assert data == state
    assert md5 == base64.b64encode(hashlib.md5(state).digest()).decode()
    del data
    grew = f"{(pushed - before) / MB:.0f} MiB by the push, {(peak - pushed) / MB:.0f} MiB more"
    assert peak - before < 0.5 * len(state), f"the peak grew by {grew}"
    # Compressed at rest (the default store), streamed in and out all the same.
    with sqlite3.connect(data_dir / "statekeeper.db") as db:
        stored, codec = db.execute(
            "SELECT sum(length(p.data)), o.codec FROM objects o "
            "JOIN object_pieces p ON p.id = o.id WHERE o.size = ?",
            (len(state),),
        ).fetchone()
    assert codec == "zstd" and stored < len(state) // 10


def test_requests_after_a_large_body_on_the_same_connection_are_read_whole(
    serve: Serve, tmp_path: Path
) -> None:
    """The server reads a large body in bigger pieces than a small request; the
    small requests that follow on the same keep-alive connection, and a second
    large body, are read as sent."""
    server = serve("--data-dir", str(tmp_path / "data"))
    states = [big_state(6 * MB, 1), big_state(2000, 2), big_state(3 * MB, 3)]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    for state in states:
        md5 = base64.b64encode(hashlib.md5(state).digest()).decode()
        conn.request("POST", "/state/keep/prod", body=state, headers={"Content-MD5": md5})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        response.read()
        conn.request("GET", "/state/keep/prod")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == state
    conn.close()


def test_a_server_stopped_mid_upload_exits_and_stores_nothing(serve: Serve, tmp_path: Path) -> None:
    """Stopped with a body half sent, the server exits by itself (after uvicorn's
    grace period for the request) and the half body is not a version."""
    data_dir = tmp_path / "data"
    server = serve("--data-dir", str(data_dir))
    assert post(server, "stop/prod", big_state(MB, 1)).status == 200
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    sock.sendall(
        b"POST /state/stop/prod HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {20 * MB}\r\n\r\n".encode()
        + big_state(20 * MB, 2)[: 5 * MB]
    )
    started = time.monotonic()
    server.stop(timeout=30)
    sock.close()
    # uvicorn waits 10 s for the request, cancels it, and ends by the signal it
    # was sent; a server still running 30 s later gets SIGKILL (-9).
    assert server.proc.returncode == -signal.SIGTERM, server.log()
    assert time.monotonic() - started < 25
    assert rows(data_dir) == 1
    assert leftovers(data_dir) == []

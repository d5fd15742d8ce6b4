"""A webhook receiver for the benches, in a process of its own.

    python bench/receiver.py    # prints its port, serves until SIGTERM

It answers every POST with 204 on a kept HTTP/1.1 connection, as a real receiver
does, and notes each delivery's arrival time and body; ``GET /arrivals`` returns
them as JSON (``[[unix time, body text], ...]``), read once the run is over.

It stands for a program on another machine, as a real receiver is: so it runs
apart from the bench's load generator (in the bench's own process its handler
thread took the GIL from the lock cycle's client for every delivery, and the
client's wait was counted as the server's cost), at the lowest CPU priority
(nice 19), and it does as little as a receiver can: a thread per connection
reads the head up to its blank line, takes ``Content-Length`` and the body, and
answers, with blocking calls. ``http.server`` (its headers parsed by ``email``)
spent ~0.18 ms of CPU a delivery, as much as the delivery worker's own; an
asyncio protocol ~0.10 ms (its event loop's turn around every read and write);
this ~0.05 ms (``findings.md``, "The webhook queue in a file of its own"): on
two cores shared with the server, CPU no real deployment spends on the
server's machine. Its CPU time is still measured (``Receiver.pid``) and
reported beside the worker's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


def _serve_connection(sock: socket.socket, arrivals: list[tuple[float, bytes]]) -> None:
    """One kept connection: requests read from its bytes as they come, answered in order."""
    buffer = b""
    with sock:
        while data := sock.recv(65536):
            buffer += data
            while (end := buffer.find(b"\r\n\r\n")) >= 0:
                head = buffer[:end].decode("latin-1").split("\r\n")
                fields = {k.lower(): v for k, _, v in (line.partition(":") for line in head[1:])}
                length = int(fields.get("content-length", 0))
                if len(buffer) < end + 4 + length:
                    break  # the body is still coming
                body = buffer[end + 4 : end + 4 + length]
                buffer = buffer[end + 4 + length :]
                sock.sendall(_answer(head[0].split(" ", 1)[0], body, arrivals))


def _answer(method: str, body: bytes, arrivals: list[tuple[float, bytes]]) -> bytes:
    if method == "POST":
        arrivals.append((time.time(), body))
        return _NO_CONTENT
    text = json.dumps([(t, b.decode()) for t, b in arrivals]).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(text),
        text,
    )


class Receiver:
    """The bench's handle on a receiver process."""

    def __init__(self, port: int, pid: int) -> None:
        self.pid = pid
        self.url = f"http://127.0.0.1:{port}/hook"
        self._arrivals_url = f"http://127.0.0.1:{port}/arrivals"

    def lags(self, since: float = 0.0) -> list[float]:
        """Seconds from each delivered event (its CloudEvent ``time``) to its arrival,
        for the events that happened at ``since`` (unix time) or later."""
        with urllib.request.urlopen(self._arrivals_url, timeout=30) as response:
            arrivals: list[tuple[float, str]] = json.loads(response.read())
        happened = [
            (arrived, datetime.fromisoformat(json.loads(body)["time"]).timestamp())
            for arrived, body in arrivals
        ]
        return [arrived - when for arrived, when in happened if when >= since]


@contextmanager
def receiver() -> Iterator[Receiver]:
    """A receiver process on loopback for the length of the block."""
    proc = subprocess.Popen(
        [sys.executable, __file__], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        yield Receiver(int(proc.stdout.readline()), proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    os.nice(19)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    arrivals: list[tuple[float, bytes]] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        print(server.getsockname()[1], flush=True)
        while True:
            sock, _ = server.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_serve_connection, args=(sock, arrivals), daemon=True).start()


if __name__ == "__main__":
    main()

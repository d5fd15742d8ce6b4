"""A webhook receiver for the benches, in a process of its own.

    python bench/receiver.py    # prints its port, serves until SIGTERM

It answers every POST with 204 on a kept HTTP/1.1 connection, as a real receiver
does, and notes each delivery's arrival time and body; ``GET /arrivals`` returns
them as JSON (``[[unix time, body text], ...]``), read once the run is over.

It stands for a program on another machine, as a real receiver is: so it runs
apart from the bench's load generator (in the bench's own process its handler
thread took the GIL from the lock cycle's client for every delivery, and the
client's wait was counted as the server's cost), and at the lowest CPU priority
(nice 19), so that its own work (~0.15 ms of CPU a delivery, as much as the
delivery worker's) takes only CPU the lock cycle leaves idle. Its CPU time is
measured (``Receiver.pid``) and reported beside the worker's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.arrivals: list[tuple[float, str]] = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.arrivals.append((time.time(), body.decode()))
        self._answer(204, b"")

    def do_GET(self) -> None:
        self._answer(200, json.dumps(self.server.arrivals).encode())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Receiver:
    """The bench's handle on a receiver process."""

    def __init__(self, port: int, pid: int) -> None:
        self.pid = pid
        self.url = f"http://127.0.0.1:{port}/hook"
        self._arrivals_url = f"http://127.0.0.1:{port}/arrivals"

    def lags(self) -> list[float]:
        """Seconds from each delivered event (its CloudEvent ``time``) to its arrival."""
        with urllib.request.urlopen(self._arrivals_url, timeout=30) as response:
            arrivals: list[tuple[float, str]] = json.loads(response.read())
        return [
            arrived - datetime.fromisoformat(json.loads(body)["time"]).timestamp()
            for arrived, body in arrivals
        ]


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
    server = _Receiver()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

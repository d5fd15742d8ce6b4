"""A fault-injecting HTTP proxy between statekeeper and the moto server, on loopback.

Each request is, at random: passed through; answered 503 SlowDown (S3) or
500 InternalServerError (DynamoDB) without reaching moto; passed through but
answered 500 (the change happened, the caller is told it failed); delayed;
or its connection dropped before or after moto saw it. Every fault is counted.

With ``serialize=True`` the proxy also lets one request at a time reach moto.
moto's server is threaded and its conditional writes (DynamoDB's
``attribute_not_exists``, S3's ``If-None-Match``) check and then write, so under
load two could both win, where AWS evaluates a condition atomically. The moto
launcher (``MotoServer``) now holds a lock around them; serialized, a test of
*our* lock code does not depend on that either.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["FaultProxy"]

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}

S3_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate. (injected)</Message></Error>"
)
S3_INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. (injected)</Message></Error>"
)
DDB_INTERNAL = (
    b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError",'
    b'"message":"Internal server error (injected)"}'
)


class FaultProxy:
    """Forward to ``target`` with faults at ``rate`` (0..1); ``faults`` counts them by kind."""

    def __init__(self, target: str, rate: float, seed: int = 1, serialize: bool = False) -> None:
        parts = urlsplit(target)
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 80
        self.rate = rate
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.enabled = True
        self._rng = random.Random(seed)
        self._guard = threading.Lock()
        self._one_at_a_time = threading.Lock() if serialize else None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        n = int(self.rfile.readline().split(b";")[0], 16)
                        if n == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        parts.append(self.rfile.read(n))
                        self.rfile.readline()
                    return b"".join(parts)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _handle(self) -> None:
                body = self._body()
                ddb = "X-Amz-Target" in self.headers
                fault = proxy._pick()
                if fault == "refuse":
                    if ddb:
                        self._reply(
                            500, [("Content-Type", "application/x-amz-json-1.0")], DDB_INTERNAL
                        )
                    else:
                        self._reply(503, [("Content-Type", "application/xml")], S3_SLOWDOWN)
                    return
                if fault == "drop-before":
                    self._drop()
                    return
                if fault == "delay":
                    time.sleep(proxy._uniform(0.05, 0.4))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers["Host"] = f"{proxy.target_host}:{proxy.target_port}"
                headers["Content-Length"] = str(len(body))
                with proxy._one_at_a_time or contextlib.nullcontext():
                    conn = http.client.HTTPConnection(
                        proxy.target_host, proxy.target_port, timeout=60
                    )
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    conn.close()
                if fault == "drop-after":
                    self._drop()
                    return
                if fault == "fail-after":
                    if ddb:
                        self._reply(
                            500, [("Content-Type", "application/x-amz-json-1.0")], DDB_INTERNAL
                        )
                    else:
                        self._reply(500, [("Content-Type", "application/xml")], S3_INTERNAL)
                    return
                self._reply(resp.status, resp.getheaders(), data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _uniform(self, a: float, b: float) -> float:
        with self._guard:
            return self._rng.uniform(a, b)

    def _pick(self) -> str:
        with self._guard:
            self.requests += 1
            if not self.enabled or self._rng.random() >= self.rate:
                return "pass"
            kind = self._rng.choice(
                ["refuse", "refuse", "fail-after", "delay", "delay", "drop-before", "drop-after"]
            )
            self.faults[kind] += 1
            return kind

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""An S3-compatible service without conditional deletes still releases lock files.

Older MinIO releases answer ``501 NotImplemented`` to a DeleteObject carrying
``If-Match``. A small forwarding proxy in front of the moto server plays such a
service: it passes every request through unchanged except those deletes.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from statekeeper.storage.aws.s3lock import S3LockFiles
from statekeeper.storage.registry import open_locks, open_store
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.testing.processes import MotoServer

pytestmark = pytest.mark.aws

NOT_IMPLEMENTED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code>'
    b"<Message>A header you provided implies functionality that is not implemented</Message>"
    b"<Header>If-Match</Header></Error>"
)


class _Proxy(BaseHTTPRequestHandler):
    upstream: tuple[str, int]
    refused: list[str]

    def _forward(self) -> None:
        if self.command == "DELETE" and "If-Match" in self.headers:
            self.refused.append(self.path)
            self.send_response(501)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(NOT_IMPLEMENTED)))
            self.end_headers()
            self.wfile.write(NOT_IMPLEMENTED)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in (
                "connection",
                "transfer-encoding",
                "content-length",
                "server",
                "date",
            ):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def old_service(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Point boto3 at the proxy; yields the paths of the deletes it refused."""
    target = urlsplit(moto.url)
    refused: list[str] = []
    handler = type(
        "Handler", (_Proxy,), {"upstream": (target.hostname, target.port), "refused": refused}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    yield refused
    server.shutdown()
    server.server_close()


def test_lock_file_release_falls_back_to_a_plain_delete(
    bucket: str, s3: Any, old_service: list[str]
) -> None:
    store = open_store(f"s3://{bucket}")
    locks = open_locks("s3lock://", store)
    assert isinstance(locks, S3LockFiles)
    lock = LockInfo.new("OperationTypeApply", "old-minio")
    locks.acquire("app.tfstate", lock)
    locks.release("app.tfstate", lock.id)
    assert old_service == [f"/{bucket}/app.tfstate.tflock"]  # tried, was refused
    assert not locks.conditional_delete
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    # Later releases go straight to the plain delete.
    again = LockInfo.new("OperationTypeApply", "old-minio")
    locks.acquire("app.tfstate", again)
    locks.release("app.tfstate", again.id)
    assert len(old_service) == 1

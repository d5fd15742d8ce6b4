"""``/healthz`` and ``/readyz``: on the embedded store, and on S3 + DynamoDB as moto goes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tfwire import Api

from statekeeper.testing.processes import MotoServer, StatekeeperServer

BUCKET = "ready-bucket"
TABLE = "ready-locks"


def test_ready_on_the_embedded_store(api: Api) -> None:
    health = api.request("GET", "/healthz")
    assert health.status_code == 200
    ready = api.request("GET", "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"store": "ok", "locks": "ok"}}


def _create_bucket_and_table(moto: MotoServer) -> None:
    moto.client("s3").create_bucket(Bucket=BUCKET)
    moto.client("dynamodb").create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _poll(url: str, want: int, timeout: float = 90) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(url, timeout=30)
        if answer.status_code == want or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


@pytest.mark.aws
def test_readyz_follows_the_store_and_lock_table(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    moto = MotoServer(tmp_path / "moto").start()
    try:
        _create_bucket_and_table(moto)
        server = serve(
            "--store",
            f"s3://{BUCKET}",
            "--locks",
            f"dynamodb://{TABLE}",
            env={**moto.env(), "STATEKEEPER_READY_TIMEOUT": "1"},
        )
        ready = httpx.get(server.url + "/readyz", timeout=30)
        assert ready.status_code == 200, ready.text

        moto.stop()
        down = _poll(server.url + "/readyz", 503)
        assert down.status_code == 503, down.text
        body = down.json()
        assert body["error"] == "not_ready"
        assert body["checks"]["store"] != "ok"
        assert body["checks"]["locks"] != "ok"
        assert body["message"].startswith("store: ")
        assert down.headers["retry-after"] == "1"
        # The process itself is fine: liveness does not follow the store.
        assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200
        # The failed calls are counted by driver and operation once boto3 gives up.
        # The two probes run side by side, each giving up after its own retries.
        deadline = time.monotonic() + 90
        failed = [
            f'errors_total{{driver="{driver}",error="storage_unavailable",operation="probe"}}'
            for driver in ("s3", "dynamodb")
        ]
        text = httpx.get(server.url + "/metrics", timeout=30).text
        while not all(f in text for f in failed):
            assert time.monotonic() < deadline, text
            time.sleep(1)
            text = httpx.get(server.url + "/metrics", timeout=30).text

        moto.start()  # same port, empty: no bucket and no table yet
        missing = _poll(server.url + "/readyz", 503)
        _create_bucket_and_table(moto)
        back = _poll(server.url + "/readyz", 200)
        assert back.status_code == 200, (missing.text, back.text)
        assert back.json()["checks"] == {"store": "ok", "locks": "ok"}
    finally:
        moto.stop()

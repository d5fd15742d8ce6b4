"""Faults between the server and S3/DynamoDB: nothing corrupt, nothing wrong served.

Two statekeeper servers reach moto only through :class:`FaultProxy`. Clients
run LOCK → GET → POST (serial+1) → UNLOCK cycles, retrying what Terraform
retries (5xx) and nothing else. Checked throughout: every answer is a success,
a lock conflict, or a retryable 5xx with a JSON error body; every state served
is byte-for-byte one that a client sent. Checked at the end, with boto3
straight on moto: the current object is the last acknowledged write (or a
later attempted one), and the DynamoDB digest item matches its MD5.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fault_proxy import FaultProxy
from reliability_support import lock_body, md5_header, record_figures, size, state_doc

from statekeeper.testing.processes import MotoServer, StatekeeperServer

pytestmark = pytest.mark.aws

CLIENTS = size(3, 8)
ROUNDS = size(4, 25)
RATE = 0.25
BUCKET = "faults-bucket"
TABLE = "faults-locks"
NAME = "reliability/faults.tfstate"
RETRYABLE = {500, 502, 503, 504}


@dataclass
class Seen:
    sent: dict[str, bytes] = field(default_factory=dict)  # sha256 → bytes sent
    acked: list[str] = field(default_factory=list)  # sha256 of acknowledged writes, in order
    answers: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def note(self, method: str, r: httpx.Response, allowed: set[int]) -> None:
        with self.guard:
            self.answers[r.status_code] = self.answers.get(r.status_code, 0) + 1
            if r.status_code in RETRYABLE:
                try:
                    json.loads(r.content)["message"]
                except (ValueError, KeyError, TypeError):
                    self.problems.append(f"{method} {r.status_code} without a JSON error: {r.text}")
            elif r.status_code not in allowed:
                self.problems.append(f"{method} answered {r.status_code}: {r.text[:300]}")


def _send(
    http: httpx.Client, seen: Seen, method: str, url: str, allowed: set[int], **kw: object
) -> httpx.Response:
    """Send, retrying 5xx and dropped connections like Terraform's client (bounded)."""
    for attempt in range(30):
        try:
            r = http.request(method, url, **kw)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            with seen.guard:
                seen.problems.append(f"{method}: the server dropped the connection: {exc}")
            raise
        seen.note(method, r, allowed)
        if r.status_code not in RETRYABLE:
            return r
        time.sleep(min(0.05 * 2**attempt, 1.0))
    raise AssertionError(f"{method} {url} kept failing: {r.status_code} {r.text}")


def _client(n: int, urls: list[str], lineage: str, seen: Seen) -> None:
    rng = random.Random(n)
    with httpx.Client(timeout=120) as http:
        for _ in range(ROUNDS):
            url = urls[rng.randrange(len(urls))]
            lock_id = str(uuid.uuid4())
            body = lock_body(lock_id, who=f"client{n}@faults")
            while _send(http, seen, "LOCK", url, {200, 423}, content=body).status_code != 200:
                time.sleep(rng.uniform(0.005, 0.05))
            r = _send(http, seen, "GET", url, {200, 404})
            if r.status_code == 200:
                sha = hashlib.sha256(r.content).hexdigest()
                with seen.guard:
                    if sha not in seen.sent:
                        seen.problems.append(
                            f"GET served bytes no client sent: {r.content[:200]!r}"
                        )
                doc = json.loads(r.content)
                serial, counter = doc["serial"], doc["outputs"]["counter"]["value"]
            else:
                serial = counter = 0
            data = state_doc(serial + 1, lineage, counter + 1, padding=rng.choice([0, 20, 400]))
            sha = hashlib.sha256(data).hexdigest()
            with seen.guard:
                seen.sent[sha] = data
            w = _send(
                http,
                seen,
                "POST",
                url,
                {200},
                params={"ID": lock_id},
                content=data,
                headers={"Content-MD5": md5_header(data)},
            )
            if w.status_code == 200:
                with seen.guard:
                    seen.acked.append(sha)
            # A retried UNLOCK whose first attempt went through meets no lock (409).
            _send(http, seen, "UNLOCK", url, {200, 409}, content=body)


@pytest.mark.timeout(3600)
def test_faults_never_corrupt_or_serve_wrong_bytes(
    moto: MotoServer, serve: Callable[..., StatekeeperServer], tmp_path: Path
) -> None:
    s3, ddb = moto.client("s3"), moto.client("dynamodb")
    moto.versioned_bucket(BUCKET)
    moto.lock_table(TABLE)
    proxy = FaultProxy(moto.url, RATE).start()
    try:
        env = {**moto.env(), "AWS_ENDPOINT_URL": proxy.url}
        args = ["--store", f"s3://{BUCKET}", "--locks", f"dynamodb://{TABLE}"]
        servers = [serve(*args, env=env, workdir=tmp_path / f"s{i}") for i in range(2)]
        urls = [s.state_url(NAME) for s in servers]
        lineage = str(uuid.uuid4())
        seen = Seen()
        threads = [
            threading.Thread(target=_client, args=(n, urls, lineage, seen)) for n in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        proxy.enabled = False

        current = s3.get_object(Bucket=BUCKET, Key=NAME)["Body"].read()
        digest = ddb.get_item(TableName=TABLE, Key={"LockID": {"S": f"{BUCKET}/{NAME}-md5"}})
        served = httpx.get(urls[0], timeout=60).content
    finally:
        proxy.stop()

    faults = sum(proxy.faults.values())
    cur_sha = hashlib.sha256(current).hexdigest()
    acked_at = seen.acked.index(cur_sha) if cur_sha in seen.acked else -1
    digest_value = digest.get("Item", {}).get("Digest", {}).get("S")
    violations = list(seen.problems)
    if cur_sha not in seen.sent:
        violations.append("the current S3 object is not bytes any client sent")
    if acked_at != len(seen.acked) - 1:
        violations.append("the current S3 object is not the last acknowledged write")
    if digest_value != hashlib.md5(current).hexdigest():
        violations.append(f"the digest item {digest_value} does not match the current object")
    if served != current:
        violations.append("the server serves other bytes than the current S3 object")
    record_figures(
        "faults (proxy before moto)",
        "s3+dynamodb",
        len(violations),
        servers=2,
        clients=CLIENTS,
        rounds=CLIENTS * ROUNDS,
        faults=faults,
        notes=f"{proxy.requests} AWS requests, faults {dict(proxy.faults)}; client saw "
        f"{ {k: v for k, v in sorted(seen.answers.items())} }",
    )
    assert faults > 0
    assert not violations, violations[:10]
    assert len(seen.acked) == CLIENTS * ROUNDS
    assert json.loads(current)["outputs"]["counter"]["value"] == CLIENTS * ROUNDS

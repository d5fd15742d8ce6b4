"""The moto server the tests run (statekeeper.testing.processes) evaluates S3's
conditional writes atomically, as S3 does: tests of our claims and locks on S3 test
our code, not moto's threading."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError

from statekeeper.testing.processes import MotoServer

pytestmark = pytest.mark.aws

CONTENDERS = 8
#: Large bodies: moto hashes each before storing it, the gap between its check and its
#: write where, unlocked, every contender's check passed.
BODY = 8 * 1024 * 1024


def _claim_round(clients: list[Any], bucket: str, etag: str) -> list[str]:
    """Every client PUTs on ``etag`` at once: each one's answer, "won" or the error code."""
    barrier = threading.Barrier(len(clients))
    answers: list[str] = []

    def claim(n: int) -> None:
        body = bytes([n]) * BODY
        barrier.wait()
        try:
            clients[n].put_object(Bucket=bucket, Key="claimed", Body=body, IfMatch=etag)
        except ClientError as exc:
            answers.append(exc.response["Error"]["Code"])
        else:
            answers.append("won")

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_of_several_puts_on_one_etag_at_once_one_wins(moto: MotoServer, bucket: str) -> None:
    s3: Any = moto.client("s3")
    # A client each: one at a time through a shared client's pool would prove nothing.
    clients = [moto.client("s3") for _ in range(CONTENDERS)]
    for round_ in range(5):
        etag = s3.put_object(Bucket=bucket, Key="claimed", Body=b"queued")["ETag"]
        answers = _claim_round(clients, bucket, etag)
        assert sorted(answers) == ["PreconditionFailed"] * (CONTENDERS - 1) + ["won"], round_

"""A large state on S3 (moto): stored verbatim through a multipart upload, read back whole.

S3 takes an object's metadata (serial, lineage, digests) when its upload
starts, and those are known only once the body has been read: the S3 driver
gathers the body (the default upload) and then sends it in 8 MB parts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statekeeper.app import Services
from statekeeper.errors import InvalidState
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.terraform.names import StateName

MB = 1024 * 1024
CALLER = Caller(actor="ci")


def big_state(size: int, serial: int) -> bytes:
    item = json.dumps({"mode": "managed", "type": "terraform_data", "pad": "p" * 1000})
    resources = ",\n ".join([item] * (size // (len(item) + 3)))
    head = f'{{"version": 4, "serial": {serial}, "lineage": "big", "outputs": {{}},\n'
    return f'{head} "resources": [{resources}]}}\n'.encode()


def pieces(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
def services(bucket: str, table: str, tmp_path: Path) -> Iterator[Services]:
    built = Services.build(
        load_settings(
            {"store": f"s3://{bucket}/states", "locks": f"dynamodb://{table}", "data_dir": tmp_path}
        )
    )
    yield built
    built.close()


def test_a_large_state_round_trips_verbatim_through_a_multipart_upload(
    services: Services, s3: Any, bucket: str
) -> None:
    name = StateName("big/prod")
    state = big_state(20 * MB, 1)
    outcome = services.states.write(name, pieces(state), CALLER)
    assert outcome.created and outcome.version.size == len(state)
    head = s3.head_object(Bucket=bucket, Key="states/big/prod")
    assert head["ETag"].strip('"').endswith("-3")  # three 8 MB parts
    assert head["ContentLength"] == len(state)
    stream = services.states.read_stream(name, CALLER)
    assert stream is not None
    assert b"".join(stream.chunks) == state
    assert stream.version.md5 == hashlib.md5(state).hexdigest()
    raw = s3.get_object(Bucket=bucket, Key="states/big/prod")["Body"].read()
    assert raw == state


def test_a_large_state_refused_part_way_leaves_the_previous_version(
    services: Services, s3: Any, bucket: str
) -> None:
    name = StateName("big/cut")
    first = big_state(9 * MB, 1)
    services.states.write(name, pieces(first), CALLER)
    damaged = big_state(12 * MB, 2)
    damaged = damaged[: 10 * MB] + b"\x00" + damaged[10 * MB :]
    with pytest.raises(InvalidState):
        services.states.write(name, pieces(damaged), CALLER)
    current = services.states.read(name, CALLER)
    assert current is not None and current.data == first
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []

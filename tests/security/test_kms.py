"""Data keys wrapped by AWS KMS (moto's KMS over HTTP): Encrypt/Decrypt with a context."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import httpx
import pytest
from tests.security.support import state_json

from statekeeper.errors import ConfigError
from statekeeper.storage.encrypting import EncryptingStore
from statekeeper.storage.keyring import StoreKeyRing, rotate
from statekeeper.storage.masterkeys import KmsMasterKey, LocalMasterKey
from statekeeper.storage.memory import MemoryStore
from statekeeper.testing.processes import MotoServer, StatekeeperServer

pytestmark = pytest.mark.aws


def _kms_key(moto: MotoServer) -> str:
    kms = boto3.client("kms", endpoint_url=moto.url, region_name="us-east-1")
    key_id: str = kms.create_key(Description="statekeeper test")["KeyMetadata"]["KeyId"]
    return key_id


def test_kms_wraps_data_keys_and_rotation_moves_them(moto: MotoServer) -> None:
    key_id = _kms_key(moto)
    objects = MemoryStore(name=str(uuid.uuid4()))
    ring = StoreKeyRing(MemoryStore(name=str(uuid.uuid4())))
    local = LocalMasterKey(os.urandom(32))
    store = EncryptingStore(objects, ring, [local])
    store.put("team/a.tfstate", state_json(1), {})
    assert b"db-password-42" not in objects.get("team/a.tfstate").data  # type: ignore[union-attr]

    kms = KmsMasterKey(key_id)
    report = rotate(ring, local, kms)
    assert (report.rewrapped, report.already_new, report.other) == (1, 0, 0)
    entries = list(ring.scan())
    assert [entry.kid for _, entry in entries] == [f"awskms:{key_id}"]

    # A store holding only the KMS key reads the old version and writes new ones.
    moved = EncryptingStore(objects, ring, [KmsMasterKey(key_id)])
    assert moved.get("team/a.tfstate").data == state_json(1)  # type: ignore[union-attr]
    moved.put("team/a.tfstate", state_json(2), {})
    assert EncryptingStore(objects, ring, [kms]).get("team/a.tfstate").data == state_json(2)  # type: ignore[union-attr]
    # The local key alone no longer opens anything.
    with pytest.raises(ConfigError, match="which is not configured"):
        EncryptingStore(objects, ring, [local]).get("team/a.tfstate")


def test_server_with_a_kms_master_key(
    tmp_path: Path, moto: MotoServer, serve: Callable[..., StatekeeperServer]
) -> None:
    key_id = _kms_key(moto)
    server = serve(
        workdir=tmp_path / "server",
        env={**moto.env(), "STATEKEEPER_MASTER_KEY": f"awskms://{key_id}"},
    )
    assert f"master key awskms:{key_id}" in server.log()
    url = server.state_url("team/kms.tfstate")
    assert httpx.post(url, content=state_json(1)).status_code == 200
    assert httpx.get(url).content == state_json(1)
    raw = b"".join(
        p.read_bytes() for p in (tmp_path / "server/.statekeeper").glob("statekeeper.db*")
    )
    assert b"db-password-42" not in raw

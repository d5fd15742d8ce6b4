"""Key mistakes never mix keys or plaintext into an encrypted store (#11.4).

The store records which master keys it is encrypted with (id and key check
value): a server started without the key, or with another key, refuses to
start (exit 2) instead of writing versions no one can read together. A version
can be decrypted offline, with the key and the store's key ring, no server.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from tests.security.support import key_files, master_key, state_json

from statekeeper.app import Services
from statekeeper.errors import ConfigError
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings
from statekeeper.state.operator import Operator
from statekeeper.state.version import StateVersion
from statekeeper.storage.encrypting import EncryptingStore
from statekeeper.storage.keyring import SqliteKeyRing
from statekeeper.storage.masterkeys import parse_master_keys
from statekeeper.storage.registry import open_store
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import SRC, MotoServer, StatekeeperServer, free_port
from statekeeper.times import utcnow

STATE = "team/a.tfstate"


def _cli(
    workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")}
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", *args],
        cwd=workdir,
        env={**clean, "PYTHONPATH": str(SRC), "COLUMNS": "250", **(env or {})},
        capture_output=True,
        timeout=timeout,
    )


def _refused_start(workdir: Path, *args: str, env: dict[str, str]) -> str:
    """``serve`` must exit 2 before serving; its message, with no key material in it."""
    result = _cli(workdir, "serve", "--port", str(free_port()), *args, env=env, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.decode()
    for value in env.values():
        if len(value) == 44:  # a base64 master key
            assert value not in message
    return " ".join(message.split())


def _versions(db: Path) -> list[bytes]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT data FROM objects WHERE key = ? ORDER BY id", (STATE,))
        return [bytes(r[0]) for r in rows.fetchall()]


def test_an_encrypted_store_refuses_a_missing_or_wrong_key(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    workdir = tmp_path / "server"
    right, wrong = master_key(), master_key()
    server = serve(workdir=workdir, env={"STATEKEEPER_MASTER_KEY": right})
    assert httpx.post(server.state_url(STATE), content=state_json(1)).status_code == 200
    server.stop()
    db = workdir / ".statekeeper" / "statekeeper.db"
    before = _versions(db)

    message = _refused_start(workdir, env={})
    assert "holds states encrypted with the master key local:" in message
    assert "STATEKEEPER_MASTER_KEY" in message
    message = _refused_start(workdir, env={"STATEKEEPER_MASTER_KEY": wrong})
    assert "is not one it was written with" in message
    # The CLI writes through the same store: without the key, nothing in plaintext.
    pushed = tmp_path / "push.tfstate"
    pushed.write_bytes(state_json(2))
    result = _cli(workdir, "push", STATE, str(pushed))
    assert result.returncode == 2, result.stderr
    assert _versions(db) == before

    server = serve(workdir=workdir, env={"STATEKEEPER_MASTER_KEY": right})
    assert httpx.post(server.state_url(STATE), content=state_json(2)).status_code == 200
    assert httpx.get(server.url + f"/api/v1/versions/{STATE}").status_code == 200
    assert all(v.startswith(b"SKE1") for v in _versions(db))


def test_a_store_from_before_the_key_record_is_checked_by_its_key_ring(tmp_path: Path) -> None:
    """Stores encrypted before master keys were recorded: the key ring's entries say."""
    from statekeeper.storage.encrypting import encrypting
    from statekeeper.storage.sqlite.store import SqliteStore

    right, wrong = master_key(), master_key()
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(store, SqliteStore)
    encrypting(store, right).put(STATE, state_json(1), {})
    SqliteKeyRing(store.db).db.run(lambda c: c.execute("DELETE FROM master_keys"), write=True)
    with pytest.raises(ConfigError, match="is not one it was written with"):
        encrypting(store, wrong)
    with pytest.raises(ConfigError, match="no key is configured"):
        encrypting(store, None).put(STATE, state_json(2), {})
    assert encrypting(store, right).get(STATE).data == state_json(1)  # type: ignore[union-attr]
    store.close()


def test_rotation_retires_the_old_key(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    workdir = tmp_path / "server"
    old, new = key_files(tmp_path, "old.key", "new.key")
    server = serve(workdir=workdir, env={"STATEKEEPER_MASTER_KEY_FILE": str(old)})
    assert httpx.post(server.state_url(STATE), content=state_json(1)).status_code == 200
    server.stop()
    # Before the rotation, the new key is not the store's: refused, even first of two.
    both = {"STATEKEEPER_MASTER_KEY": f"{new.read_text()},{old.read_text()}"}
    assert "is not one it was written with" in _refused_start(workdir, env=both)
    rotated = _cli(
        workdir, "encryption", "rotate", "--old-key-file", str(old), "--new-key-file", str(new)
    )
    assert rotated.returncode == 0, rotated.stderr
    assert "was retired by a rotation" in _refused_start(
        workdir, env={"STATEKEEPER_MASTER_KEY_FILE": str(old)}
    )
    server = serve(workdir=workdir, env=both)
    assert httpx.get(server.state_url(STATE)).content == state_json(1)


def test_a_server_left_on_the_retired_key_reads_back_what_it_wrote(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    """Terraform's next GET, after a rotation the server did not take part in: the
    version it sealed (and never read) is under the new key now, and the server
    still has its data key, so it is the write that is refused, not the read."""
    workdir = tmp_path / "server"
    old, new = key_files(tmp_path, "old.key", "new.key")
    server = serve(workdir=workdir, env={"STATEKEEPER_MASTER_KEY_FILE": str(old)})
    assert httpx.post(server.state_url(STATE), content=state_json(1)).status_code == 200
    rotated = _cli(
        workdir, "encryption", "rotate", "--old-key-file", str(old), "--new-key-file", str(new)
    )
    assert rotated.returncode == 0, rotated.stderr
    got = httpx.get(server.state_url(STATE))
    assert got.status_code == 200, got.text
    assert got.content == state_json(1)
    refused = httpx.post(server.state_url(STATE), content=state_json(2))
    assert refused.status_code == 500 and "retired while it ran" in refused.json()["message"]


def test_the_next_key_is_accepted_after_the_store_key_before_the_rotation(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    """``old,new`` starts before the rotation; the sealing key and known keys are still checked."""
    workdir = tmp_path / "server"
    old, new, typo = key_files(tmp_path, "old.key", "new.key", "typo.key")
    server = serve(workdir=workdir, env={"STATEKEEPER_MASTER_KEY_FILE": str(old)})
    assert httpx.post(server.state_url(STATE), content=state_json(1)).status_code == 200
    server.stop()
    db = workdir / ".statekeeper" / "statekeeper.db"

    def kids(table: str) -> set[str]:
        with sqlite3.connect(db) as conn:
            return {row[0] for row in conn.execute(f"SELECT DISTINCT kid FROM {table}")}

    store_kids = kids("master_keys")

    def keys(*files: Path) -> dict[str, str]:
        return {"STATEKEEPER_MASTER_KEY": ",".join(f.read_text().strip() for f in files)}

    # An unknown key first (a typo of the store's key) is refused, even with the store's second.
    assert "is not one it was written with" in _refused_start(workdir, env=keys(typo, old))
    server = serve(workdir=workdir, env=keys(old, new))
    assert httpx.get(server.state_url(STATE)).content == state_json(1)
    assert httpx.post(server.state_url(STATE), content=state_json(2)).status_code == 200
    server.stop()
    # Nothing was recorded for the key to come, and nothing was sealed under it.
    assert kids("master_keys") == kids("data_keys") == store_kids

    rotated = _cli(
        workdir, "encryption", "rotate", "--old-key-file", str(old), "--new-key-file", str(new)
    )
    assert rotated.returncode == 0, rotated.stderr
    # A key the store knows must still open its check value, wherever it is in the list.
    with sqlite3.connect(db) as conn:
        (check,) = conn.execute(
            "SELECT check_value FROM master_keys WHERE status = 'active'"
        ).fetchone()
        conn.execute("UPDATE master_keys SET check_value = ? WHERE status = 'retired'", (check,))
    message = _refused_start(workdir, env=keys(new, old))
    assert "does not open this store's key check value" in message
    server = serve(workdir=workdir, env=keys(new))
    assert httpx.get(server.state_url(STATE)).content == state_json(2)


def _key_records(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        masters = conn.execute("SELECT kid, status FROM master_keys").fetchall()
        return masters + conn.execute("SELECT id, kid FROM data_keys").fetchall()


def test_rotate_refuses_a_store_that_is_not_encrypted(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    old, new = key_files(tmp_path, "old.key", "new.key")
    for serial in (1, 2):
        (workdir / f"s{serial}.tfstate").write_bytes(state_json(serial))
    assert _cli(workdir, "push", STATE, "s1.tfstate").returncode == 0
    db = workdir / ".statekeeper" / "statekeeper.db"

    rotated = _cli(
        workdir, "encryption", "rotate", "--old-key-file", str(old), "--new-key-file", str(new)
    )
    message = " ".join(rotated.stderr.decode().split())
    assert rotated.returncode == 2, rotated.stdout
    assert "encryption at rest is off on this store" in message
    assert "nothing was changed" in message and "STATEKEEPER_MASTER_KEY" in message
    # Nothing recorded: the store takes plaintext writes as before.
    assert _key_records(db) == []
    assert _cli(workdir, "push", STATE, "s2.tfstate").returncode == 0
    status = _cli(workdir, "encryption", "status")
    assert status.stdout.decode().startswith("encryption at rest: off")


def test_an_encrypted_store_run_without_its_key_says_so(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    (key,) = key_files(tmp_path, "k.key")
    (workdir / "s1.tfstate").write_bytes(state_json(1))
    with_key = {"STATEKEEPER_MASTER_KEY_FILE": str(key)}
    # A store with a plaintext state, then encryption turned on by a command given the
    # key, before any state is sealed: the refused write says so rather than claim
    # encrypted states.
    assert _cli(workdir, "push", "seed.tfstate", "s1.tfstate").returncode == 0
    assert _cli(workdir, "encryption", "status", env=with_key).returncode == 1  # seed
    refused = _cli(workdir, "push", STATE, "s1.tfstate")
    assert refused.returncode == 2
    assert "no version is sealed yet" in " ".join(refused.stderr.decode().split())
    assert _cli(workdir, "push", STATE, "s1.tfstate", env=with_key).returncode == 0

    status = _cli(workdir, "encryption", "status")
    out = " ".join(status.stdout.decode().split())
    assert status.returncode == 1, out
    assert out.startswith("encryption at rest: on, master key local:")
    assert "no key is configured" in out
    pulled = _cli(workdir, "pull", STATE)
    err = " ".join(pulled.stderr.decode().split())
    assert pulled.returncode == 2 and "which is not configured (configured: none)" in err
    assert "server" not in err


def test_a_version_decrypts_offline_with_the_key(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    workdir = tmp_path / "server"
    key, wrong = key_files(tmp_path, "master.key", "wrong.key")
    server = serve(workdir=workdir, env={"STATEKEEPER_MASTER_KEY_FILE": str(key)})
    for serial in (1, 2):
        assert httpx.post(server.state_url(STATE), content=state_json(serial)).status_code == 200
    first_version = httpx.get(server.url + f"/api/v1/versions/{STATE}").json()[-1]["version_id"]
    server.stop()

    stored = tmp_path / "copied.bin"
    stored.write_bytes(_versions(workdir / ".statekeeper" / "statekeeper.db")[0])
    out = _cli(workdir, "encryption", "decrypt", str(stored), "--key-file", str(key))
    assert out.returncode == 0, out.stderr
    assert out.stdout == state_json(1)
    out = _cli(
        workdir, "encryption", "decrypt", "--state", STATE, "--version", first_version,
        "--key-file", str(key),
    )  # fmt: skip
    assert out.stdout == state_json(1), out.stderr
    out = _cli(workdir, "encryption", "decrypt", "--state", STATE, "--key-file", str(key))
    assert out.stdout == state_json(2), out.stderr
    refused = _cli(workdir, "encryption", "decrypt", str(stored), "--key-file", str(wrong))
    assert refused.returncode == 2
    assert key.read_text().encode() not in refused.stderr


@pytest.mark.aws
def test_kms_key_mistakes_on_s3(
    tmp_path: Path, moto: MotoServer, serve: Callable[..., StatekeeperServer]
) -> None:
    s3: Any = moto.client("s3")
    s3.create_bucket(Bucket="enc")
    s3.put_bucket_versioning(Bucket="enc", VersioningConfiguration={"Status": "Enabled"})
    kms = boto3.client("kms", endpoint_url=moto.url, region_name="us-east-1")
    right, wrong = (kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(2))
    args = ("--store", "s3://enc/states")
    env = {**moto.env(), "STATEKEEPER_MASTER_KEY": f"awskms://{right}"}
    server = serve(*args, env=env, workdir=tmp_path / "a")
    assert httpx.post(server.state_url(STATE), content=state_json(1)).status_code == 200
    server.stop()

    message = _refused_start(tmp_path / "a", *args, env=moto.env())
    assert f"encrypted with the master key awskms:{right}" in message
    message = _refused_start(
        tmp_path / "a", *args, env={**moto.env(), "STATEKEEPER_MASTER_KEY": f"awskms://{wrong}"}
    )
    assert "is not one it was written with" in message
    assert len(s3.list_object_versions(Bucket="enc", Prefix=f"states/{STATE}")["Versions"]) == 1

    raw = s3.get_object(Bucket="enc", Key=f"states/{STATE}")["Body"].read()
    assert raw.startswith(b"SKE1")
    (tmp_path / "copied.bin").write_bytes(raw)
    out = _cli(tmp_path, "encryption", "decrypt", "copied.bin", *args, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == state_json(1)
    out = _cli(tmp_path, "encryption", "decrypt", "--state", STATE, *args, env=env)
    assert out.stdout == state_json(1), out.stderr


def test_history_lists_a_version_sealed_under_another_key(tmp_path: Path) -> None:
    """A store mixed before keys were recorded: the listing survives, the version says why."""
    right, wrong = master_key(), master_key()
    url = f"sqlite:///{tmp_path / 'statekeeper.db'}"
    raw = open_store(url)
    assert raw.records.database is not None
    ring = SqliteKeyRing(raw.records.database)
    for serial, key in ((1, right), (2, wrong), (3, right)):  # what the old code allowed
        data = state_json(serial)
        meta = StateVersion(
            name=STATE, version_id="", size=len(data), created=utcnow(), serial=serial,
            lineage="5f0ec5b3-aaaa-bbbb-cccc-000000000001",
        ).to_metadata()  # fmt: skip
        EncryptingStore(raw, ring, parse_master_keys(key)).put(STATE, data, meta)
    ring.db.run(lambda c: c.execute("DELETE FROM master_keys"), write=True)
    raw.close()
    services = Services.build(Settings(data_dir=tmp_path, store=url, master_key=right))
    try:
        operator = Operator(services)
        rows = operator.history(Caller("operator"), StateName(STATE))
        assert [r.serial for r in rows] == [3, 2, 1]
        with pytest.raises(ConfigError, match="which is not configured"):
            services.states.read(StateName(STATE), Caller("operator"), rows[1].version_id)
    finally:
        services.close()

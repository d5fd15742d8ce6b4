"""Encryption at rest: no trace of a secret in the database files; rotation; status."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.security.support import key_files, master_key, state_json

from statekeeper.app import Services
from statekeeper.errors import ConfigError
from statekeeper.settings import load_settings
from statekeeper.storage.encrypting import EncryptingStore
from statekeeper.testing.processes import SRC, StatekeeperServer, free_port
from statekeeper.testing.terraform import Terraform

SECRET = "hunter2-the-launch-code-7f3a9c"


def _raw_files(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("statekeeper.db*")))


def _cli(
    workdir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", *args],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(SRC), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.terraform
def test_secret_leaves_no_trace_in_the_database(
    tmp_path: Path,
    serve: Callable[..., StatekeeperServer],
    terraform: Callable[..., Terraform],
) -> None:
    workdir = tmp_path / "server"
    key_file = tmp_path / "master.key"
    key_file.write_text(master_key() + "\n")
    server = serve(workdir=workdir, env={"STATEKEEPER_MASTER_KEY_FILE": str(key_file)})
    assert "encryption at rest: on" in server.log()
    assert "unreadable by Terraform's own backend" in server.log()
    tf = terraform()
    tf.write(
        server.backend_block("team/secret.tfstate")
        + f"""
resource "terraform_data" "db" {{ input = "{SECRET}" }}
output "password" {{
  value     = terraform_data.db.output
  sensitive = true
}}
"""
    )
    tf.run("init").check()
    tf.run("apply").check()
    tf.run("apply", "-replace=terraform_data.db").check()  # a second version
    assert "No changes" in tf.run("plan").check().stdout
    # Terraform reads plaintext...
    assert SECRET in tf.run("state", "pull").check().stdout
    # ...while neither the database nor its WAL holds the secret, in any version.
    data_dir = workdir / ".statekeeper"
    assert (data_dir / "statekeeper.db-wal").exists()
    raw = _raw_files(data_dir)
    assert raw
    assert SECRET.encode() not in raw
    assert b"terraform_data" not in raw
    server.stop()
    raw = _raw_files(data_dir)
    assert SECRET.encode() not in raw
    # The version metadata still has what history and the guard need.
    with sqlite3.connect(data_dir / "statekeeper.db") as db:
        rows = db.execute(
            "SELECT metadata FROM objects WHERE key = 'team/secret.tfstate'"
        ).fetchall()
    assert len(rows) >= 2
    assert all('"sha256"' in m and '"serial"' in m and '"sk-enc"' in m for (m,) in rows)

    status = _cli(
        workdir, "encryption", "status", env={"STATEKEEPER_MASTER_KEY_FILE": str(key_file)}
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert "no state is stored in plaintext" in status.stdout


def test_rotation_rewraps_keys_without_rewriting_states(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    workdir = tmp_path / "server"
    old, new = key_files(tmp_path, "old.key", "new.key")
    server = serve(workdir=workdir, env={"STATEKEEPER_MASTER_KEY_FILE": str(old)})
    for serial in (1, 2):
        r = httpx.post(server.state_url("team/a.tfstate"), content=state_json(serial))
        assert r.status_code == 200
    server.stop()
    db_path = workdir / ".statekeeper" / "statekeeper.db"

    def stored() -> list[tuple[int, bytes]]:
        with sqlite3.connect(db_path) as db:
            return db.execute("SELECT id, data FROM objects ORDER BY id").fetchall()

    before = stored()
    result = _cli(
        workdir, "encryption", "rotate", "--old-key-file", str(old), "--new-key-file", str(new)
    )
    assert result.returncode == 0, result.stderr
    assert "re-wrapped 2 data keys" in result.stdout
    assert stored() == before  # the state bytes are untouched

    # The old key is refused (it opens nothing any more); the new one opens every version.
    settings = load_settings(
        {"data_dir": workdir / ".statekeeper"}, env={"STATEKEEPER_MASTER_KEY": old.read_text()}
    )
    with pytest.raises(ConfigError, match="retired by a rotation"):
        Services.build(settings)
    server = serve(workdir=workdir, env={"STATEKEEPER_MASTER_KEY_FILE": str(new)})
    assert httpx.get(server.state_url("team/a.tfstate")).json()["serial"] == 2
    services = Services.build(
        load_settings(
            {"data_dir": workdir / ".statekeeper"}, env={"STATEKEEPER_MASTER_KEY": new.read_text()}
        )
    )
    try:
        versions = services.store.versions("team/a.tfstate")
        assert [
            services.store.get("team/a.tfstate", v.version_id) is not None for v in versions
        ] == [True, True]
    finally:
        services.close()


def test_plaintext_states_are_reported_and_encrypted_ones_need_the_key(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    workdir = tmp_path / "server"
    server = serve(workdir=workdir)
    assert "encryption at rest: off" in server.log()
    assert (
        httpx.post(server.state_url("team/plain.tfstate"), content=state_json(1)).status_code == 200
    )
    server.stop()
    key = master_key()
    server = serve(workdir=workdir, env={"STATEKEEPER_MASTER_KEY": key})
    # Turning encryption on keeps old plaintext versions readable, and reports them.
    assert httpx.get(server.state_url("team/plain.tfstate")).json()["serial"] == 1
    assert (
        httpx.post(server.state_url("team/new.tfstate"), content=state_json(1)).status_code == 200
    )
    status = _cli(workdir, "encryption", "status", "--json", env={"STATEKEEPER_MASTER_KEY": key})
    assert status.returncode == 1
    assert '"team/plain.tfstate"' in status.stdout
    assert "team/new.tfstate" not in status.stdout
    server.stop()
    # Without the key, the server refuses to start (it would store plaintext beside
    # ciphertext); the CLI reads, and refuses an encrypted state with a message.
    started = _cli(workdir, "serve", "--port", str(free_port()))
    assert started.returncode == 2
    assert "STATEKEEPER_MASTER_KEY" in started.stderr
    pulled = _cli(workdir, "pull", "team/new.tfstate")
    assert pulled.returncode == 2
    assert "STATEKEEPER_MASTER_KEY" in pulled.stderr
    assert _cli(workdir, "pull", "team/plain.tfstate").returncode == 0


def test_master_key_errors_do_not_echo_the_key() -> None:
    from statekeeper.storage.masterkeys import parse_master_keys

    with pytest.raises(ConfigError) as info:
        parse_master_keys("c2hvcnQ=")  # 5 bytes
    assert "32 random bytes" in info.value.message
    assert "c2hvcnQ" not in info.value.message
    with pytest.raises(ConfigError) as info:
        parse_master_keys("not base64 at all!")
    assert "not base64" in info.value.message
    assert "at all" not in info.value.message


def test_encrypting_store_is_what_services_use(tmp_path: Path) -> None:
    services = Services.build(load_settings({"data_dir": tmp_path}, env={}))
    try:
        assert isinstance(services.store, EncryptingStore)
        assert not services.store.enabled
    finally:
        services.close()


def test_old_and_new_master_keys_coexist_during_a_rolling_change() -> None:
    import uuid

    from statekeeper.storage.keyring import StoreKeyRing
    from statekeeper.storage.masterkeys import LocalMasterKey, parse_master_keys
    from statekeeper.storage.memory import MemoryStore

    objects = MemoryStore(name=str(uuid.uuid4()))
    ring = StoreKeyRing(MemoryStore(name=str(uuid.uuid4())))
    old_text, new_text = master_key(), master_key()
    EncryptingStore(objects, ring, parse_master_keys(old_text)).put("a/b", state_json(1), {})
    both = EncryptingStore(objects, ring, parse_master_keys(f"{new_text},{old_text}"))
    assert both.get("a/b").data == state_json(1)  # type: ignore[union-attr]
    both.put("a/c", state_json(1), {})
    new_kid = LocalMasterKey(base64.b64decode(new_text)).kid
    old_kid = LocalMasterKey(base64.b64decode(old_text)).kid
    assert sorted(entry.kid for _, entry in ring.scan()) == sorted([old_kid, new_kid])
    assert both.current is not None and both.current.kid == new_kid


def test_encryption_keeps_compare_and_swap(tmp_path: Path) -> None:
    from statekeeper.errors import WriteRace

    settings = load_settings({"data_dir": tmp_path}, env={"STATEKEEPER_MASTER_KEY": master_key()})
    services = Services.build(settings)
    try:
        store = services.store
        assert store.supports_compare_and_swap
        first = store.replace("team/a.tfstate", state_json(1), {}, None)
        seen = store.head("team/a.tfstate")
        store.replace("team/a.tfstate", state_json(2), {}, seen)
        with pytest.raises(WriteRace):
            store.replace("team/a.tfstate", state_json(3), {}, seen)  # stale: lost the race
        assert store.get("team/a.tfstate").data == state_json(2)  # type: ignore[union-attr]
        assert first.size == len(state_json(1))
    finally:
        services.close()

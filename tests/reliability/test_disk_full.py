"""A full disk under the embedded store, through a real ``statekeeper serve``.

Two ways to fill it: the server's file size limit (``ulimit -f``, SIGXFSZ
ignored: every write past it fails with EFBIG, which SQLite reports as a disk
I/O error), and a small tmpfs (ENOSPC, which SQLite reports as SQLITE_FULL).
Either way the write that does not fit is refused with 507 storage_full and
what to do; the current version, the lock, reads and the audit trail stay as
they were; and once there is room again (a restart without the limit, a
larger tmpfs) the same data directory is whole and the write goes through.
"""

from __future__ import annotations

import base64
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest
from reliability_support import lock_body, md5_header

from statekeeper.storage.sqlite.database import WAL_SIZE_LIMIT
from statekeeper.testing.processes import SRC, StatekeeperServer, limit_file_size

NAME = "team/full.tfstate"
#: Room the database may still grow by: the lock and a small state fit, a big one not.
ROOM = 512 * 1024
TMPFS = "2m"


def _state(serial: int, lineage: str, blob: int) -> bytes:
    """A state with ``blob`` random bytes in an output: they do not compress."""
    rng = random.Random(serial)
    value = base64.b64encode(rng.randbytes(blob)).decode()
    return json.dumps(
        {
            "version": 4,
            "terraform_version": "1.15.0",
            "serial": serial,
            "lineage": lineage,
            "outputs": {"blob": {"value": value, "type": "string"}},
            "resources": [],
            "check_results": None,
        }
    ).encode()


@contextmanager
def _tmpfs(where: Path) -> Iterator[None]:
    """A small tmpfs at ``where``, unmounted after. CI runs as root and must run this
    check: there a mount that fails is a failure, elsewhere a skip."""
    where.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs here: {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield
    finally:
        # A process that has just exited may hold the mount for a moment longer.
        deadline = time.monotonic() + 10
        while subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                subprocess.run(["umount", "--lazy", str(where)], check=True)
                break
            time.sleep(0.2)


def _largest_file(data_dir: Path) -> int:
    return max(p.stat().st_size for p in data_dir.iterdir())


def _audit_writes(url: str) -> list[dict[str, object]]:
    events = httpx.get(f"{url}/api/v1/audit", params={"action": "write"}, timeout=30)
    assert events.status_code == 200, events.text
    found: list[dict[str, object]] = events.json()["events"]
    return [e for e in found if e["state"] == NAME]


@pytest.mark.parametrize("fill", ["ulimit", "tmpfs"])
def test_a_full_disk_refuses_the_write_and_loses_nothing(tmp_path: Path, fill: str) -> None:
    data_dir = tmp_path / "disk" / "data"
    lineage = str(uuid.uuid4())
    first = _state(1, lineage, 1000)
    big = _state(2, lineage, 3 << 20)  # 4 MB of base64: larger than the room left
    lock_id = str(uuid.uuid4())
    with _tmpfs(tmp_path / "disk") if fill == "tmpfs" else _no_mount():
        args = ("--data-dir", str(data_dir))
        _subscribe(data_dir)
        server = StatekeeperServer(tmp_path / "server", *args, env=HOOKS).start()
        try:
            url = server.state_url(NAME)
            assert httpx.post(url, content=first, timeout=30).status_code == 200
            taken = httpx.request("LOCK", url, content=lock_body(lock_id), timeout=30)
            assert taken.status_code == 200, taken.text
        finally:
            server.stop()

        limit = _largest_file(data_dir) + ROOM if fill == "ulimit" else None
        full = StatekeeperServer(
            tmp_path / "server", *args, env=HOOKS, file_size_limit=limit
        ).start()
        try:
            url = full.state_url(NAME)
            refused = httpx.post(
                url,
                params={"ID": lock_id},
                content=big,
                headers={"Content-MD5": md5_header(big)},
                timeout=60,
            )
            # A 507 that names the cause and what to do, not the error of a ROLLBACK
            # after SQLite had already rolled the transaction back.
            assert refused.status_code == 507, refused.text
            body = refused.json()
            assert body["error"] == "storage_full"
            assert "not stored" in body["message"]
            assert "Free space on the disk holding" in body["message"]
            assert "rollback" not in body["message"]

            # The current version is the one before, byte for byte; reads go on.
            current = httpx.get(url, timeout=30)
            assert current.status_code == 200 and current.content == first
            # The lock is still its holder's: another is refused with the holder.
            other = httpx.request("LOCK", url, content=lock_body(), timeout=30)
            assert other.status_code == 423 and other.json()["ID"] == lock_id
            assert httpx.get(full.url + "/healthz", timeout=30).status_code == 200
            # Readiness stays: reads are served, and a probe cannot tell a write
            # that will not fit from one that will.
            assert httpx.get(full.url + "/readyz", timeout=30).status_code == 200
            # The refused write is in the audit trail as refused (webhooks are made
            # only from writes whose outcome is ok).
            writes = _audit_writes(full.url)
            assert [e["outcome"] for e in writes] == ["ok", "storage_full"], writes
            refused_id = writes[1]["id"]
        finally:
            full.stop()
        assert "Traceback" not in full.log()

        # Room again: the same data directory, as it was, and the write goes through.
        if fill == "tmpfs":
            subprocess.run(["mount", "-o", "remount,size=64m", str(tmp_path / "disk")], check=True)
        with closing(sqlite3.connect(data_dir / "statekeeper.db")) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        again = StatekeeperServer(tmp_path / "server", *args, env=HOOKS).start()
        try:
            url = again.state_url(NAME)
            assert httpx.get(url, timeout=30).content == first
            stored = httpx.post(url, params={"ID": lock_id}, content=big, timeout=60)
            assert stored.status_code == 200, stored.text
            assert httpx.get(url, timeout=30).content == big
            freed = httpx.request("UNLOCK", url, content=lock_body(lock_id), timeout=30)
            assert freed.status_code == 200, freed.text
            # The webhook outbox holds the two writes stored, never the refused one.
            stored_ids = [e["id"] for e in _audit_writes(again.url) if e["outcome"] == "ok"]
            assert len(stored_ids) == 2 and refused_id not in stored_ids
            assert _outbox_events(data_dir, want=2) == stored_ids
        finally:
            again.stop()


@contextmanager
def _no_mount() -> Iterator[None]:
    yield


#: Webhooks may be delivered to loopback (to a port where nothing answers: they wait).
HOOKS = {"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"}


def _subscribe(data_dir: Path) -> None:
    store = f"sqlite:///{data_dir / 'statekeeper.db'}"
    hook = ["hooks", "add", "ci", "--url", "http://127.0.0.1:9/hook", "--secret", "s3cret"]
    added = subprocess.run(
        [sys.executable, "-m", "statekeeper", "--store", store, *hook, "--event", "state.written"],
        env={**os.environ, "PYTHONPATH": str(SRC), **HOOKS},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr


def _outbox_events(data_dir: Path, want: int) -> list[object]:
    """The audit record IDs of the outbox's rows, once the delivery worker made ``want``."""
    deadline = time.monotonic() + 60
    while True:
        with closing(sqlite3.connect(data_dir / "statekeeper.db-hooks")) as db:
            rows = db.execute("SELECT event_id FROM hook_outbox ORDER BY id").fetchall()
        if len(rows) >= want or time.monotonic() > deadline:
            return [r[0] for r in rows]
        time.sleep(0.2)


def test_push_to_a_full_embedded_store_exits_with_what_to_do(tmp_path: Path) -> None:
    data_dir = tmp_path / ".statekeeper"
    lineage = str(uuid.uuid4())
    small, big = tmp_path / "small.tfstate", tmp_path / "big.tfstate"
    small.write_bytes(_state(1, lineage, 1000))
    big.write_bytes(_state(2, lineage, 3 << 20))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    for var in ("STATEKEEPER_STORE", "STATEKEEPER_LOCKS", "STATEKEEPER_SERVER"):
        env.pop(var, None)

    def push(path: Path, limit: int | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "statekeeper", "push", NAME, str(path)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=None if limit is None else lambda: limit_file_size(limit),
        )

    assert push(small).returncode == 0
    refused = push(big, _largest_file(data_dir) + ROOM)
    assert refused.returncode == 1, refused.stderr
    assert "not stored" in refused.stderr, refused.stderr
    assert "Free space on the disk holding" in refused.stderr
    assert "rollback" not in refused.stderr
    assert "Traceback" not in refused.stderr
    with closing(sqlite3.connect(data_dir / "statekeeper.db")) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    pulled = subprocess.run(
        [sys.executable, "-m", "statekeeper", "pull", NAME],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert pulled.returncode == 0 and pulled.stdout == small.read_bytes()


def test_a_large_write_gives_its_log_space_back(tmp_path: Path) -> None:
    """A state larger than the log's limit takes ``statekeeper.db-wal`` past it; once that
    write is checkpointed, the next writes cut the file back to the limit (without it the
    file kept its peak size, room the other files on the disk then lacked)."""
    data_dir = tmp_path / "data"
    wal = data_dir / "statekeeper.db-wal"
    lineage = str(uuid.uuid4())
    server = StatekeeperServer(tmp_path / "server", "--data-dir", str(data_dir)).start()
    try:
        url = server.state_url(NAME)
        # Random bytes, so that compression leaves the stored version larger than the limit.
        big = _state(1, lineage, WAL_SIZE_LIMIT + (16 << 20))
        assert httpx.post(url, content=big, timeout=120).status_code == 200
        peak = wal.stat().st_size
        assert peak > WAL_SIZE_LIMIT, f"the large write left a log of {peak} bytes"
        # Ordinary writes after it: SQLite cuts the log at the first commit after a
        # checkpoint that copied it whole (a reader still in the log may delay that).
        sizes = []
        for serial in range(2, 22):
            small = _state(serial, lineage, 1000)
            assert httpx.post(url, content=small, timeout=30).status_code == 200
            sizes.append(wal.stat().st_size)
            if sizes[-1] <= WAL_SIZE_LIMIT:
                break
        assert sizes[-1] <= WAL_SIZE_LIMIT, f"the log stayed at {sizes} bytes (peak {peak})"
        assert httpx.get(url, timeout=30).content == small
    finally:
        server.stop()
    assert "Traceback" not in server.log()

"""Data directories made by older releases, opened by this server.

Each fixture under ``tests/fixtures/upgrade/`` is the embedded store of an
older commit after real Terraform applies through its server, a lock left
held, tokens, a webhook subscription with deliveries still pending, a deleted
state and encryption at rest turned on half-way (see its README). The server
of this tree must serve every version byte for byte, keep the lock and the
tokens, read the old audit records, deliver what was pending and stamp the file
with its data format.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.hooks.test_webhooks import Receiver, statekeeper
from tests.security.support import lock_body

from statekeeper.storage.sqlite.database import FORMAT
from statekeeper.testing.processes import StatekeeperServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upgrade"
RELEASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def _data_dir(release: str, workdir: Path, hook_url: str) -> dict[str, Any]:
    """The fixture's store copied to ``workdir/.statekeeper``; its manifest."""
    data = workdir / ".statekeeper"
    data.mkdir(parents=True)
    for file in (FIXTURES / release).glob("statekeeper.db*"):
        shutil.copy(file, data / file.name)
    with closing(sqlite3.connect(data / "statekeeper.db")) as db, db:
        # The subscription's receiver listened on a port of the machine that made the
        # fixture; the pending rows name the subscription, so only its URL moves.
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'hook_subscriptions'").fetchone():
            for name, body in db.execute("SELECT name, body FROM hook_subscriptions").fetchall():
                sub = json.loads(body)
                sub["url"] = hook_url
                db.execute(
                    "UPDATE hook_subscriptions SET body = ? WHERE name = ?",
                    (json.dumps(sub), name),
                )
    manifest: dict[str, Any] = json.loads((FIXTURES / release / "manifest.json").read_text())
    return manifest


@pytest.mark.parametrize("release", RELEASES)
def test_an_older_releases_data_dir_is_served_whole(
    release: str, tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    receiver = Receiver().start()
    try:
        manifest = _data_dir(release, tmp_path / "server", receiver.url)
        env = {
            "STATEKEEPER_MASTER_KEY": manifest["master_key"],
            "STATEKEEPER_HOOKS_ALLOW": "127.0.0.1",
        }
        server = serve(env=env)
        tokens = manifest["tokens"]
        admin = {"Authorization": f"Bearer {tokens['admin']['secret']}"}
        with httpx.Client(base_url=server.url, headers=admin, timeout=30) as client:
            # Every version, plaintext, compressed and encrypted, as Terraform wrote it.
            for name, versions in manifest["versions"].items():
                for version in versions:
                    got = client.get(f"/api/v1/content/{name}", params={"version": version["id"]})
                    assert got.status_code == 200, (name, version, got.text)
                    assert hashlib.sha256(got.content).hexdigest() == version["sha256"], (
                        name,
                        version,
                    )
                listed = client.get(f"/api/v1/versions/{name}").json()
                assert [v["serial"] for v in listed] == [v["serial"] for v in versions]
            assert sorted(s["name"] for s in client.get("/api/v1/states").json()) == sorted(
                manifest["current"]
            )

            # The tokens still authenticate, with their scopes, through Terraform's route.
            reader = ("reader", tokens["reader"]["secret"])
            url = server.state_url("team/a.tfstate")
            assert httpx.get(url, auth=reader).status_code == 200
            assert httpx.get(url, auth=("reader", "not-the-secret")).status_code == 401

            # The lock held before the upgrade is held still, by its holder.
            held = manifest["lock"]
            other = httpx.request(
                "LOCK",
                server.state_url(held["state"]),
                content=lock_body("99999999-0000-0000-0000-000000000000"),
                headers=admin,
            )
            assert other.status_code == 423 and other.json()["ID"] == held["id"]

            # The old audit records read back, in whatever JSON text they were written.
            events = client.get("/api/v1/audit", params={"limit": 10000}).json()["events"]
            assert set(manifest["audit_ids"]) <= {e["id"] for e in events}

            # The inventory is built from the old versions.
            hits = client.get("/api/v1/search", params={"q": "terraform_data"}).json()["hits"]
            assert {h["state"] for h in hits} == set(manifest["current"])

            # Deliveries the old server could not make are made, each once.
            if manifest["pending_deliveries"]:
                receiver.wait_for(manifest["pending_deliveries"])
                ids = [d["event_id"] for d in receiver.deliveries]
                assert len(ids) == len(set(ids))

        # A state deleted before the upgrade comes back from the trash, byte for byte.
        for name in manifest["trash"]:
            statekeeper(tmp_path / "server", "trash", "restore", name, env=env)
            pulled = statekeeper(tmp_path / "server", "pull", name, env=env)
            assert (
                hashlib.sha256(pulled.encode()).hexdigest()
                == (manifest["versions"][name][0]["sha256"])
            )
    finally:
        receiver.stop()

    with closing(sqlite3.connect(tmp_path / "server" / ".statekeeper" / "statekeeper.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (FORMAT,)

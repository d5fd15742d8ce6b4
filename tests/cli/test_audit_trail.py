"""Lock removals and rollbacks leave exactly one audit event each, where users reported them.

Each runs as the user runs it: the CLI as a child process on the embedded
store on disk, the API on a real ``statekeeper serve`` process; the trail is
then read back with ``statekeeper audit`` and ``GET /api/v1/audit``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from statekeeper.app import Services
from statekeeper.settings import Settings
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import state_bytes
from statekeeper.times import utcnow

CliFn = Callable[..., Any]  # the ``cli_process`` fixture of conftest.py
NAME = "team/app.tfstate"


def _lock(data_dir: Path, name: str, age: timedelta, who: str = "bob@ci") -> LockInfo:
    """A lock a server took ``age`` ago (by its own clock), in the database the CLI will open."""
    info = LockInfo.new("OperationTypeApply", who)
    services = Services.build(Settings(data_dir=data_dir))
    try:
        taken = replace(info.with_facts("bob", None), acquired=utcnow() - age)
        services.lock_table.acquire(name, taken)
    finally:
        services.close()
    return info


def _audit(cli_process: CliFn, *args: str) -> list[dict[str, Any]]:
    result = cli_process("audit", "--json", *args)
    assert result.exit_code == 0, result.stderr
    events: list[dict[str, Any]] = json.loads(result.stdout)
    return events


def test_unlock_by_id_leaves_one_force_unlock_event(cli_process: CliFn, tmp_path: Path) -> None:
    held = _lock(tmp_path / "cwd" / ".statekeeper", NAME, timedelta(minutes=5))
    before = _audit(cli_process, "--state", NAME)

    result = cli_process("unlock", NAME, "--id", held.id)

    assert result.exit_code == 0, result.stderr
    new = _audit(cli_process, "--state", NAME)[len(before) :]
    assert [(e["action"], e["outcome"], e["lock_id"], e["who"]) for e in new] == [
        ("force-unlock", "ok", held.id, "bob@ci")
    ]
    assert _audit(cli_process, "--action", "force-unlock") == new


def test_locks_reap_leaves_one_reap_event_per_removed_lock(
    cli_process: CliFn, tmp_path: Path
) -> None:
    data = tmp_path / "cwd" / ".statekeeper"
    old_a = _lock(data, "team/a.tfstate", timedelta(hours=3))
    old_b = _lock(data, "team/b.tfstate", timedelta(hours=5), who="carol@ci")
    _lock(data, "team/young.tfstate", timedelta(minutes=1))
    before = _audit(cli_process)

    result = cli_process("locks", "reap", "--older-than", "1h30m")

    assert result.exit_code == 0, result.stderr
    new = _audit(cli_process)[len(before) :]
    assert sorted((e["action"], e["state"], e["outcome"], e["lock_id"], e["who"]) for e in new) == [
        ("reap", "team/a.tfstate", "ok", old_a.id, "bob@ci"),
        ("reap", "team/b.tfstate", "ok", old_b.id, "carol@ci"),
    ]
    assert all("older than" in e["detail"] for e in new)
    assert len(_audit(cli_process, "--action", "reap")) == 2
    left = json.loads(cli_process("locks", "--json").stdout)
    assert [row["name"] for row in left] == ["team/young.tfstate"]


def test_rollback_leaves_one_rollback_event(cli_process: CliFn, tmp_path: Path) -> None:
    for serial in (1, 2):
        path = tmp_path / f"v{serial}.tfstate"
        path.write_bytes(state_bytes(serial))
        assert cli_process("push", NAME, str(path)).exit_code == 0
    before = _audit(cli_process)

    result = cli_process("rollback", NAME, "--to", "serial:1", "--yes", "--json")

    assert result.exit_code == 0, result.stderr
    written = json.loads(result.stdout)["version"]
    new = _audit(cli_process)[len(before) :]
    assert [(e["action"], e["state"], e["outcome"]) for e in new] == [("rollback", NAME, "ok")]
    (event,) = new
    assert (event["version"], event["serial"]) == (written["version_id"], 3)
    assert event["operation"] == "rollback" and "serial 1" in event["detail"]
    assert _audit(cli_process, "--action", "rollback") == new


def test_api_lock_removal_by_id_leaves_one_force_unlock_event(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve("--log-level", "info", env={"STATEKEEPER_LOG_FORMAT": "json"})
    info = LockInfo.new("OperationTypeApply", "ci@runner")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.request("LOCK", f"/state/{NAME}", content=info.body).status_code == 200

        removed = http.delete(f"/api/v1/locks/{NAME}", params={"id": info.id})

        assert removed.status_code == 200, removed.text
        events = http.get("/api/v1/audit", params={"state": NAME}).json()["events"]
        forced = http.get("/api/v1/audit", params={"action": "force-unlock"}).json()["events"]
    assert [(e["action"], e["outcome"], e["lock_id"]) for e in events] == [
        ("lock", "ok", info.id),
        ("force-unlock", "ok", info.id),
    ]
    assert forced == events[1:]
    assert forced[0]["actor"] == "anonymous" and forced[0]["who"] == "ci@runner"
    # The server log subscribes too: the same event, on the access line of its request
    # (written in full once the server has stopped: the loop's lines go out in batches).
    server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    logged = [line["event"] for line in lines if line.get("method") == "DELETE"]
    assert logged == [forced[0]]

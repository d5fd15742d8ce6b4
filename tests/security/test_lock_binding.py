"""A lock is bound to the identity that took it (#11.8).

A 423 shows the holder's lock ID to every competing writer, so the ID is no
proof of holding the lock. Another identity's UNLOCK with it is a force-unlock
(admin only, recorded as one), its write under it needs admin, its LOCK with it
is a conflict. Against a real ``statekeeper serve`` with API tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.security.support import basic, lock_body, make_tokens, state_json

from statekeeper.testing.processes import StatekeeperServer

NAME = "team/app.tfstate"


@pytest.fixture
def setup(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> tuple[StatekeeperServer, dict[str, dict[str, str]]]:
    secrets = make_tokens(
        tmp_path / "server",
        {
            "ci1": ["team/*:write"],
            "ci2": ["team/*:write"],
            "admin": ["team/*:admin"],
            "root": ["**:admin"],
        },
    )
    server = serve(workdir=tmp_path / "server")
    return server, {name: basic(name, secret) for name, secret in secrets.items()}


def _audit(server: StatekeeperServer, root: dict[str, str]) -> list[dict[str, object]]:
    r = httpx.get(server.url + "/api/v1/audit", params={"state": NAME}, headers=root)
    assert r.status_code == 200, r.text
    events: list[dict[str, object]] = r.json()["events"]
    return events


def test_another_identity_cannot_use_the_holders_lock_id(
    setup: tuple[StatekeeperServer, dict[str, dict[str, str]]],
) -> None:
    server, auth = setup
    url = server.state_url(NAME)
    body = lock_body("ci1-lock", who="ci1@runner")
    assert httpx.request("LOCK", url, content=body, headers=auth["ci1"]).status_code == 200
    seen = httpx.request("LOCK", url, content=lock_body("ci2-lock"), headers=auth["ci2"])
    assert seen.status_code == 423
    holder_id = seen.json()["ID"]
    assert holder_id == "ci1-lock"  # what a competing writer learns

    # ci2 replays the holder's LockInfo: UNLOCK, a write under its ID, a LOCK "retry".
    unlock = httpx.request("UNLOCK", url, content=body, headers=auth["ci2"])
    assert unlock.status_code == 403, unlock.text
    assert "force-unlock" in unlock.json()["message"]
    write = httpx.post(url, params={"ID": holder_id}, content=state_json(1), headers=auth["ci2"])
    assert write.status_code == 403, write.text
    assert "ci1" in write.json()["message"] and "admin" in write.json()["message"]
    assert httpx.request("LOCK", url, content=body, headers=auth["ci2"]).status_code == 423
    assert httpx.get(url, headers=auth["ci1"]).status_code == 404  # nothing was written

    # The holder itself goes on as before; its LOCK retry is still idempotent.
    assert httpx.request("LOCK", url, content=body, headers=auth["ci1"]).status_code == 200
    ok = httpx.post(url, params={"ID": holder_id}, content=state_json(1), headers=auth["ci1"])
    assert ok.status_code == 200, ok.text

    # An admin may override, and the trail says so.
    over = httpx.post(url, params={"ID": holder_id}, content=state_json(2), headers=auth["admin"])
    assert over.status_code == 200, over.text
    released = httpx.request("UNLOCK", url, content=body, headers=auth["admin"])
    assert released.status_code == 200, released.text

    events = _audit(server, auth["root"])
    refused = [e for e in events if e["actor"] == "ci2" and e["outcome"] == "forbidden"]
    assert [e["action"] for e in refused] == ["force-unlock", "write"]
    (override,) = [e for e in events if e["actor"] == "admin" and e["action"] == "write"]
    assert "ci1" in str(override["detail"]) and override["outcome"] == "ok"
    (forced,) = [e for e in events if e["actor"] == "admin" and e["action"] == "force-unlock"]
    assert forced["outcome"] == "ok" and forced["lock_id"] == holder_id


def test_the_holder_unlocks_its_own_lock_as_a_plain_unlock(
    setup: tuple[StatekeeperServer, dict[str, dict[str, str]]],
) -> None:
    server, auth = setup
    url = server.state_url(NAME)
    body = lock_body("own-lock")
    assert httpx.request("LOCK", url, content=body, headers=auth["ci1"]).status_code == 200
    assert httpx.request("UNLOCK", url, content=body, headers=auth["ci1"]).status_code == 200
    actions = [(e["actor"], e["action"]) for e in _audit(server, auth["root"])]
    assert actions[-2:] == [("ci1", "lock"), ("ci1", "unlock")]


def test_without_access_control_the_loopback_rules_are_unchanged(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    url = server.state_url(NAME)
    body = lock_body("anon-lock")
    assert httpx.request("LOCK", url, content=body).status_code == 200
    assert httpx.request("LOCK", url, content=body).status_code == 200  # a retry
    assert httpx.post(url, params={"ID": "anon-lock"}, content=state_json(1)).status_code == 200
    r = httpx.request("UNLOCK", url, content=body)
    assert r.status_code == 200
    assert json.loads(r.content)["ID"] == "anon-lock"

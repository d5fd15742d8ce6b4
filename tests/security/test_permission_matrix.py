"""Every role x every operation x a matching and a non-matching state, over HTTP.

A real ``statekeeper serve`` with tokens in its database. Each cell checks
the status, that a denial changed nothing, and that the audit trail holds the
event with the right actor, state and outcome.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.security.support import ROLES, basic, lock_body, make_tokens, state_json

from statekeeper.testing.processes import StatekeeperServer

MATCHING = "team/app.tfstate"
OTHER = "other/app.tfstate"
OPERATIONS = ["read", "write", "lock", "unlock", "force-unlock", "delete"]
NEEDS = {
    "read": "outputs",
    "write": "write",
    "lock": "write",
    "unlock": "write",
    "force-unlock": "admin",
    "delete": "admin",
}
RANK = {"outputs": 1, "read": 2, "write": 3, "admin": 4}
ROLE_PERMISSION = {"outputs": "outputs", "reader": "read", "writer": "write", "admin": "admin"}


class Env:
    def __init__(self, server: StatekeeperServer, secrets: dict[str, str]) -> None:
        self.server = server
        self.secrets = secrets
        self.client = httpx.Client(timeout=30)

    def req(self, role: str, method: str, name: str, body: bytes | None = None) -> httpx.Response:
        headers = basic(role, self.secrets[role]) if role in self.secrets else {}
        if role == "wrong-secret":
            headers = basic("writer", self.secrets["writer"][:-2] + "xx")
        return self.client.request(
            method, self.server.state_url(name), content=body, headers=headers
        )

    def root(self, method: str, name: str, body: bytes | None = None) -> httpx.Response:
        return self.req("root", method, name, body)

    def reset(self, name: str) -> int:
        """Unlocked, with a state present; its serial."""
        self.root("UNLOCK", name, b"")
        r = self.root("GET", name)
        if r.status_code == 404:
            assert self.root("POST", name, state_json(1)).status_code == 200
            return 1
        serial: int = r.json()["serial"]
        return serial

    def last_event(self, actor: str, action: str) -> dict[str, object]:
        r = self.client.get(
            self.server.url + "/api/v1/audit",
            params={"actor": actor, "action": action, "limit": 1},
            headers=basic("root", self.secrets["root"]),
        )
        assert r.status_code == 200, r.text
        events: list[dict[str, object]] = r.json()["events"]
        assert events, f"no audit event for {actor} {action}"
        return events[-1]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir: Path = tmp_path_factory.mktemp("matrix")
    secrets = make_tokens(workdir, ROLES)
    server = StatekeeperServer(workdir, env={"STATEKEEPER_RATE_LIMIT": "0"}).start()
    try:
        yield Env(server, secrets)
    finally:
        server.stop()


def _allowed(role: str, op: str, name: str) -> bool:
    if name != MATCHING or role not in ROLE_PERMISSION:
        return False
    return RANK[ROLE_PERMISSION[role]] >= RANK[NEEDS[op]]


@pytest.mark.parametrize("name", [MATCHING, OTHER])
@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("role", ["outputs", "reader", "writer", "admin", "stranger"])
def test_cell(env: Env, role: str, op: str, name: str) -> None:
    serial = env.reset(name)
    held = str(uuid.uuid4())
    if op in ("unlock", "force-unlock"):
        # A lock is bound to who took it: the role's own lock where it may lock, so
        # that "unlock" is the plain unlock (another's lock is a force-unlock).
        locker = role if op == "unlock" and _allowed(role, "lock", name) else "root"
        taken = env.req(locker, "LOCK", name, lock_body(held, who="alice@laptop"))
        assert taken.status_code == 200
    mine = str(uuid.uuid4())
    method, body = {
        "read": ("GET", None),
        "write": ("POST", state_json(serial + 1)),
        # An apply's: under the default lock policy an apply takes a plan's lock over,
        # so the probe LOCK below would not show whether this one is held.
        "lock": ("LOCK", lock_body(mine, who="bob@ci", operation="OperationTypeApply")),
        "unlock": ("UNLOCK", lock_body(held, who="alice@laptop")),
        "force-unlock": ("UNLOCK", b""),
        "delete": ("DELETE", None),
    }[op]
    r = env.req(role, method, name, body)
    allowed = _allowed(role, op, name)
    after = env.root("GET", name)
    lock_now = env.root("LOCK", name, lock_body(str(uuid.uuid4())))
    if lock_now.status_code == 200:
        env.root("UNLOCK", name, b"")
    if allowed:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 403, r.text
        message = r.json()["message"]
        assert name in message
        # The least permission that would do: 'outputs' for a read (the current outputs).
        assert f"'{NEEDS[op]}' permission" in message
        # Nothing about other states leaks through the denial.
        assert (OTHER if name == MATCHING else MATCHING) not in r.text
    # The effect happened exactly when allowed.
    if op == "read" and allowed:
        doc = r.json()
        assert doc["outputs"]["endpoint"]["value"] == "https://example.test"
        if role == "outputs":
            assert doc["resources"] == []
            assert "db-password-42" not in r.text
        else:
            assert doc["resources"][0]["name"] == "db"
    if op == "write":
        assert after.json()["serial"] == (serial + 1 if allowed else serial)
    if op == "delete":
        assert after.status_code == (404 if allowed else 200)
    if op == "lock":
        assert lock_now.status_code == (423 if allowed else 200)
        if allowed:
            assert lock_now.json()["ID"] == mine
    if op in ("unlock", "force-unlock"):
        assert lock_now.status_code == (200 if allowed else 423)
    # The audit trail has the event, with who, what, where and how it ended.
    event = env.last_event(role, op)
    assert event["state"] == name
    assert event["outcome"] == ("ok" if allowed else "forbidden")
    assert event["remote_addr"] == "127.0.0.1"
    if op == "lock" and allowed:
        # A refused LOCK is refused from its headers, before its LockInfo is read.
        assert (event["lock_id"], event["who"], event["operation"]) == (
            mine,
            "bob@ci",
            "OperationTypeApply",
        )
    if op in ("unlock", "force-unlock") and allowed:
        assert (event["lock_id"], event["who"]) == (held, "alice@laptop")
    if op == "write" and allowed:
        assert event["serial"] == serial + 1
        assert event["version"]


@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("role", ["anonymous", "wrong-secret"])
def test_unauthenticated(env: Env, role: str, op: str) -> None:
    serial = env.reset(MATCHING)
    method, body = {
        "read": ("GET", None),
        "write": ("POST", state_json(serial + 1)),
        "lock": ("LOCK", lock_body(str(uuid.uuid4()))),
        "unlock": ("UNLOCK", lock_body(str(uuid.uuid4()))),
        "force-unlock": ("UNLOCK", b""),
        "delete": ("DELETE", None),
    }[op]
    r = env.req(role, method, MATCHING, body)
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"].startswith('Basic realm="statekeeper"')
    assert "credentials" in r.json()["message"] or "does not match" in r.json()["message"]
    assert env.root("GET", MATCHING).json()["serial"] == serial
    event = env.last_event("writer" if role == "wrong-secret" else "anonymous", "authenticate")
    assert event["outcome"] == "unauthenticated"
    # Repeated refusals of one caller are coalesced (one event a minute, with a count):
    # the event recorded names the first refused request.
    assert str(event["detail"]).split(" ")[0] in {"GET", "POST", "LOCK", "UNLOCK", "DELETE"}
    # The secret never reaches the audit trail.
    assert env.secrets["writer"][:-2] not in json.dumps(event)


def test_server_level_actions_need_admin_on_everything(env: Env) -> None:
    url = env.server.url + "/api/v1/audit"
    r = env.client.get(url, headers=basic("admin", env.secrets["admin"]))
    assert r.status_code == 403
    assert "'admin' permission" in r.json()["message"]
    r = env.client.get(url + "/../tokens", headers=basic("admin", env.secrets["admin"]))
    assert r.status_code in (403, 404)
    r = env.client.get(
        env.server.url + "/api/v1/tokens", headers=basic("root", env.secrets["root"])
    )
    assert r.status_code == 200
    listed = {t["name"] for t in r.json()["tokens"]}
    assert listed == set(ROLES)
    assert "skt_" not in r.text


def test_bearer_token_and_api_token_lifecycle(env: Env) -> None:
    root = basic("root", env.secrets["root"])
    api = env.server.url + "/api/v1/tokens"
    made = env.client.post(api, json={"name": "temp", "scopes": ["team/*:read"]}, headers=root)
    assert made.status_code == 200, made.text
    secret = made.json()["secret"]
    r = env.client.get(
        env.server.state_url(MATCHING), headers={"Authorization": f"Bearer {secret}"}
    )
    assert r.status_code == 200
    assert env.client.delete(api + "/temp", headers=root).status_code == 200
    r = env.client.get(
        env.server.state_url(MATCHING), headers={"Authorization": f"Bearer {secret}"}
    )
    assert r.status_code == 401
    assert env.last_event("root", "token-create")["detail"] == "token temp: team/*:read"
    assert env.last_event("root", "token-revoke")["outcome"] == "ok"

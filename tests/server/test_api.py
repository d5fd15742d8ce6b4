"""The JSON API on a real server process, and the CLI going through it (--server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.testing.processes import SRC, StatekeeperServer
from statekeeper.testing.statefiles import instance, state_bytes

NAME = "team/app:blue=1+x.tfstate"


def _cli(
    server: StatekeeperServer, cwd: Path, *args: str, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")}
    env |= {"PYTHONPATH": str(SRC), "STATEKEEPER_SERVER": server.url}
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture
def server(serve: Callable[..., StatekeeperServer]) -> StatekeeperServer:
    return serve()


@pytest.fixture
def api(server: StatekeeperServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url + "/api/v1", timeout=30) as client:
        yield client


def _seed(api: httpx.Client) -> None:
    v1 = state_bytes(
        1,
        resources=[instance("t", "a", {"x": 1})],
        outputs={"pw": {"value": "s", "type": "string", "sensitive": True}},
    )
    v2 = state_bytes(
        2,
        resources=[instance("t", "a", {"x": 2})],
        outputs={"pw": {"value": "s2", "type": "string", "sensitive": True}},
    )
    for data in (v1, v2):
        r = api.put(f"/content/{NAME}", content=data)
        assert r.status_code == 200, r.text


def test_openapi_document_describes_the_operations(api: httpx.Client) -> None:
    doc = api.get("/openapi.json").json()
    paths = set(doc["paths"])
    for p in (
        "/api/v1/states",
        "/api/v1/states/{name}",
        "/api/v1/versions/{name}",
        "/api/v1/content/{name}",
        "/api/v1/diff/{name}",
        "/api/v1/rollback/{name}",
        "/api/v1/locks",
        "/api/v1/locks/{name}",
        "/api/v1/reap",
    ):
        assert p in paths, p
    assert not any(p.startswith("/state/") for p in paths), "Terraform's protocol stays out"
    assert "DiffView" in doc["components"]["schemas"]
    # A refused parameter or body is a 400 in the error shape, never FastAPI's 422.
    # The only 422 is our own: stored bytes that are no state, in the error shape.
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            unreadable = operation["responses"]["422"]["content"]["application/json"]
            assert unreadable["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (
                method,
                path,
            )
    answers = doc["paths"]["/api/v1/versions/{name}"]["get"]["responses"]
    assert answers["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_every_operation_documents_the_refusals_any_request_can_get(api: httpx.Client) -> None:
    # A bad parameter, missing credentials, a missing grant and the rate limit can
    # answer any route; the webhook routes once documented only their 200.
    doc = api.get("/openapi.json").json()
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status in ("400", "401", "403", "429"):
                answer = operation["responses"].get(status)
                assert answer is not None, (method, path, status)
                assert answer["content"]["application/json"]["schema"] == error, (method, path)


def test_stored_bytes_that_are_no_state_get_the_documented_422(api: httpx.Client) -> None:
    # The write check reads only the top level (docs/protocol.md), so a resource that
    # is no object is stored; showing it is 422, which the document did not list.
    name = "team/odd.tfstate"
    pushed = api.put(f"/content/{name}", content=b'{"version": 4, "serial": 1, "resources": [1]}')
    assert pushed.status_code == 200, pushed.text
    shown = api.get(f"/states/{name}")
    assert shown.status_code == 422, shown.text
    assert shown.json()["error"] == "state_unreadable"
    answers = api.get("/openapi.json").json()["paths"]["/api/v1/states/{name}"]["get"]
    assert answers["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


def test_a_diff_of_stored_bytes_that_are_no_state_is_422_naming_the_version(
    api: httpx.Client,
) -> None:
    # Was 400 invalid_state, as if the request were at fault, naming no version.
    name = "team/odd.tfstate"
    good = api.put(f"/content/{name}", content=state_bytes(1))
    assert good.status_code == 200, good.text
    bad = api.put(f"/content/{name}", content=b'{"version": 4, "serial": 2, "resources": [1]}')
    assert bad.status_code == 200, bad.text
    odd = bad.json()["version"]["version_id"]
    for params in ({}, {"from": odd, "to": good.json()["version"]["version_id"]}):
        diffed = api.get(f"/diff/{name}", params=params)
        assert diffed.status_code == 422, diffed.text
        assert diffed.json()["error"] == "state_unreadable"
        assert f"version {odd} of {name} is not a state" in diffed.json()["message"]


def test_states_versions_content_diff_rollback(api: httpx.Client) -> None:
    _seed(api)
    (row,) = api.get("/states").json()
    assert (row["name"], row["serial"], row["locked"]) == (NAME, 2, False)
    versions = api.get(f"/versions/{NAME}").json()
    assert [v["serial"] for v in versions] == [2, 1]
    content = api.get(f"/content/{NAME}", params={"version": versions[1]["version_id"]})
    assert content.content == state_bytes(
        1,
        resources=[instance("t", "a", {"x": 1})],
        outputs={"pw": {"value": "s", "type": "string", "sensitive": True}},
    )
    d = api.get(f"/diff/{NAME}").json()
    assert d["from"] == versions[1]["version_id"] and d["changed"][0]["changes"][0]["path"] == "x"
    assert d["outputs"][0] == {
        "name": "pw",
        "action": "changed",
        "before": None,
        "after": None,
        "sensitive": True,
    }
    shown = api.get(f"/states/{NAME}").json()
    assert shown["outputs"]["pw"]["value"] is None and shown["resources"] == ["t.a"]
    rolled = api.post(f"/rollback/{NAME}", json={"to": "serial:1"}).json()
    assert rolled["version"]["serial"] == 3 and rolled["version"]["actor"] == "anonymous"


def test_errors_have_one_shape(api: httpx.Client) -> None:
    r = api.get("/versions/missing.tfstate")
    assert r.status_code == 404 and r.json()["error"] == "state_not_found"
    r = api.get("/states/a//b")
    assert r.status_code == 400 and r.json()["error"] == "invalid_state_name"
    r = api.get("/audit", params={"state": "a//b"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request"
    assert "the state glob 'a//b' has an empty segment" in r.json()["message"]
    r = api.get("/audit", params={"action": "nope"})
    assert r.status_code == 400 and "no event has the action 'nope'" in r.json()["message"]
    _seed(api)
    r = api.get(f"/diff/{NAME}", params={"from": "nope"})
    assert r.status_code == 404 and "statekeeper history" in r.json()["message"]
    r = api.post("/reap", json={"older_than": "soon"})
    assert r.status_code == 400 and "not a duration" in r.json()["message"]
    r = api.put("/content/x.tfstate", content=b"junk")
    assert r.status_code == 400 and r.json()["error"] == "invalid_state"
    r = api.delete("/locks/x.tfstate", params={"force": "true"})
    assert r.status_code == 409 and r.json()["error"] == "lock_not_found"


def test_audit_since_is_an_rfc3339_time_and_nothing_else(api: httpx.Client) -> None:
    _seed(api)
    assert len(api.get("/audit", params={"since": "2000-01-01T00:00:00Z"}).json()["events"]) >= 2
    assert api.get("/audit", params={"since": "2999-01-01T00:00:00+01:00"}).json()["events"] == []
    # A number was read as Unix seconds: 20260101 (a date meant) is 1970-08-23.
    for since in ("20260101", "0.5", "2026-01-01", "2026-01-01T00:00:00"):
        r = api.get("/audit", params={"since": since})
        assert r.status_code == 400, (since, r.text)
        assert r.json()["error"] == "bad_request"
        assert f"{since!r} is not an RFC 3339 time with a zone" in r.json()["message"]


def test_locks_unlock_reap_over_the_wire(server: StatekeeperServer, api: httpx.Client) -> None:
    _seed(api)
    held = LockInfo.new("OperationTypeApply", "bob@ci")
    assert httpx.request("LOCK", server.state_url(NAME), content=held.body).status_code == 200
    (lock,) = api.get("/locks").json()
    assert (lock["name"], lock["id"], lock["who"]) == (NAME, held.id, "bob@ci")
    r = api.post(f"/rollback/{NAME}", json={"to": "serial:1"})
    assert r.status_code == 423 and r.json()["Who"] == "bob@ci"
    r = api.delete(f"/locks/{NAME}")
    assert r.status_code == 423 and held.id in r.json()["message"]
    dry = api.post("/reap", json={"older_than": "0s", "dry_run": True}).json()
    assert [d["removed"] for d in dry] == [False]
    (done,) = api.post("/reap", json={"older_than": "0s"}).json()
    assert done["removed"] and done["id"] == held.id
    assert api.get("/locks").json() == []


def test_the_cli_through_the_server_matches_the_cli_on_the_store(
    server: StatekeeperServer, api: httpx.Client, tmp_path: Path
) -> None:
    _seed(api)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    remote = _cli(server, cwd, "states", "--json")
    assert remote.returncode == 0, remote.stderr
    db = server.workdir / ".statekeeper" / "statekeeper.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")}
    local = subprocess.run(
        [sys.executable, "-m", "statekeeper", "--store", f"sqlite:///{db}", "states", "--json"],
        cwd=cwd,
        env=env | {"PYTHONPATH": str(SRC)},
        capture_output=True,
        timeout=120,
    )
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    for args in (["history", NAME, "--json"], ["diff", NAME, "--json"], ["show", NAME, "--json"]):
        r = _cli(server, cwd, *args)
        assert r.returncode == 0, r.stderr
    assert _cli(server, cwd, "pull", NAME).stdout == api.get(f"/content/{NAME}").content
    pushed = _cli(server, cwd, "push", NAME, "-", "--json", input=state_bytes(3))
    assert json.loads(pushed.stdout)["version"]["serial"] == 3
    older = _cli(server, cwd, "push", NAME, "-", input=state_bytes(1))
    assert older.returncode == 1 and b"serial 1 over newer state with serial 3" in older.stderr
    held = LockInfo.new("OperationTypeApply", "bob@ci")
    httpx.request("LOCK", server.state_url(NAME), content=held.body)
    blocked = _cli(server, cwd, "rollback", NAME, "--to", "serial:1", "--yes")
    assert blocked.returncode == 3 and b"bob@ci" in blocked.stderr
    locks = json.loads(_cli(server, cwd, "locks", "--json").stdout)
    assert locks[0]["id"] == held.id
    assert _cli(server, cwd, "unlock", NAME, "--force").returncode == 0
    assert not (cwd / ".statekeeper").exists(), "--server never opens a local store"

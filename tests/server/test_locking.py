"""LOCK and UNLOCK: the lock rows of docs/protocol.md#rules, over HTTP."""

from __future__ import annotations

import json
import uuid

import pytest
from tfwire import NAME, Api, chunked, lock_body

from statekeeper.terraform.names import StateName
from statekeeper.times import parse_rfc3339


def test_lock_when_free_is_200_and_stored_with_server_facts(api: Api) -> None:
    body = lock_body("11111111-2222-3333-4444-555555555555")
    response = api.lock(body)
    assert response.status_code == 200
    held = api.services.locks.read(StateName(NAME))
    assert held is not None
    assert held.id == "11111111-2222-3333-4444-555555555555"
    assert held.body == body  # the LockInfo as sent, verbatim
    assert held.who == "alice@ci"
    assert held.operation == "OperationTypeApply"
    # Server-side facts: who asked, from where, when.
    assert held.actor == "anonymous"
    assert held.remote_addr == "203.0.113.7"
    assert held.acquired is not None


def test_lock_when_held_is_423_with_the_holders_lockinfo(api: Api) -> None:
    holder = lock_body(who="alice@ci")
    assert api.lock(holder).status_code == 200

    response = api.lock(lock_body(who="bob@laptop", operation="OperationTypePlan"))

    assert response.status_code == 423
    got = response.json()
    sent = json.loads(holder)
    # Terraform reads the holder's fields from the body and prints them.
    for field in ("ID", "Operation", "Info", "Who", "Version", "Created", "Path"):
        assert got[field] == sent[field], field
    assert got["ID"]
    parse_rfc3339(got["Created"])  # RFC 3339 with a zone, as Go requires
    assert got["Who"] == "alice@ci"
    assert got["error"] == "locked"
    assert "alice@ci" in got["message"]


def test_lock_repeated_with_the_holders_own_id_is_200(api: Api) -> None:
    body = lock_body()
    assert api.lock(body).status_code == 200
    # Terraform retries LOCK after a 5xx or a dropped connection.
    again = api.lock(body)
    assert again.status_code == 200
    assert json.loads(again.content)["ID"] == json.loads(body)["ID"]


def test_unlock_with_the_holders_id_is_200_and_frees_the_lock(api: Api) -> None:
    body = lock_body()
    assert api.lock(body).status_code == 200
    # Terraform unlocks with the exact bytes of its LOCK.
    assert api.unlock(body).status_code == 200
    assert api.services.locks.read(StateName(NAME)) is None
    assert api.lock(lock_body(who="bob@laptop")).status_code == 200


def test_unlock_with_another_id_is_409_with_the_holders_lockinfo(api: Api) -> None:
    holder = lock_body(who="alice@ci")
    assert api.lock(holder).status_code == 200

    response = api.unlock(lock_body(who="bob@laptop"))

    assert response.status_code == 409
    got = response.json()
    assert got["ID"] == json.loads(holder)["ID"]
    assert got["Who"] == "alice@ci"
    assert got["error"] == "lock_mismatch"
    assert api.services.locks.read(StateName(NAME)) is not None  # still held


def test_unlock_when_nothing_is_locked_is_409(api: Api) -> None:
    response = api.unlock(lock_body())
    assert response.status_code == 409
    assert response.json()["error"] == "lock_not_found"


def test_terraform_force_unlock_empty_body_is_200(api: Api) -> None:
    assert api.lock(lock_body()).status_code == 200
    # Terraform's force-unlock sends no ID at all: an empty body with the
    # Content-MD5 of empty input.
    response = api.request(
        "UNLOCK",
        api.url(),
        content=b"",
        headers={"Content-Type": "application/json", "Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="},
    )
    assert response.status_code == 200
    assert api.services.locks.read(StateName(NAME)) is None


def test_terraform_force_unlock_chunked_empty_body_is_200(api: Api) -> None:
    assert api.lock(lock_body()).status_code == 200

    response = api.request(
        "UNLOCK",
        api.url(),
        content=chunked(),
        headers={"Content-Type": "application/json", "Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="},
    )
    assert response.status_code == 200
    assert api.services.locks.read(StateName(NAME)) is None


def test_opentofu_force_unlock_with_zero_valued_lockinfo_is_200(api: Api) -> None:
    holder_id = str(uuid.uuid4())
    assert api.lock(lock_body(holder_id)).status_code == 200
    body = (
        '{"ID":"' + holder_id + '","Operation":"","Info":"","Who":"","Version":"",'
        '"Created":"0001-01-01T00:00:00Z","Path":""}'
    ).encode()
    response = api.unlock(body)
    assert response.status_code == 200
    assert api.services.locks.read(StateName(NAME)) is None


def test_opentofu_force_unlock_of_another_lock_is_409(api: Api) -> None:
    assert api.lock(lock_body()).status_code == 200
    body = (
        b'{"ID":"not-the-holder","Operation":"","Info":"","Who":"","Version":"",'
        b'"Created":"0001-01-01T00:00:00Z","Path":""}'
    )
    assert api.unlock(body).status_code == 409
    assert api.services.locks.read(StateName(NAME)) is not None


def test_force_unlock_when_nothing_is_locked_is_409(api: Api) -> None:
    response = api.request("UNLOCK", api.url(), content=b"")
    assert response.status_code == 409
    assert response.json()["error"] == "lock_not_found"


def test_gitlab_style_lock_methods_on_the_lock_route(api: Api) -> None:
    body = lock_body()
    assert api.request("POST", f"/lock/{NAME}", content=body).status_code == 200
    conflict = api.request("POST", f"/lock/{NAME}", content=lock_body())
    assert conflict.status_code == 423
    assert api.request("DELETE", f"/lock/{NAME}", content=body).status_code == 200
    assert api.services.locks.read(StateName(NAME)) is None


def test_locks_are_per_state(api: Api) -> None:
    assert api.lock(lock_body(), name="a.tfstate").status_code == 200
    assert api.lock(lock_body(), name="b.tfstate").status_code == 200


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"ID":' * 2_000, "not valid JSON"),  # deeper than the parser's stack
        (b'{"Operation":"x"}', "no ID"),
        (b'{"ID":"x","Created":"2024-01-01T00:00:00.123456"}', "RFC 3339"),
        (b'{"ID":"x","Created":17}', "RFC 3339"),
        # RFC 3339 allows these; Go, and so a Terraform shown them in a 423, does not.
        (b'{"ID":"x","Created":"2026-12-07 11:59:43.861163+00:00"}', "upper-case T"),
        (b'{"ID":"x","Created":"2026-12-07t11:59:43z"}', "upper-case T"),
        (b'{"ID":7}', "'ID' must be a string"),
    ],
)
def test_lock_with_a_bad_lockinfo_is_400_naming_the_problem(
    api: Api, body: bytes, what: str
) -> None:
    response = api.lock(body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_lock_info"
    assert what in response.json()["message"]
    assert api.services.locks.read(StateName(NAME)) is None


def test_lock_created_past_the_end_of_time_in_utc_is_400(api: Api) -> None:
    # Valid RFC 3339, but past year 9999 once in UTC: it used to be stored and
    # make every later conflict on the state a 500.
    body = b'{"ID":"edge","Who":"x","Created":"9999-12-31T23:59:59-01:00"}'
    response = api.lock(body)
    assert response.status_code == 400
    assert "Created" in response.json()["message"]
    assert api.lock(lock_body()).status_code == 200

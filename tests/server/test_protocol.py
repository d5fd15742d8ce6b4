"""What every answer looks like: names, body limits, chunked bodies, error shape, 405."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tfwire import NAME, Api, chunked, lock_body, md5_header, state_bytes

from statekeeper.app import Services
from statekeeper.server.app import create_app
from statekeeper.settings import load_settings
from statekeeper.terraform.names import NAME_RULES, StateName


def assert_error_shape(body: object, code: str) -> None:
    """Every client and server fault: ``{"error": code, "message": text}``."""
    assert isinstance(body, dict)
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]


# -- the error body shape, pinned ------------------------------------------------


def test_error_body_shape_is_error_and_message(api: Api) -> None:
    cases = [
        (api.write(b"[]"), 400, "invalid_state"),
        (api.get("missing.tfstate"), 404, "state_not_found"),
        (api.request("GET", "/state/a/%2E%2E/b"), 400, "invalid_state_name"),
        (api.request("PATCH", api.url()), 405, "method_not_allowed"),
        (api.request("GET", "/nowhere"), 404, "not_found"),
        (api.unlock(lock_body()), 409, "lock_not_found"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert set(body) == {"error", "message"}, body
        assert_error_shape(body, code)


def test_lock_conflict_body_is_the_holders_lockinfo_plus_error_and_message(api: Api) -> None:
    assert api.lock(lock_body()).status_code == 200
    response = api.lock(lock_body())
    assert response.status_code == 423
    body = response.json()
    assert set(body) == {
        "ID",
        "Operation",
        "Info",
        "Who",
        "Version",
        "Created",
        "Path",
        "error",
        "message",
    }
    assert_error_shape(body, "locked")


# -- state names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("/state/", "empty"),
        ("/state/a//b.tfstate", "empty, '.' or '..' segment"),
        ("/state/a/%2E%2E/b.tfstate", "empty, '.' or '..' segment"),
        # httpx removes literal dot segments; the wire tests send them raw.
        ("/state/%2E%2E", "empty, '.' or '..' segment"),
        ("/state/a/%2E/b", "empty, '.' or '..' segment"),
        ("/state/team/app%20prod.tfstate", "not allowed"),
        ("/state/a%00b", "not allowed"),
        # A route's pattern ends in $, which matches before a final newline.
        ("/state/nl/x%0A", "not allowed (the control character U+000A)"),
        ("/state/a%0Ab", "not allowed (the control character U+000A)"),
        ("/state/%0A", "not allowed (the control character U+000A)"),
        ("/state/caf%C3%A9", "not allowed"),
        ("/state/a/", "empty, '.' or '..' segment"),
        ("/state/" + "a" * 1025, "1025 bytes"),
    ],
)
def test_bad_state_names_are_400_naming_what_is_allowed(api: Api, path: str, what: str) -> None:
    for method, body in (("GET", b""), ("POST", state_bytes(1)), ("LOCK", lock_body())):
        response = api.request(method, path, content=body)
        assert response.status_code == 400, (method, path, response.text)
        assert_error_shape(response.json(), "invalid_state_name")
        message = response.json()["message"]
        assert what in message
        assert NAME_RULES in message


def test_a_control_character_in_any_path_is_400_naming_it(api: Api) -> None:
    for path in ("/api/v1/states/nl/x%0A", "/healthz%0A", "/lock/a%0A"):
        response = api.request("GET", path)
        assert response.status_code == 400, (path, response.text)
        assert "the control character U+000A" in response.json()["message"]
    assert api.request("POST", "/state/nl/x%0A", content=state_bytes(1)).status_code == 400
    assert api.get("nl/x").status_code == 404  # nothing was written under the name cut short


def test_the_longest_allowed_name_works(api: Api) -> None:
    name = "/".join(["a" * 255] * 4) + "b"
    assert len(name) == 1024
    assert api.write(state_bytes(1), name=name).status_code == 200
    assert api.get(name).content == state_bytes(1)


def test_names_with_every_allowed_character(api: Api) -> None:
    name = "env:/Team_1/app-2.v3/k=v+x.tfstate"
    assert api.write(state_bytes(1), name=name).status_code == 200
    assert api.get(name).status_code == 200


# -- bodies ------------------------------------------------------------------------


@pytest.fixture
def small_api(tmp_path: Path) -> Iterator[Api]:
    services = Services.build(load_settings({"data_dir": tmp_path / "small", "max_body": 1024}))
    client = Api(create_app(services), services)
    yield client
    client.close()
    services.close()


def test_body_over_the_limit_is_413_naming_the_limit(small_api: Api) -> None:
    data = state_bytes(1, outputs={"big": {"value": "x" * 2000, "type": "string"}})
    response = small_api.write(data)
    assert response.status_code == 413
    assert_error_shape(response.json(), "payload_too_large")
    assert "limit of 1 KiB (1024 bytes)" in response.json()["message"]
    assert "0 MiB" not in response.json()["message"]
    assert "max_body" in response.json()["message"]
    assert small_api.get().status_code == 404


def test_chunked_body_over_the_limit_is_413(small_api: Api) -> None:
    # No Content-Length to refuse up front: the limit is enforced while reading.
    response = small_api.request(
        "POST", small_api.url(), content=chunked(b"{" + b" " * 600, b" " * 600 + b"}")
    )
    assert response.status_code == 413
    assert "1024 bytes" in response.json()["message"]


def test_lock_body_over_the_limit_is_413(small_api: Api) -> None:
    assert small_api.lock(b'{"ID":"x","Info":"' + b"i" * 2000 + b'"}').status_code == 413


def test_body_at_the_limit_is_accepted(small_api: Api) -> None:
    data = state_bytes(1)
    data = data[:-2] + b" " * (1024 - len(data)) + data[-2:]
    assert len(data) == 1024
    assert small_api.write(data).status_code == 200
    assert small_api.get().content == data


def test_chunked_request_bodies_are_decoded(api: Api) -> None:
    data = state_bytes(1)
    parts = [data[i : i + 7] for i in range(0, len(data), 7)]
    response = api.request(
        "POST",
        api.url(),
        content=chunked(*parts),
        headers={"Content-Type": "application/json", "Content-MD5": md5_header(data)},
    )
    assert response.status_code == 200
    assert api.get().content == data
    lock = lock_body()
    assert api.request("LOCK", api.url(), content=chunked(lock[:10], lock[10:])).status_code == 200
    assert api.services.locks.read(StateName(NAME)) is not None


def test_non_numeric_content_length_is_400(api: Api) -> None:
    # Sent raw through the ASGI interface: httpx itself would refuse the header.
    response = api.request("POST", api.url(), content=b"{}", headers={"Content-Length": "x"})
    assert response.status_code == 400
    assert "Content-Length" in response.json()["message"]


# -- methods and paths -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["PATCH", "OPTIONS", "PROPFIND", "FOO"])
def test_unknown_methods_are_405_json(api: Api, method: str) -> None:
    response = api.request(method, api.url())
    assert response.status_code == 405
    assert_error_shape(response.json(), "method_not_allowed")
    assert "LOCK" in response.json()["message"]


@pytest.mark.parametrize(
    "target", ["/api/v1/content/a?force=true", "/api/v1/prune?dry_run=true", "/api/v1/tokens?x=1"]
)
def test_an_api_method_no_route_takes_is_405_whatever_its_query(api: Api, target: str) -> None:
    # The query was checked against the path's first route (GET /api/v1/content takes
    # no `force`) before the method was: 400 blaming the parameter.
    response = api.request("TRACE", target)
    assert response.status_code == 405, response.text
    assert_error_shape(response.json(), "method_not_allowed")


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("/api/v1/tokens", "GET, HEAD, POST"),
        ("/api/v1/content/team/app.tfstate", "GET, HEAD, PUT"),
        ("/api/v1/locks/team/app.tfstate", "DELETE"),
    ],
)
def test_a_405_of_the_api_allows_every_method_of_the_path(
    api: Api, target: str, allowed: str
) -> None:
    # Starlette's Allow named the first route's methods only: `Allow: GET` on
    # /api/v1/tokens, which takes POST too (RFC 9110: the resource's methods).
    response = api.request("OPTIONS", target)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allowed
    assert f"it takes {allowed}" in response.json()["message"]


def test_unknown_paths_are_404_json(api: Api) -> None:
    response = api.request("GET", "/nowhere")
    assert response.status_code == 404
    assert_error_shape(response.json(), "not_found")


def test_health(api: Api) -> None:
    response = api.request("GET", "/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_a_json_body_sent_as_a_form_is_refused_naming_the_content_type(api: Api) -> None:
    # What `curl --data '{…}'` sends: the body is JSON, its Content-Type is a form's.
    refused = api.request(
        "POST",
        "/api/v1/rollback/a.tfstate",
        content=b'{"to": "serial:1"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert refused.status_code == 400
    message = refused.json()["message"]
    assert "Content-Type: application/json, not 'application/x-www-form-urlencoded'" in message

"""No input on Terraform's routes gives a 500: random methods, names, bodies, queries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tfwire import Api, lock_body, md5_header, state_bytes

from statekeeper.app import Services
from statekeeper.server.app import create_app
from statekeeper.settings import load_settings

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "LOCK", "UNLOCK", "PATCH", "OPTIONS", "FOO"]
NAMES = ["fuzz.tfstate", "team/fuzz.tfstate"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
# Objects with the keys the server reads, holding values of any type.
state_like = st.fixed_dictionaries(
    {},
    optional={
        "version": json_values | st.integers(-2, 6),
        "serial": json_values | st.integers(-2, 6),
        "lineage": json_values | st.sampled_from(["", "l1", "l2"]),
        "encryption_version": json_values,
        "encrypted_data": json_values,
        "ID": json_values | st.sampled_from(["", "id-1", "id-2"]),
        "id": json_values,
        "Created": json_values
        | st.sampled_from(
            ["0001-01-01T00:00:00Z", "2026-11-23T11:13:27.558548621Z", "9999-12-31T23:59:59-01:00"]
        ),
        "Operation": json_values,
        "Who": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    state_like.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(0, 4).map(state_bytes),
    st.sampled_from([lock_body("id-1"), lock_body("id-2"), b"", b"[" * 4000, b'{"a":' * 800]),
)
names = st.one_of(
    st.sampled_from(NAMES),
    st.text(max_size=40).map(lambda t: quote(t, safe="/")),
    st.text(alphabet="a./%:=+-_~ ", max_size=20),
)
queries = st.dictionaries(
    st.sampled_from(["ID", "id", "version", "x"]),
    st.sampled_from(["", "id-1", "id-2"]) | st.text(max_size=10),
    max_size=2,
)
md5s = st.one_of(st.none(), st.just("good"), st.text(max_size=30))


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    services = Services.build(load_settings({"data_dir": data_dir, "max_body": 4096}, env={}))
    client = Api(create_app(services), services)
    yield client
    client.close()
    services.close()


@pytest.fixture(scope="module")
def token_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, dict[str, str]]]:
    """An app of its own (a token turns access control on) and its root's credentials."""
    settings = load_settings({"data_dir": tmp_path_factory.mktemp("t"), "rate_limit": 0}, env={})
    services = Services.build(settings)
    client = Api(create_app(services), services)
    root = client.request("POST", "/api/v1/tokens", json={"name": "root", "scopes": ["**:admin"]})
    yield client, {"Authorization": "Bearer " + root.json()["secret"]}
    client.close()
    services.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(METHODS), name=names, body=bodies, query=queries, md5=md5s)
def test_terraform_routes_never_answer_500(
    fuzz_api: Api, method: str, name: str, body: bytes, query: dict[str, str], md5: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if md5 is not None:
        headers["Content-MD5"] = md5_header(body) if md5 == "good" else md5
    for route in ("state", "lock"):
        try:
            response = fuzz_api.request(
                method, f"/{route}/{name}", content=body, params=query, headers=headers
            )
        except UnicodeEncodeError:
            continue  # httpx cannot send a header with this text; neither can Terraform
        assert response.status_code < 500, (method, name, body, query, response.text)
        if method != "HEAD" and response.status_code >= 400:
            reply = response.json()
            assert isinstance(reply, dict) and {"error", "message"} <= set(reply)


# Strings as JSON can carry them: any text, lone UTF-16 surrogates included
# (json.dumps writes those as \ud800-style escapes, which Python reads back).
_any_text = st.text(max_size=8) | st.integers(0xD800, 0xDFFF).map(lambda c: "id" + chr(c))
lock_bodies = st.fixed_dictionaries(
    {"ID": _any_text},
    optional={"Who": _any_text, "Info": _any_text, "Operation": _any_text, "Extra": _any_text},
).map(lambda d: json.dumps(d).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=lock_bodies, name=st.sampled_from(NAMES))
@example(body=b'{"ID":"x","Who":"\\ud800"}', name=NAMES[0])
@example(body=b'{"ID":"\\udfff"}', name=NAMES[0])
@example(body=b'{"ID":"x","Extra":"a\\ud800"}', name=NAMES[0])
def test_no_lock_body_makes_later_requests_answer_500(
    fuzz_api: Api, body: bytes, name: str
) -> None:
    """Whatever a LOCK carries, the lock listing, a competing LOCK and a write stay 4xx/2xx."""
    url = f"/state/{name}"
    taken = fuzz_api.request("LOCK", url, content=body)
    assert taken.status_code < 500, (body, taken.text)
    try:
        for method, path, content in (
            ("GET", "/api/v1/locks", b""),
            ("GET", "/api/v1/states", b""),
            ("LOCK", url, lock_body("competitor")),
            ("POST", url, state_bytes(1)),
        ):
            response = fuzz_api.request(method, path, content=content)
            assert response.status_code < 500, (body, method, path, response.text)
    finally:
        fuzz_api.request("UNLOCK", url, content=b"")


_versions = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.integers(min_value=0, max_value=2**80).map(lambda n: f"serial:{n}"),
    st.sampled_from(
        ["\u00b2", "\u0661\u0662", "serial:\u00b2", "serial:-1", "current", "", "0x10", "1e3"]
    ),
    st.text(max_size=12),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.sampled_from(["states", "content", "versions", "diff"]),
    version=_versions,
    other=_versions,
    limit=st.integers(min_value=-(2**70), max_value=2**70).map(str) | st.text(max_size=5),
)
@example(route="content", version=str(2**64), other="", limit="1")
@example(route="states", version="\u00b2", other="", limit="1")
@example(route="diff", version=str(2**63), other="serial:\u00b2", limit="1")
def test_api_version_parameters_never_answer_500(
    fuzz_api: Api, route: str, version: str, other: str, limit: str
) -> None:
    if fuzz_api.get(NAMES[0]).status_code == 404:
        fuzz_api.write(state_bytes(1), name=NAMES[0])
    params = {
        "states": {"version": version},
        "content": {"version": version},
        "versions": {"limit": limit},
        "diff": {"from": version, "to": other},
    }[route]
    response = fuzz_api.request("GET", f"/api/v1/{route}/{NAMES[0]}", params=params)
    assert response.status_code < 500, (route, params, response.text)


_durations = st.one_of(
    st.integers(min_value=0, max_value=10**20).map(lambda n: f"{n}w"),
    st.integers(min_value=0, max_value=10**20).map(lambda n: f"{n}d"),
    st.sampled_from(["1h30m", "1e400s", "0s", "-1h", "99999999999999999999w", "\u0661d", ""]),
    st.text(max_size=10),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(duration=_durations)
@example(duration="99999999999999999999w")
@example(duration="1e400s")
@example(duration="9999999999999w")
def test_durations_in_the_api_never_answer_500(
    token_api: tuple[Api, dict[str, str]], duration: str
) -> None:
    api, root = token_api
    reaped = api.request(
        "POST", "/api/v1/reap", json={"older_than": duration, "dry_run": True}, headers=root
    )
    assert reaped.status_code < 500, (duration, reaped.text)
    assert reaped.status_code != 401
    token = api.request(
        "POST",
        "/api/v1/tokens",
        json={"name": "fuzz", "scopes": ["team/*:read"], "expires": duration[:20]},
        headers=root,
    )
    assert token.status_code < 500, (duration, token.text)
    if token.status_code == 200:
        api.request("DELETE", "/api/v1/tokens/fuzz", headers=root)


_surrogates = st.integers(0xD800, 0xDFFF).map(lambda c: f"\\u{c:04x}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route_field=st.sampled_from(
        [
            ("reap", "older_than"),
            ("reap", "prefix"),
            ("reap", "operation"),
            ("rollback", "to"),
            ("tokens", "name"),
            ("tokens", "scopes"),
        ]
    ),
    escape=_surrogates,
)
@example(route_field=("reap", "prefix"), escape="\\ud800")
@example(route_field=("tokens", "name"), escape="\\udfff")
def test_json_bodies_with_lone_surrogates_are_400_in_the_error_shape(
    fuzz_api: Api, route_field: tuple[str, str], escape: str
) -> None:
    route, field = route_field
    if fuzz_api.get(NAMES[0]).status_code == 404:
        fuzz_api.write(state_bytes(1), name=NAMES[0])
    body = {
        "reap": {"older_than": "0s", "dry_run": True},
        "rollback": {"to": "current"},
        "tokens": {"name": "fuzz-token", "scopes": ["team/*:read"]},
    }[route]
    text = json.dumps({**body, field: "x@"}) if field != "scopes" else json.dumps(body)
    text = text.replace("x@", "x" + escape).replace("team/*", "team/" + escape)
    path = {"reap": "/api/v1/reap", "rollback": f"/api/v1/rollback/{NAMES[0]}"}.get(
        route, "/api/v1/tokens"
    )
    response = fuzz_api.request(
        "POST", path, content=text.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, (route, field, response.text)
    assert response.json()["error"] == "invalid_request"
    assert "surrogate" in response.json()["message"]

"""Fuzzing the HTTP surface of a real server with access control: no 5xx, no crash.

Hypothesis drives Terraform's protocol routes (methods, names, queries,
credentials, bodies, Content-MD5); schemathesis drives every operation of the
OpenAPI document. Both against one ``statekeeper serve`` process whose log
must hold no traceback afterwards.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.security.support import ROLES, basic, lock_body, make_tokens, state_json

from statekeeper.testing.processes import StatekeeperServer


@pytest.fixture(scope="module")
def fuzzed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[StatekeeperServer, dict[str, str]]]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    secrets = make_tokens(workdir, ROLES)
    server = StatekeeperServer(
        workdir, env={"STATEKEEPER_RATE_LIMIT": "0", "STATEKEEPER_MAX_BODY": "64K"}
    ).start()
    try:
        yield server, secrets
    finally:
        server.stop()
        log = server.log()
        assert "Traceback" not in log, log
        assert server.proc.returncode in (0, -15), log


_ascii = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
_names = st.one_of(
    st.sampled_from(
        [
            "team/app.tfstate",
            "other/x.tfstate",
            "team/a/b.tfstate",
            "team",
            "team/app.tfstate.tflock",  # the layout reserves these
            "team/app.tfstate-md5",
        ]
    ),
    st.text(st.characters(codec="utf-8", exclude_characters="?#"), min_size=1, max_size=60),
    st.lists(
        st.sampled_from(["team", "..", ".", "", "%2e%2e", "a:b", "x" * 300, "é"]),
        min_size=1,
        max_size=5,
    ).map("/".join),
)


def _credentials(secrets: dict[str, str]) -> st.SearchStrategy[dict[str, str]]:
    valid = [basic(role, secret) for role, secret in secrets.items()]
    return st.one_of(
        st.sampled_from([{}, *valid]),
        _ascii.map(lambda s: {"Authorization": "Basic " + s}),
        _ascii.map(lambda s: {"Authorization": "Basic " + base64.b64encode(s.encode()).decode()}),
        _ascii.map(lambda s: {"Authorization": "Bearer " + s}),
        _ascii.map(lambda s: {"Authorization": "Bearer eyJ" + s + "." + s + "." + s}),
        _ascii.map(lambda s: {"Authorization": s}),
    )


_bodies = st.one_of(
    st.none(),
    st.binary(max_size=300),
    st.integers(min_value=0, max_value=2**63).map(lambda n: state_json(n)),
    st.sampled_from([state_json(1), state_json(-1), b"{}", b"[]", b"null", b'{"version": 5}']),
    _ascii.map(lambda s: lock_body(s or "x", who=s)),
    st.dictionaries(_ascii, st.one_of(_ascii, st.integers(), st.none()), max_size=6).map(
        lambda d: json.dumps(d).encode()
    ),
    st.just(b"x" * 70_000),
    # What Terraform's decoder cannot read, and lone surrogates in a LockInfo.
    st.sampled_from(
        [
            b"\xef\xbb\xbf" + state_json(1),
            state_json(1).decode().encode("utf-16"),
            state_json(1).replace(b'"serial": 1', b'"serial": NaN'),
            state_json(2**64),
            state_json(1, lineage="\ud800"),
        ]
    ),
    st.integers(0xD800, 0xDFFF).map(
        lambda c: json.dumps({"ID": "s" + chr(c), "Who": chr(c), "Info": "i" * 20_000}).encode()
    ),
    st.integers(0xD800, 0xDFFF).map(lambda c: lock_body("s" + chr(c), who=chr(c))),
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_terraform_routes_never_fail_with_5xx(
    fuzzed: tuple[StatekeeperServer, dict[str, str]], data: st.DataObject
) -> None:
    server, secrets = fuzzed
    method = data.draw(
        st.sampled_from(
            ["GET", "HEAD", "POST", "PUT", "DELETE", "LOCK", "UNLOCK", "PATCH", "OPTIONS"]
        )
    )
    route = data.draw(st.sampled_from(["state", "lock"]))
    name = data.draw(_names)
    headers = dict(data.draw(_credentials(secrets)))
    if data.draw(st.booleans()):
        headers["Content-MD5"] = data.draw(_ascii)
    params = {"ID": data.draw(_ascii)} if data.draw(st.booleans()) else None
    body = data.draw(_bodies)
    try:
        r = httpx.request(
            method,
            f"{server.url}/{route}/{name}",
            params=params,
            headers=headers,
            content=body,
            timeout=30,
        )
    except (httpx.InvalidURL, httpx.LocalProtocolError):
        return  # the client refuses to send it; nothing reached the server
    assert r.status_code < 500, (method, name, headers, r.status_code, r.text)
    if r.status_code >= 400 and method != "HEAD":
        payload = r.json()
        assert isinstance(payload.get("message"), str)
        assert payload.get("error")
    for secret in secrets.values():
        assert secret not in r.text
    # Nothing sent may break the listings for everyone else.
    for listing in ("/api/v1/locks", "/api/v1/states"):
        listed = httpx.get(server.url + listing, headers=basic("root", secrets["root"]), timeout=30)
        assert listed.status_code == 200, (method, name, body, listed.text)


def test_openapi_operations_never_fail_with_5xx(
    fuzzed: tuple[StatekeeperServer, dict[str, str]],
) -> None:
    from schemathesis.checks import not_a_server_error

    server, secrets = fuzzed
    schema = schemathesis.openapi.from_url(server.url + "/api/v1/openapi.json")
    operations = list(schema.get_all_operations())
    assert len(operations) >= 4
    failures: list[str] = []
    statuses: list[int] = []
    for result in operations:
        operation = result.ok()
        strategy = operation.as_strategy()

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy, role=st.sampled_from(["root", "admin", "reader", None]))
        def run(case: Any, role: str | None) -> None:
            headers = basic(role, secrets[role]) if role else {}
            response = case.call(base_url=server.url, headers=headers)
            statuses.append(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n".join(failures)
    # The cases reached the routes: some were served, some refused.
    assert 200 in statuses
    assert {401, 403} & set(statuses)
    assert 400 in statuses and 422 not in statuses

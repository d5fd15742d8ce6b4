"""UI pages over the ASGI app: arranging the states list, masking, sessions and cookies."""

from __future__ import annotations

import html
import http.client
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from statekeeper.app import Services
from statekeeper.events import OUTCOMES
from statekeeper.security.caller import Caller
from statekeeper.server.app import create_app
from statekeeper.server.ui.listing import arrange
from statekeeper.server.ui.reading import MASK, resources_of
from statekeeper.settings import load_settings
from statekeeper.state.listing import StateSummary
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import instance, state_bytes

OPERATOR = Caller(actor="operator:test")


def _row(name: str, size: int = 1) -> StateSummary:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    return StateSummary(name, size, when, "v1", serial=None, lineage=None, lock=None)


def test_workspaces_are_grouped_under_their_key_and_filters_are_prefix_or_glob() -> None:
    rows = [
        _row("team/app.tfstate"),
        _row("env:/dev/team/app.tfstate"),
        _row("env:/prod/team/app.tfstate"),
        _row("env:/dev/solo.tfstate"),
        _row("other/x.tfstate", size=9),
    ]
    page = arrange(rows, query="", sort="name", descending=False, page=1, workspace_prefix="env:")
    assert [g.key for g in page.groups] == ["other/x.tfstate", "solo.tfstate", "team/app.tfstate"]
    team = page.groups[2]
    assert [w for w, _ in team.entries] == [None, "dev", "prod"]
    assert page.groups[1].state is None  # only a workspace of that key exists
    globbed = arrange(
        rows, query="**/app.tfstate", sort="name", descending=False, page=1, workspace_prefix="env:"
    )
    assert [g.key for g in globbed.groups] == ["team/app.tfstate"]
    assert [w for w, _ in globbed.groups[0].entries] == [None, "dev", "prod"]
    # A prefix keeps the workspaces of the keys under it, grouped with them, as
    # 'statekeeper states team/' and GET /api/v1/states?prefix=team/ list them; the
    # workspace's full name is still a prefix of its own.
    prefixed = arrange(
        rows, query="team/", sort="name", descending=False, page=1, workspace_prefix="env:"
    )
    assert [g.key for g in prefixed.groups] == ["team/app.tfstate"]
    assert [w for w, _ in prefixed.groups[0].entries] == [None, "dev", "prod"]
    one_workspace = arrange(
        rows, query="env:/dev/", sort="name", descending=False, page=1, workspace_prefix="env:"
    )
    assert [g.key for g in one_workspace.groups] == ["solo.tfstate", "team/app.tfstate"]
    assert [w for w, _ in one_workspace.groups[1].entries] == ["dev"]
    by_size = arrange(rows, query="", sort="size", descending=True, page=1, workspace_prefix="env:")
    assert by_size.groups[0].key == "other/x.tfstate"


def test_pages_cut_the_groups() -> None:
    rows = [_row(f"s/{i:03}.tfstate") for i in range(120)]
    third = arrange(rows, query="", sort="name", descending=False, page=3, workspace_prefix="env:")
    assert (third.number, third.pages, third.total) == (3, 3, 120)
    assert third.groups[0].key == "s/100.tfstate"
    beyond = arrange(rows, query="", sort="name", descending=False, page=9, workspace_prefix="")
    assert beyond.number == 3


def test_attribute_views_mask_marked_values_and_their_unmarked_copies() -> None:
    secret = "p4ssw0rd-long"
    data = state_bytes(
        1,
        resources=[
            instance(
                "terraform_data",
                "db",
                {
                    "id": "x",
                    "input": {"value": {"password": secret, "user": "app"}, "type": "dynamic"},
                    "output": {"value": {"password": secret, "user": "app"}, "type": "dynamic"},
                    "url": f"postgres://app:{secret}@db",
                },
                sensitive=[
                    [
                        {"type": "get_attr", "value": "input"},
                        {"type": "get_attr", "value": "password"},
                    ]
                ],
            )
        ],
        outputs={"token": {"value": "tok-123456", "type": "string", "sensitive": True}},
    )
    (resource,) = resources_of(data)
    (inst,) = resource.instances
    shown = dict(inst.attributes)
    assert secret not in json.dumps(shown)
    assert json.loads(shown["input"])["value"] == {"password": MASK, "user": "app"}
    assert json.loads(shown["output"])["value"]["password"] == MASK  # the unmarked copy
    assert json.loads(shown["output"])["type"] == "dynamic"
    assert shown["url"] == MASK  # holds the secret
    assert resource.provider == "terraform.io/builtin/terraform"


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = Services.build(load_settings({"data_dir": tmp_path / "data"}, env={}))
    built.states.write(StateName("team/app.tfstate"), state_bytes(1), OPERATOR)
    yield built
    built.close()


def test_anonymous_loopback_mode_shows_everything_without_sign_in(services: Services) -> None:
    with TestClient(create_app(services), base_url="http://localhost") as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "team/app.tfstate" in page.text
        assert "anonymous (loopback)" in page.text
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
        assert client.get("/ui/signin", follow_redirects=False).status_code == 303


def _issue(services: Services, name: str, scopes: list[str]) -> str:
    issued = services.tokens.create(OPERATOR, name, scopes, None)
    return issued.secret


def _sign_in(client: TestClient, name: str, secret: str) -> Any:
    form = client.get("/ui/signin").text
    csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    return client.post(
        "/ui/signin",
        data={"csrf": csrf, "token": name, "secret": secret, "next": "//evil.example/"},
        follow_redirects=False,
    )


def test_a_session_ends_when_its_token_is_revoked(services: Services) -> None:
    secret = _issue(services, "alice", ["team/*:read"])
    _issue(services, "bob", ["team/*:read"])  # access control stays on after the revoke
    with TestClient(create_app(services), base_url="https://localhost") as client:
        signed = _sign_in(client, "alice", secret)
        assert signed.status_code == 303
        assert signed.headers["location"] == "/"  # never off-site
        assert "secure" in signed.headers["set-cookie"].lower()  # the request came over TLS
        assert "team/app.tfstate" in client.get("/").text
        services.tokens.revoke(OPERATOR, "alice")
        gone = client.get("/", follow_redirects=False)
        assert gone.status_code == 303
        assert gone.headers["location"].startswith("/ui/signin")
        assert "www-authenticate" not in gone.headers


def test_a_tampered_cookie_is_no_session(services: Services) -> None:
    secret = _issue(services, "alice", ["team/*:read"])
    with TestClient(create_app(services), base_url="http://localhost") as client:
        _sign_in(client, "alice", secret)
        value = client.cookies["statekeeper_session"]
        # Replaced, not added beside it: the jar would send both, the valid one first.
        client.cookies.clear()
        client.cookies.set(
            "statekeeper_session", value[:-2] + ("AA" if value[-2:] != "AA" else "BB")
        )
        assert client.cookies["statekeeper_session"] != value
        assert client.get("/", follow_redirects=False).status_code == 303


def test_a_failed_sign_in_is_audited_without_the_secret(services: Services) -> None:
    _issue(services, "alice", ["team/*:read"])
    with TestClient(create_app(services), base_url="http://localhost") as client:
        refused = _sign_in(client, "alice", "not-the-secret")
        assert refused.status_code == 401
        assert "www-authenticate" not in refused.headers
    from statekeeper.security.audit import AuditFilter

    events = services.audit.query(AuditFilter(action="authenticate"))
    assert [e.actor for e in events] == ["alice"]
    assert "not-the-secret" not in json.dumps([e.to_json() for e in events])


def test_values_from_a_state_are_escaped_and_pages_forbid_scripts(services: Services) -> None:
    evil = "<script>alert(1)</script>"
    doc = state_bytes(
        2,
        resources=[instance("terraform_data", "x", {"input": evil})],
        outputs={"o": {"value": evil, "type": "string"}},
    )
    services.states.write(StateName("team/app.tfstate"), doc, OPERATOR)
    with TestClient(create_app(services), base_url="http://localhost") as client:
        page = client.get("/ui/state/team/app.tfstate")
        assert page.status_code == 200
        assert evil not in page.text
        assert "&lt;script&gt;" in page.text or "\\u003cscript\\u003e" in page.text
        assert "script-src 'none'" in page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_ui_pages_count_against_the_callers_rate(tmp_path: Path) -> None:
    env = {"STATEKEEPER_RATE_LIMIT": "0.001", "STATEKEEPER_RATE_BURST": "3"}
    limited = Services.build(load_settings({"data_dir": tmp_path / "d"}, env=env))
    try:
        secret = _issue(limited, "alice", ["team/*:read"])
        with TestClient(create_app(limited), base_url="http://localhost") as client:
            assert _sign_in(client, "alice", secret).status_code == 303
            statuses = [client.get("/ui/locks").status_code for _ in range(4)]
            assert statuses[:3] == [200, 200, 200]
            assert statuses[3] == 429
            again = client.get("/")
            assert again.status_code == 429
            assert int(again.headers["Retry-After"]) >= 1
    finally:
        limited.close()


def _fetch(url: str, method: str) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection, redirects not followed (the raw answer)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""))
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_ui_pages_answer_head_with_the_headers_of_get_and_no_body(tmp_path: Path) -> None:
    server = StatekeeperServer(tmp_path / "server").start()
    try:
        with urllib.request.urlopen(
            urllib.request.Request(
                server.state_url("team/app.tfstate"), data=state_bytes(1), method="POST"
            )
        ):
            pass
        pages = [
            "/",
            "/?q=team/&sort=size",
            "/ui/state/team/app.tfstate",
            "/ui/state/nowhere.tfstate",  # a 404 page answers HEAD as a 404
            "/ui/diff/team/app.tfstate",
            "/ui/locks",
            "/ui/audit",
            "/ui/search?q=terraform_data",
            "/ui/trash",
            "/ui/delete/team/app.tfstate",
            "/ui/signin",  # anonymous loopback mode: 303 to the states page
            "/ui/static/style.css",
            "/api/docs",
        ]
        assert _fetch(server.url + "/ui/state/nowhere.tfstate", "HEAD")[0] == 404
        for page in pages:
            got_status, got, body = _fetch(server.url + page, "GET")
            head_status, head, nothing = _fetch(server.url + page, "HEAD")
            assert head_status == got_status, page
            assert nothing == b"", page
            assert body or got_status == 303, page  # the sign-in page redirects here
            assert head.get("content-type") == got.get("content-type"), page
            # Rendered pages carry a fresh CSRF token, so only the static files' lengths match.
            assert set(head) - {"date"} == set(got) - {"date"}, page
            if page.startswith("/ui/static/"):
                assert head["content-length"] == got["content-length"] == str(len(body))
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("/?page=0", "query parameter page: Input should be greater than or equal to 1"),
        ("/ui/audit?limit=abc", "query parameter limit: Input should be a valid integer"),
        ("/ui/rollback/team/app.tfstate", "query parameter to: Field required"),
    ],
)
def test_a_page_asked_with_a_bad_parameter_answers_an_error_page(
    services: Services, path: str, what: str
) -> None:
    with TestClient(create_app(services), base_url="http://localhost") as client:
        page = client.get(path)
        assert page.status_code == 400
        assert page.headers["content-type"].startswith("text/html")
        assert what in page.text
        # The API keeps its JSON answer.
        api = client.get("/api/v1/audit?limit=abc")
        assert api.status_code == 400 and api.json()["error"] == "invalid_request"
        assert api.json()["message"] == (
            "query parameter limit: Input should be a valid integer, unable to parse string "
            "as an integer"
        )
        since = client.get("/api/v1/audit?since=1d")
        assert since.status_code == 400
        assert since.json()["message"] == (
            "query parameter since: '1d' is not an RFC 3339 time with a zone, "
            "e.g. 2026-01-01T00:00:00Z"
        )


def test_a_method_a_route_does_not_take_is_refused_with_where_to_look(
    services: Services,
) -> None:
    with TestClient(create_app(services), base_url="http://localhost") as client:
        refused = client.request("PATCH", "/api/v1/tokens")
        assert refused.status_code == 405
        message = refused.json()["message"]
        assert message == (
            "PATCH is not allowed on /api/v1/tokens; it takes GET, HEAD, POST "
            "(docs/api.md lists the routes)"
        )
        assert refused.headers["allow"] == "GET, HEAD, POST"
        assert "Terraform" not in message
        refused = client.request("PATCH", "/state/team/app.tfstate")
        assert "Terraform's http backend uses GET, POST (or PUT)" in refused.json()["message"]


def test_the_audit_outcome_is_a_choice_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    server = StatekeeperServer(tmp_path / "server").start()
    try:
        written = server.state_url("team/app.tfstate")
        assert httpx.post(written, content=state_bytes(1)).status_code == 200
        assert httpx.post(written, content=b"not a state").status_code == 400  # invalid_state
        status, _, body = _fetch(server.url + "/ui/audit", "GET")
        assert status == 200
        select = re.search(r'<select id="outcome" name="outcome">(.*?)</select>', body.decode())
        assert select is not None, "the outcome filter is not a choice"
        assert re.findall(r'<option value="([^"]*)"', select[1]) == ["", *OUTCOMES]
        status, _, body = _fetch(server.url + "/ui/audit?outcome=invalid_state", "GET")
        assert status == 200
        badges = re.findall(r'<span class="badge \w+">(\w+)</span>', body.decode())
        assert badges == ["invalid_state"]
        assert '<option value="invalid_state" selected>' in body.decode()
        # An outcome no event can have: the error page, naming the choices.
        status, headers, body = _fetch(server.url + "/ui/audit?outcome=forbiden", "GET")
        assert status == 400
        assert headers["content-type"].startswith("text/html")
        text = html.unescape(body.decode())
        assert "no event has the outcome 'forbiden'; choose from ok, bad_request," in text
        assert "forbidden" in text and "invalid_state" in text
    finally:
        server.stop()

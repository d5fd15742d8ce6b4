"""Browser sign-in with OIDC (authorization code + PKCE) against a provider on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.security.support import basic, make_tokens, state_json
from tests.ui.idp import TinyIdp

from statekeeper.testing.processes import StatekeeperServer


@pytest.fixture(scope="module")
def idp() -> Iterator[TinyIdp]:
    provider = TinyIdp(client_id="statekeeper-ui").start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def server(idp: TinyIdp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatekeeperServer]:
    workdir = tmp_path_factory.mktemp("oidc") / "server"
    secrets = make_tokens(workdir, {"root": ["**:admin"]})
    config = workdir / "oidc.toml"
    config.write_text(
        f"""
issuer = "{idp.url}"
audience = "statekeeper"
jwks_url = "{idp.url}/jwks"

[[rules]]
claim = {{ groups = "platform" }}
scope = "team/*:read"

[browser]
client_id = "statekeeper-ui"
authorization_endpoint = "{idp.url}/authorize"
token_endpoint = "{idp.url}/token"
"""
    )
    started = StatekeeperServer(workdir, env={"STATEKEEPER_OIDC_CONFIG": str(config)}).start()
    for name in ("team/app.tfstate", "other/app.tfstate"):
        posted = httpx.post(
            started.state_url(name), content=state_json(1), headers=basic("root", secrets["root"])
        )
        assert posted.status_code == 200
    yield started
    started.stop()


def test_sign_in_with_the_identity_provider(
    server: StatekeeperServer, idp: TinyIdp, browser: Any, shots: Path
) -> None:
    from playwright.sync_api import expect

    idp.user = {"sub": "alice", "groups": "platform"}
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(server.url + "/ui/locks")
    page.get_by_role("link", name="Sign in with your identity provider").click()
    expect(page.get_by_role("heading", name="Locks")).to_be_visible()  # back where it started
    expect(page.locator("header")).to_contain_text("oidc:alice")
    assert idp.redeemed == ["alice"]
    assert idp.refused == []  # the PKCE verifier matched the S256 challenge
    page.goto(server.url + "/")
    expect(page.get_by_role("link", name="team/app.tfstate")).to_be_visible()
    expect(page.get_by_role("link", name="other/app.tfstate")).to_have_count(0)  # no grant
    copied = ctx.cookies()
    page.get_by_role("button", name="Sign out").click()
    page.goto(server.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    ctx.close()
    # The session ended on the server: a copy of its cookie (another browser's) is none.
    other = browser.new_context()
    other.add_cookies(copied)
    page = other.new_page()
    page.goto(server.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    other.close()


def test_a_user_no_rule_grants_sees_no_state(
    server: StatekeeperServer, idp: TinyIdp, browser: Any
) -> None:
    from playwright.sync_api import expect

    idp.user = {"sub": "mallory", "groups": "elsewhere"}
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(server.url + "/ui/signin")
    page.get_by_role("link", name="Sign in with your identity provider").click()
    expect(page.locator("header")).to_contain_text("oidc:mallory")
    expect(page.get_by_role("link", name="team/app.tfstate")).to_have_count(0)
    ctx.close()


def test_a_callback_that_this_browser_did_not_start_is_refused(
    server: StatekeeperServer, browser: Any
) -> None:
    from playwright.sync_api import expect

    ctx = browser.new_context()
    page = ctx.new_page()
    answer = page.goto(server.url + "/ui/oidc/callback?code=stolen&state=forged")
    assert answer is not None and answer.status == 401
    expect(page.get_by_role("alert")).to_contain_text("not started here")
    page.goto(server.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    ctx.close()


def test_a_callback_whose_state_is_not_the_sign_ins_is_refused_whatever_its_characters(
    server: StatekeeperServer,
) -> None:
    with httpx.Client(base_url=server.url, follow_redirects=False) as client:
        started = client.get("/ui/oidc/start")
        assert started.status_code in (302, 303, 307), started.text
        for forged in ("é" * 32, "\u202e"):
            answer = client.get("/ui/oidc/callback", params={"code": "stolen", "state": forged})
            assert answer.status_code == 401, answer.text
            assert "state does not match" in answer.text

"""The attack docs/security.md#cross-site-requests closes, in a real Chromium: a
visitor typed a token into the browser's prompt for the server once, then opens
another site's page, whose form POSTs a state to the server as ``text/plain``. The
browser attaches the cached Basic credentials; the server must refuse the write."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from tests.security.support import basic, make_tokens

from statekeeper.testing.processes import StatekeeperServer

NAME = "team/csrf.tfstate"
#: A page on another origin; Playwright answers its URL with the form below.
EVIL = "http://evil.localhost:8999/page.html"


def _evil_page(action: str) -> str:
    state = {"version": 4, "serial": 1, "lineage": "d0d0d0d0-0000-4000-8000-000000000000"}
    # A text/plain form's body is NAME=VALUE: the name opens a JSON object, the
    # value closes it, and the state's own fields sit in the name.
    name = json.dumps(state)[:-1] + ', "x": "'
    return (
        f"<form id=f method=post enctype=text/plain action='{action}'>"
        f"<input type=hidden name='{name}' value='\"}}'></form>"
        "<script>document.getElementById('f').submit()</script>"
    )


def test_a_form_on_another_site_cannot_write_with_cached_credentials(
    browser: Any, serve: Callable[..., StatekeeperServer], tmp_path: Path
) -> None:
    workdir = tmp_path / "secured"
    secret = make_tokens(workdir, {"ci": ["**:write"]})["ci"]
    server = serve(workdir=workdir)
    host = server.url.partition("://")[2]
    context = browser.new_context()
    try:
        page = context.new_page()
        # The visitor once answered the prompt: Chromium now holds the credentials.
        primed = page.goto(f"http://ci:{secret}@{host}/api/v1/states")
        assert primed is not None and primed.status == 200
        context.route(
            EVIL,
            lambda route: route.fulfill(
                content_type="text/html", body=_evil_page(server.state_url(NAME))
            ),
        )
        with page.expect_response(server.state_url(NAME)) as answered:
            page.goto(EVIL)
        response = answered.value
        assert response.status == 403, response.text()
        assert "cross-site page" in response.json()["message"]
    finally:
        context.close()
    assert httpx.get(server.state_url(NAME), headers=basic("ci", secret)).status_code == 404

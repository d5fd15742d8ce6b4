"""A write another site's page sends is refused, whatever credentials the browser
attaches to it (docs/security.md#cross-site-requests). A real ``statekeeper serve``
with access control on; the browser's headers as Chromium sends them (a real browser
in ``tests/ui/test_cross_site.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.security.support import basic, lock_body, make_tokens, state_json

from statekeeper.testing.processes import StatekeeperServer

NAME = "team/app.tfstate"


@pytest.fixture
def secured(
    serve: Callable[..., StatekeeperServer], tmp_path: Path
) -> tuple[StatekeeperServer, dict[str, str]]:
    workdir = tmp_path / "secured"
    secrets = make_tokens(workdir, {"ci": ["**:write"]})
    return serve(workdir=workdir), basic("ci", secrets["ci"])


@pytest.mark.parametrize(
    ("browser", "said"),
    [
        ({"Sec-Fetch-Site": "cross-site"}, "a cross-site page (Sec-Fetch-Site: cross-site)"),
        ({"Sec-Fetch-Site": "same-site"}, "a same-site page (Sec-Fetch-Site: same-site)"),
        ({"Origin": "http://evil.example"}, "the web page at 'http://evil.example'"),
        ({"Origin": "null"}, "the web page at 'null'"),
    ],
)
def test_a_write_from_another_sites_page_is_refused_with_credentials(
    secured: tuple[StatekeeperServer, dict[str, str]], browser: dict[str, str], said: str
) -> None:
    server, credentials = secured
    headers = {**credentials, **browser}
    # A form's POST: text/plain, no preflight, the credentials the browser cached.
    posted = httpx.post(
        server.state_url(NAME),
        content=state_json(1),
        headers={"Content-Type": "text/plain", **headers},
    )
    assert posted.status_code == 403, posted.text
    assert said in posted.json()["message"]
    assert "docs/security.md#cross-site-requests" in posted.json()["message"]
    deleted = httpx.delete(server.state_url(NAME), headers=headers)
    assert deleted.status_code == 403
    # A page cannot read what it fetched (no CORS header), so a read is answered.
    assert httpx.get(server.state_url(NAME), headers=headers).status_code == 404
    assert httpx.get(server.state_url(NAME), headers=credentials).status_code == 404


@pytest.mark.parametrize(
    "browser",
    [
        {},  # Terraform, the CLI, curl
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed in the address bar
        {"Origin": "http://{host}"},  # an older browser on the server's own page
        # What Sec-Fetch-Site says wins over an Origin a proxy's Host rewrite broke.
        {"Sec-Fetch-Site": "same-origin", "Origin": "https://public.example"},
    ],
)
def test_terraform_scripts_and_the_servers_own_pages_write(
    secured: tuple[StatekeeperServer, dict[str, str]], browser: dict[str, str]
) -> None:
    server, credentials = secured
    host = server.url.partition("://")[2]
    headers = {**credentials, **{k: v.format(host=host) for k, v in browser.items()}}
    url = server.state_url(NAME)
    lock_id = "5f1a5e80-0000-4000-8000-000000000001"
    assert httpx.request("LOCK", url, content=lock_body(lock_id), headers=headers).is_success
    posted = httpx.post(url, params={"ID": lock_id}, content=state_json(1), headers=headers)
    assert posted.is_success, posted.text
    assert httpx.request("UNLOCK", url, content=lock_body(lock_id), headers=headers).is_success
    assert httpx.get(url, headers=credentials).json()["serial"] == 1

"""A server without access control answers this machine's programs and pages only:
not a web page of another site (a cross-site form's POST), nor one that reaches it
by DNS rebinding (a foreign name in ``Host``). A real ``statekeeper serve``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.security.support import basic, make_tokens, state_json

from statekeeper.testing.processes import StatekeeperServer

NAME = "team/app.tfstate"


@pytest.mark.parametrize(
    ("headers", "status", "what"),
    [
        ({"Origin": "http://evil.example"}, 403, "the web page at 'http://evil.example'"),
        ({"Origin": "null"}, 403, "the web page at 'null'"),
        ({"Host": "evil.example:8080"}, 400, "addressed to 'evil.example:8080'"),
        ({"Host": "127.0.0.1.nip.io"}, 400, "DNS rebinding"),
    ],
)
def test_a_foreign_page_or_name_is_refused_and_writes_nothing(
    serve: Callable[..., StatekeeperServer], headers: dict[str, str], status: int, what: str
) -> None:
    server = serve()
    # A form's POST: text/plain, no preflight.
    posted = httpx.post(
        server.state_url(NAME),
        content=state_json(1),
        headers={"Content-Type": "text/plain", **headers},
    )
    assert posted.status_code == status, posted.text
    assert what in posted.json()["message"]
    assert "access control" in posted.json()["message"]
    read = httpx.get(server.state_url(NAME), headers=headers)
    assert read.status_code == status
    assert httpx.get(server.state_url(NAME)).status_code == 404  # nothing was written


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Host": "localhost:8080"},
        {"Host": "[::1]:8080"},
        {"Origin": "http://{host}"},  # the UI's own pages
    ],
)
def test_this_machines_programs_and_pages_are_answered(
    serve: Callable[..., StatekeeperServer], headers: dict[str, str]
) -> None:
    server = serve()
    headers = {k: v.format(host=server.url.partition("://")[2]) for k, v in headers.items()}
    assert httpx.post(server.state_url(NAME), content=state_json(1), headers=headers).is_success
    assert httpx.get(server.state_url(NAME), headers=headers).status_code == 200


def test_another_local_page_reads_but_does_not_write(
    serve: Callable[..., StatekeeperServer],
) -> None:
    """A page of another program on this machine (another port) is another site."""
    server = serve()
    other = {"Origin": "http://localhost:3000"}
    posted = httpx.post(server.state_url(NAME), content=state_json(1), headers=other)
    assert posted.status_code == 403, posted.text
    assert "the web page at 'http://localhost:3000'" in posted.json()["message"]
    assert httpx.get(server.state_url(NAME), headers=other).status_code == 404  # not written


def test_with_access_control_the_credentials_decide(
    serve: Callable[..., StatekeeperServer], tmp_path: Path
) -> None:
    workdir = tmp_path / "secured"
    secrets = make_tokens(workdir, {"ci": ["**:write"]})
    server = serve(workdir=workdir)
    headers = {"Host": "ci.example", **basic("ci", secrets["ci"])}
    assert httpx.post(server.state_url(NAME), content=state_json(1), headers=headers).is_success
    anonymous = httpx.post(server.state_url(NAME), headers={"Host": "ci.example"})
    assert anonymous.status_code == 401

"""Answers that carry a state's content tell caches not to keep them and browsers not
to guess their type; the API's documentation page cannot be framed. A real
``statekeeper serve``."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from tests.security.support import state_json

from statekeeper.testing.processes import StatekeeperServer

NAME = "team/app.tfstate"


def test_a_states_content_is_not_cached_nor_sniffed(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    assert httpx.post(server.state_url(NAME), content=state_json(1)).is_success
    for url in (
        server.state_url(NAME),
        f"{server.url}/api/v1/content/{NAME}",
        f"{server.url}/api/v1/states/{NAME}",
    ):
        answer = httpx.get(url)
        assert answer.status_code == 200, (url, answer.text)
        assert answer.headers["cache-control"] == "no-store", url
        assert answer.headers["x-content-type-options"] == "nosniff", url
    head = httpx.head(server.state_url(NAME))
    assert head.headers["cache-control"] == "no-store"


def test_the_api_documentation_cannot_be_framed_and_its_files_are_not_sniffed(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    page = httpx.get(f"{server.url}/api/docs")
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(f"{server.url}/ui/static/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert script.headers["x-content-type-options"] == "nosniff"

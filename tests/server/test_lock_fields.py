"""A LOCK whose fields a terminal would obey is refused: they are echoed to every
operator who lists the locks or is refused this one. A real ``statekeeper serve``."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from tests.server.tfwire import lock_body

from statekeeper.testing.processes import StatekeeperServer

NAME = "team/app.tfstate"


def _with(field: str, value: str) -> bytes:
    info = json.loads(lock_body())
    info[field] = value
    return json.dumps(info).encode()


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("Who", "evil\x1b[2J@host", "U+001B"),
        ("Who", "\u202eexe.gnp", "U+202E"),
        ("Operation", "OperationTypeApply\x1b]0;pwned\x07", "U+001B"),
        ("ID", "a\x9bb", "U+009B"),
        ("Who", "ci@runner\nfake line", "U+000A"),
        ("Info", "one\rtwo", "U+000D"),
    ],
)
def test_a_lock_with_a_control_character_is_refused_and_not_taken(
    serve: Callable[..., StatekeeperServer], field: str, value: str, code: str
) -> None:
    server = serve()
    taken = httpx.request("LOCK", server.state_url(NAME), content=_with(field, value))
    assert taken.status_code == 400, taken.text
    assert taken.json()["error"] == "invalid_lock_info"
    assert (
        f"the lock info field {field!r} holds the control character {code}"
        in (taken.json()["message"])
    )
    assert httpx.get(f"{server.url}/api/v1/locks").json() == []


def test_plain_text_and_line_breaks_in_info_are_taken(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    body = _with("Info", "planned by CI\n\trun 42: ünïcode ✓")
    assert httpx.request("LOCK", server.state_url(NAME), content=body).status_code == 200
    held = httpx.request("LOCK", server.state_url(NAME), content=lock_body())
    assert held.status_code == 423
    assert held.json()["Info"] == "planned by CI\n\trun 42: ünïcode ✓"

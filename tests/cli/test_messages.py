"""Refusals that say the real reason: ``python -m statekeeper`` child processes, on the
embedded store or through a real ``statekeeper serve``."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from tests.cli.conftest import CliFn
from tests.server.tfwire import lock_body

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import state_bytes

NAME = "team/app.tfstate"


def test_decrypt_with_neither_file_nor_state_asks_for_one(cli_process: CliFn) -> None:
    run = cli_process("encryption", "decrypt")
    assert run.exit_code == 2, run.stderr
    assert "give a FILE of stored bytes or --state NAME: which version to decrypt" in run.stderr
    assert "not both" not in run.stderr


@pytest.mark.parametrize(
    ("since", "said"),
    [
        ("99999999d", "--since '99999999d' is longer than 36500 days"),
        ("1m1h", "--since '1m1h' is not a duration"),
        ("yesterday", "--since 'yesterday' is neither an RFC 3339 time"),
    ],
)
def test_audit_since_says_what_is_wrong(cli_process: CliFn, since: str, said: str) -> None:
    run = cli_process("audit", "--since", since)
    assert run.exit_code == 2, run.stderr
    assert said in run.stderr


def test_reap_of_an_operation_no_lock_has_says_so(
    serve: Callable[..., StatekeeperServer], cli_process: CliFn
) -> None:
    server = serve()
    taken = httpx.request("LOCK", server.state_url(NAME), content=lock_body())
    assert taken.status_code == 200, taken.text
    reap = ("--server", server.url, "locks", "reap", "--dry-run", "--older-than")

    run = cli_process(*reap, "0s", "--operation", "bogus")
    assert run.exit_code == 0, run.stderr
    assert "no lock held has the operation 'bogus' (held: OperationTypeApply)" in run.stderr

    run = cli_process(*reap, "1d", "--operation", "apply")  # the lock is not that old
    assert "no lock is old enough to reap" in run.stderr
    assert "would remove" in cli_process(*reap, "0s", "--operation", "apply").stdout


def test_unlock_refuses_id_with_force_and_an_empty_id(
    serve: Callable[..., StatekeeperServer], cli_process: CliFn
) -> None:
    server = serve()
    held = lock_body()
    assert httpx.request("LOCK", server.state_url(NAME), content=held).status_code == 200
    unlock = ("--server", server.url, "unlock", NAME)

    run = cli_process(*unlock, "--id", "WRONG", "--force")
    assert run.exit_code == 2, run.stderr
    assert "--id and --force both given" in run.stderr

    for empty in ("", " "):
        run = cli_process(*unlock, "--id", empty)
        assert run.exit_code == 2, run.stderr
        assert "Error: the lock ID is empty; give the lock's ID" in run.stderr
        assert "does not match" not in run.stderr
    answer = httpx.delete(f"{server.url}/api/v1/locks/{NAME}", params={"id": ""})
    assert answer.status_code == 400 and answer.json()["error"] == "bad_request"

    assert NAME in cli_process("--server", server.url, "locks").stdout  # still held
    assert cli_process(*unlock, "--force").exit_code == 0


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("hooks", "deliveries", "--hook", "x\udcff"), "'x\\udcff' holds '\\udcff', bytes that"),
        (("hooks", "remove", "x\udcff"), "'x\\udcff' holds '\\udcff', bytes that are no UTF-8"),
        (("audit", "--actor", "x\udcff"), "'x\\udcff' holds '\\udcff', bytes that are no UTF-8"),
        (("history", "a\udcff"), "the state name 'a\\udcff' has a character that is not"),
        (("pull", "a\udcff"), "the state name 'a\\udcff' has a character that is not allowed"),
    ],
)
def test_an_argument_of_bytes_that_are_no_utf8_is_refused_naming_it(
    cli_process: CliFn, args: tuple[str, ...], said: str
) -> None:
    """A command line's bytes that are no UTF-8 (b'\\xff', a lone surrogate to Python):
    the embedded store's database could not bind them, nor a state name measure them,
    and each command ended with UnicodeEncodeError's traceback."""
    made = cli_process("push", "other.tfstate", "-", input=state_bytes(1))
    assert made.exit_code == 0, made.stderr
    run = cli_process(*args)
    assert run.exit_code == 2, run.stderr
    assert said in run.stderr
    assert "Traceback" not in run.stderr

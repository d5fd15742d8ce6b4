"""``--server`` and ``--token`` as a user types (or pastes) them: a secret is never
echoed, and a malformed value is refused (exit 2) before any request, never blamed on
the network.

The commands run as ``python -m statekeeper`` child processes against a real
``statekeeper serve``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.cli.conftest import CliFn

from statekeeper.testing.processes import StatekeeperServer

SECRET = "skt_Zq3uS3cr3tTok3nPart"


def test_a_pasted_token_with_a_newline_is_used_without_it(
    serve: Callable[..., StatekeeperServer], cli_process: CliFn
) -> None:
    server = serve()
    run = cli_process("--server", server.url, "states", env={"STATEKEEPER_TOKEN": SECRET + "\n"})
    assert run.exit_code == 0, run.stderr
    run = cli_process("--server", server.url, "--token", f" {SECRET} ", "states")
    assert run.exit_code == 0, run.stderr


@pytest.mark.parametrize(
    ("token", "said"),
    [
        (SECRET + "tökén", "a non-ASCII character"),
        (SECRET[:8] + " " + SECRET[8:], "a space"),
        (SECRET[:8] + "\n" + SECRET[8:], "a control character"),
    ],
)
def test_a_token_no_header_can_carry_is_refused_without_echoing_it(
    serve: Callable[..., StatekeeperServer], cli_process: CliFn, token: str, said: str
) -> None:
    server = serve()
    run = cli_process("--server", server.url, "states", env={"STATEKEEPER_TOKEN": token})
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert f"the token (--token or STATEKEEPER_TOKEN) holds {said}" in run.stderr
    assert "Traceback" not in run.stderr and "cannot reach" not in run.stderr
    assert SECRET[:8] not in run.stderr and SECRET[8:] not in run.stderr

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

from statekeeper.testing.processes import StatekeeperServer, free_port

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


def test_credentials_in_the_server_url_are_not_echoed(cli_process: CliFn) -> None:
    port = free_port()  # nothing listens there
    run = cli_process("--server", f"http://admin:S3CR%40T@127.0.0.1:{port}", "states")
    assert run.exit_code == 1, run.stderr
    assert f"cannot reach the statekeeper server at http://admin:***@127.0.0.1:{port}" in (
        run.stderr
    )
    assert "S3CR" not in run.stderr
    run = cli_process("--server", f"http://{SECRET}@127.0.0.1:{port}", "token", "list")
    assert f"http://***@127.0.0.1:{port}" in run.stderr and SECRET not in run.stderr


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:abc", "--server 'http://127.0.0.1:abc' is not a valid URL"),
        ("http://[::1", "--server 'http://[::1' is not a valid URL"),
        ("http://admin:pw@127.0.0.1:abc", "--server 'http://admin:***@127.0.0.1:abc' is not"),
        ("127.0.0.1:8091", "--server '127.0.0.1:8091' is not an http(s) URL of a host"),
    ],
)
def test_a_malformed_server_url_is_refused(cli_process: CliFn, url: str, said: str) -> None:
    run = cli_process("--server", url, "states")
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert said in run.stderr and "Traceback" not in run.stderr
    assert "pw@" not in run.stderr


@pytest.mark.parametrize("path", ["/prefix", "/api/v1"])
def test_a_server_url_with_a_path_is_refused(
    serve: Callable[..., StatekeeperServer], cli_process: CliFn, path: str
) -> None:
    server = serve()
    run = cli_process("--server", server.url + path, "states")
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert "has a path after the host; give the server's base URL, e.g. http://HOST:PORT" in (
        run.stderr
    )
    assert cli_process("--server", server.url + "/", "states").exit_code == 0

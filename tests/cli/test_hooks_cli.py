"""``statekeeper hooks`` as the user runs it: ``python -m statekeeper`` child processes
on the embedded store on disk."""

from __future__ import annotations

import pytest
from tests.cli.conftest import CliFn

# A documentation address (TEST-NET-1): passes the destination guard, never contacted.
URL = "http://192.0.2.1/hook"


@pytest.mark.parametrize("secret", ["", "   "])
def test_an_empty_secret_is_refused_not_replaced(cli_process: CliFn, secret: str) -> None:
    run = cli_process("hooks", "add", "chatops", "--url", URL, "--secret", secret)
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert "--secret is empty" in run.stderr and "leave --secret out" in run.stderr
    listed = cli_process("hooks", "list")
    assert "chatops" not in listed.stdout  # nothing was stored


def test_a_given_secret_is_kept_and_not_printed(cli_process: CliFn) -> None:
    run = cli_process("hooks", "add", "chatops", "--url", URL, "--secret", "whsec_given")
    assert run.exit_code == 0, run.stderr
    assert "whsec_given" not in run.stdout + run.stderr
    assert "chatops" in cli_process("hooks", "list").stdout

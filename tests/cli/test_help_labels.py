"""Every command names its arguments the same way in its usage line and its errors:
``{NAME}`` for a required one, ``[FROM]`` for an optional one (as docs/cli.md
writes them), whether the command is typer's or, like ``unlock``, plain click's."""

from __future__ import annotations

import pytest
from tests.cli.conftest import CliFn


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ("unlock", "unlock [OPTIONS] {NAME}"),
        ("history", "history [OPTIONS] {NAME}"),
        ("diff", "diff [OPTIONS] {NAME} [FROM] [TO]"),
        ("push", "push [OPTIONS] {NAME} {FILE}"),
    ],
)
def test_usage_lines_label_arguments_alike(cli_process: CliFn, command: str, usage: str) -> None:
    shown = cli_process(command, "--help")
    assert shown.exit_code == 0
    assert f"statekeeper {usage}" in " ".join(shown.stdout.split())
    missing = cli_process(command)
    assert missing.exit_code == 2
    assert "Missing argument 'NAME'" in missing.stdout + missing.stderr

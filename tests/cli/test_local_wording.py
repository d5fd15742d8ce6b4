"""Errors of the CLI on a local store are worded for a file and a command, not a request."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import CliFn


def test_pushing_an_empty_file_says_the_state_is_empty(cli_process: CliFn, tmp_path: Path) -> None:
    for content in (b"", b" \n"):
        empty = tmp_path / "empty.tfstate"
        empty.write_bytes(content)
        r = cli_process("push", "app.tfstate", str(empty))
        message = " ".join(r.stderr.split())
        assert r.exit_code == 2, message
        assert "the state is empty" in message
        assert "body" not in message and "send" not in message

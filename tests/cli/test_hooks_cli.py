"""``statekeeper hooks`` as the user runs it: ``python -m statekeeper`` child processes
on the embedded store on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli.conftest import CliFn

from statekeeper.app import Services
from statekeeper.settings import load_settings

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


@pytest.mark.parametrize(
    "url", ["http://ci:hunter2@192.0.2.1/hook", "ftp://ci:hunter2@192.0.2.1/h"]
)
def test_a_url_with_a_password_is_refused_without_showing_it(cli_process: CliFn, url: str) -> None:
    """Deliveries send no Authorization: a password in the URL would authenticate
    nothing, and ``hooks list`` and ``GET /api/v1/hooks`` show the URL."""
    run = cli_process("hooks", "add", "chatops", "--url", url, "--secret", "whsec_given")
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert "carries a user name or password" in run.stderr
    assert "hunter2" not in run.stdout + run.stderr
    assert "chatops" not in cli_process("hooks", "list").stdout


def test_a_configured_url_with_a_password_stops_every_command(
    cli_process: CliFn, tmp_path: Path
) -> None:
    config = tmp_path / "statekeeper.toml"
    config.write_text(
        '[[hooks]]\nname = "chatops"\nurl = "https://ci:hunter2@192.0.2.1/hook"\nsecret = "s"\n'
    )
    assert cli_process("hooks", "add", "other", "--url", URL).exit_code == 0  # a store to list
    run = cli_process("--config", str(config), "hooks", "list")
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert "chatops" in run.stderr and "carries a user name or password" in run.stderr
    assert "hunter2" not in run.stdout + run.stderr


@pytest.mark.parametrize(
    ("url", "odd"),
    [
        ("http://192.0.2.1/a b", "' '"),
        ("http://192.0.2.1/a\r\nX-Injected: 1", "'\\r'"),
        ("http://192.0.2.1/日本", "'日'"),
    ],
)
def test_a_url_with_a_character_to_percent_encode_is_refused(
    cli_process: CliFn, url: str, odd: str
) -> None:
    """The request line carries the URL as it is: a space or a line break broke it, and
    ``hooks test`` of a character past ASCII ended in a traceback."""
    run = cli_process("hooks", "add", "chatops", "--url", url, "--secret", "whsec_given")
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert f"holds {odd}, which a URL holds only percent-encoded" in run.stderr
    assert "chatops" not in cli_process("hooks", "list").stdout


def stored_secret(tmp_path: Path, name: str) -> str:
    """The secret the embedded store of ``cli_process`` keeps for the hook ``name``."""
    data_dir = tmp_path / "cwd" / ".statekeeper"
    services = Services.build(load_settings({"data_dir": data_dir}, env={}))
    try:
        return next(s.secret for s in services.hooks.all() if s.name == name)
    finally:
        services.close()


@pytest.mark.parametrize("from_stdin", [False, True], ids=["file", "stdin"])
def test_a_secret_from_a_file_or_stdin_is_kept_and_not_printed(
    cli_process: CliFn, tmp_path: Path, from_stdin: bool
) -> None:
    """``--secret VALUE`` is in the shell's history and ``ps``; the file's line break
    is not part of the secret."""
    path = tmp_path / "secret"
    path.write_text("whsec_from_file\n")
    where = "-" if from_stdin else str(path)
    stdin = path.read_bytes() if from_stdin else None
    run = cli_process("hooks", "add", "chatops", "--url", URL, "--secret-file", where, input=stdin)
    assert run.exit_code == 0, run.stderr
    assert "whsec_from_file" not in run.stdout + run.stderr
    assert stored_secret(tmp_path, "chatops") == "whsec_from_file"


@pytest.mark.parametrize("content", [b"", b" \n"], ids=["empty", "blank"])
@pytest.mark.parametrize("from_stdin", [False, True], ids=["file", "stdin"])
def test_an_empty_secret_file_is_refused_not_replaced(
    cli_process: CliFn, tmp_path: Path, content: bytes, from_stdin: bool
) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    where = "-" if from_stdin else str(path)
    run = cli_process(
        "hooks", "add", "chatops", "--url", URL, "--secret-file", where, input=content
    )
    assert run.exit_code == 2, (run.stdout, run.stderr)
    named = "stdin" if from_stdin else f"the file {path}"
    assert f"--secret-file: {named} is empty" in run.stderr
    assert "chatops" not in cli_process("hooks", "list").stdout


def test_an_unreadable_secret_file_or_two_secrets_are_refused(
    cli_process: CliFn, tmp_path: Path
) -> None:
    missing = tmp_path / "missing"
    run = cli_process("hooks", "add", "chatops", "--url", URL, "--secret-file", str(missing))
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert f"--secret-file: cannot read the file {missing}" in run.stderr
    assert "Traceback" not in run.stderr
    path = tmp_path / "secret"
    path.write_text("whsec_a\n")
    both = ("--secret", "whsec_b", "--secret-file", str(path))
    run = cli_process("hooks", "add", "chatops", "--url", URL, *both)
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert "--secret or --secret-file, not both" in run.stderr
    assert "chatops" not in cli_process("hooks", "list").stdout

"""What ``--help`` prints, as a user sees it (``python -m statekeeper`` child processes,
rich rendering the help): nothing eaten as markup, every choice the code accepts."""

from __future__ import annotations

from tests.cli.conftest import CliFn

from statekeeper.security.policy import Permission


def test_hooks_list_help_names_the_config_tables(cli_process: CliFn) -> None:
    shown = cli_process("hooks", "list", "--help")
    assert shown.exit_code == 0, shown.stderr
    assert "the config file's [[hooks]] (config;" in shown.stdout


def test_token_create_help_lists_every_permission(cli_process: CliFn) -> None:
    shown = cli_process("token", "create", "--help")
    assert shown.exit_code == 0, shown.stderr
    every = ", ".join(p.name.lower() for p in Permission)
    assert f"Grant PATTERN:PERMISSION ({every}); repeatable" in shown.stdout
    assert "metrics" in every  # the one the help used to leave out

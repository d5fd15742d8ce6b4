"""What the CLI writes to a pipe, a file or a CI log: one line per message however
long, and tables whose every row has a field under every header. ``python -m
statekeeper`` child processes with stdout and stderr pipes, on the embedded store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli.conftest import CliFn, push_serials

from statekeeper.app import Services
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.terraform.names import StateName
from statekeeper.testing.statefiles import instance, state_bytes
from statekeeper.times import utcnow

#: The width rich wraps at off a terminal; the messages below are longer.
NARROW = {"COLUMNS": "80"}
TOKEN = "ci-deploy-for-the-production-account-of-team-app"
SCOPE = "team/app/production/**:write"
NAME = "team/app/production/eu-west-1/network.tfstate"


def test_a_long_message_is_one_line_off_a_terminal(cli_process: CliFn) -> None:
    created = cli_process(
        "token", "create", TOKEN, "--scope", SCOPE, "--expires", "30d", env=NARROW
    )
    assert created.exit_code == 0, created.stderr
    lines = created.stderr.splitlines()
    said = next(line for line in lines if line.startswith("created token"))
    assert len(said) > 80
    assert said.startswith(f"created token {TOKEN} with {SCOPE}, expiring ")
    assert said.endswith(" UTC")
    hint = next(line for line in lines if line.startswith("In the backend block:"))
    assert hint.endswith("(or TF_HTTP_USERNAME / TF_HTTP_PASSWORD).")

    # An error on stderr too: one line naming the whole state.
    missing = cli_process("pull", NAME + "/" + NAME, env=NARROW)
    assert missing.exit_code != 0
    assert f"Error: there is no state named {NAME}/{NAME}" in missing.stderr.splitlines()


def test_a_usage_error_is_one_line_off_a_terminal(cli_process: CliFn) -> None:
    # typer's boxed error is 80 columns wide and wraps the option it names.
    option = "--" + "-".join(["no-such-option"] * 6)
    refused = cli_process("states", option, env=NARROW)
    assert refused.exit_code == 2
    assert f"Error: No such option: {option}" in refused.stderr.splitlines()


def test_a_terminal_still_wraps_at_its_width(cli_process: CliFn) -> None:
    # FORCE_COLOR makes rich take the pipe for a terminal of COLUMNS columns.
    created = cli_process(
        "token", "create", TOKEN, "--scope", SCOPE, env={**NARROW, "FORCE_COLOR": "1"}
    )
    assert created.exit_code == 0, created.stderr
    assert all(len(line) <= 80 for line in created.stderr.splitlines())


def _hold(workdir: Path, name: str) -> None:
    """A lock on ``name`` in the embedded store the CLI in ``workdir`` opens."""
    settings = load_settings({"data_dir": workdir / ".statekeeper"}, env={})
    services = Services.build(settings)
    try:
        body = json.dumps(
            {
                "ID": "3f0e8b1c-6e1f-4a57-9d55-1c2f8a9e0b7d",
                "Operation": "OperationTypeApply",
                "Who": "someone@build-host",
                "Version": "1.15.0",
                "Created": utcnow().isoformat(),
                "Path": name,
                "Info": "",
            }
        ).encode()
        services.locks.lock(StateName(name), body, Caller(actor="ci"))
    finally:
        services.close()


def _fields(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


def test_every_piped_table_has_a_header_for_each_field(cli_process: CliFn, tmp_path: Path) -> None:
    push_serials(cli_process, (), tmp_path, NAME, 1, 2)
    resources = [instance("terraform_data", "network", {"id": "vpc-1"})]
    state = tmp_path / "r.tfstate"
    state.write_bytes(state_bytes(1, "5b2a8c3e-0000-4000-8000-000000000002", resources=resources))
    assert cli_process("push", "team/other.tfstate", str(state)).exit_code == 0
    assert cli_process("push", "team/gone.tfstate", str(state)).exit_code == 0
    assert cli_process("delete", "team/gone.tfstate").exit_code == 0
    _hold(tmp_path / "cwd", NAME)
    assert cli_process("token", "create", TOKEN, "--scope", SCOPE).exit_code == 0
    added = cli_process("hooks", "add", "chatops", "--url", "http://192.0.2.1/hook")
    assert added.exit_code == 0, added.stderr

    tables = {
        "states": ("states",),
        "states --details": ("states", "--details"),
        "history": ("history", NAME),
        "locks": ("locks",),
        "trash list": ("trash", "list"),
        "audit": ("audit",),
        "token list": ("token", "list"),
        "hooks list": ("hooks", "list"),
        "hooks deliveries": ("hooks", "deliveries"),
        "search": ("search", "vpc-1"),
    }
    for what, args in tables.items():
        run = cli_process(*args, env=NARROW)
        assert run.exit_code == 0, (what, run.stderr)
        header, *rows = _fields(run.stdout)
        assert all(header), (what, header)
        for row in rows:
            assert len(row) == len(header) and all(row), (what, header, row)

    # The history's marker has its header; versions not current are marked "-".
    header, current, older = _fields(cli_process("history", NAME).stdout)
    assert header[-1] == "CURRENT" and current[-1] == "current" and older[-1] == "-"


def test_search_counts_are_headed_tables(cli_process: CliFn, tmp_path: Path) -> None:
    push_serials(cli_process, (), tmp_path, NAME, 1)
    counts = cli_process("search", "--counts", env=NARROW)
    assert counts.exit_code == 0, counts.stderr
    # Three tables, one after the other: each line has two fields.
    assert all(len(row) == 2 and all(row) for row in _fields(counts.stdout)), counts.stdout


@pytest.mark.parametrize("args", [("history", NAME, "--json"), ("states", "--json")])
def test_json_is_unchanged_off_a_terminal(
    cli_process: CliFn, tmp_path: Path, args: tuple[str, ...]
) -> None:
    push_serials(cli_process, (), tmp_path, NAME, 1, 2)
    run = cli_process(*args, env=NARROW)
    assert run.exit_code == 0, run.stderr
    assert json.loads(run.stdout)

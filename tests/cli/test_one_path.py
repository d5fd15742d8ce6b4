"""One CLI path: global options anywhere and for every command (or refused), one local
identity, one duration grammar, help panels, tables that never split a cell."""

from __future__ import annotations

import getpass
import json
import os
import pty
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from statekeeper.app import Services
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import SRC, StatekeeperServer
from statekeeper.testing.statefiles import state_bytes

CliFn = Callable[..., Any]  # the ``cli`` fixtures of conftest.py
WHO = f"{getpass.getuser()}@{socket.gethostname()}"
NAME = "team/app.tfstate"


def _file(tmp_path: Path, serial: int, lineage: str | None = None) -> str:
    path = tmp_path / f"s{serial}-{lineage or 'x'}.tfstate"
    path.write_bytes(state_bytes(serial, lineage) if lineage else state_bytes(serial))
    return str(path)


# -- global options before or after the command, for every command --------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_token_create_writes_into_the_global_data_dir(
    cli: CliFn, tmp_path: Path, where: str
) -> None:
    data = tmp_path / "A"
    args = ["token", "create", "ci", "--scope", "**:read", "--json"]
    opts = ["--data-dir", str(data)]
    r = cli(*(opts + args if where == "before" else args + opts))
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "ci"
    assert not Path(".statekeeper").exists(), "the token went to ./.statekeeper"
    listed = cli("token", "list", "--json", "--data-dir", str(data))
    assert [t["name"] for t in json.loads(listed.stdout)] == ["ci"]


def test_store_after_the_command_for_push_pull_and_audit(cli: CliFn, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b' / 'state.db'}"
    (tmp_path / "b").mkdir()
    assert cli("push", NAME, _file(tmp_path, 1), "--store", url).exit_code == 0
    pulled = cli("pull", NAME, "--store", url)
    assert pulled.exit_code == 0, pulled.stderr
    assert json.loads(pulled.stdout_bytes)["serial"] == 1
    # audit reads the trail of the store it is given, not ./.statekeeper's
    events = json.loads(cli("--store", url, "audit", "--json").stdout)
    assert events and {(e["state"], e["actor"]) for e in events} == {(NAME, WHO)}
    assert not Path(".statekeeper").exists()


def test_encryption_status_looks_at_the_global_data_dir(cli: CliFn, tmp_path: Path) -> None:
    data = tmp_path / "X"
    assert cli("--data-dir", str(data), "push", NAME, _file(tmp_path, 1)).exit_code == 0
    r = cli("--data-dir", str(data), "encryption", "status", "--json")
    assert r.exit_code == 1, "a plaintext state is reported with exit 1"
    assert json.loads(r.stdout) == {
        "encryption": False,
        "master_keys": [],
        "key_configured": False,
        "unencrypted": [NAME],
    }
    assert not Path(".statekeeper").exists()


def test_token_create_with_a_tokens_file_leaves_no_stray_database(
    cli: CliFn, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.toml"
    r = cli("token", "create", "ci", "--scope", "**:read", "--tokens-file", str(tokens))
    assert r.exit_code == 0, r.stderr
    assert '[tokens."ci"]' in tokens.read_text()
    assert not Path(".statekeeper").exists(), "a stray ./.statekeeper/statekeeper.db"
    assert "--store" in r.stderr, "says how to get the change into an audit trail"


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["iam-policy", "--bucket", "b", "--store", "s3://b"], "--store"),
        (["iam-policy", "--bucket", "b", "--data-dir", "d"], "--data-dir"),
        (["iam-policy", "--bucket", "b", "--config", "c.toml"], "--config"),
        (["--server", "http://127.0.0.1:9", "encryption", "status"], "--server"),
        (["audit", "--locks", "dynamodb://t"], "--locks"),
        (["serve", "--server", "http://127.0.0.1:9"], "--server"),
        (["states", "--token", "secret"], "--token"),
        (["migrate", "--from", "x.tfstate", "--name", "a", "--token", "t"], "--token"),
        (["states", "--tokens-file", "t.toml"], "--tokens-file"),
        (
            [
                "migrate",
                "--from",
                "x.tfstate",
                "--name",
                "a",
                "--to",
                "sqlite:///b.db",
                "--store",
                "sqlite:///c.db",
            ],
            "--store",
        ),
        (["--server", "http://127.0.0.1:9", "token", "list", "--data-dir", "d"], "--data-dir"),
    ],
)
def test_a_global_option_a_command_does_not_use_is_refused(
    cli: CliFn, args: list[str], flag: str
) -> None:
    r = cli(*args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert flag in r.stderr
    assert not Path(".statekeeper").exists()


# -- --server: audit and tokens through the admin API --------------------------------------


def test_server_audit_and_tokens_go_through_the_admin_api(
    cli: CliFn, tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    data = tmp_path / "server-data"
    made = cli("--data-dir", str(data), "token", "create", "root", "--scope", "**:admin", "--json")
    secret = json.loads(made.stdout)["secret"]
    server = serve("--data-dir", str(data))
    remote = ["--server", server.url, "--token", secret]

    listed = cli(*remote, "token", "list", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert [t["name"] for t in json.loads(listed.stdout)] == ["root"]
    created = cli("token", "create", "ci", "--scope", "team/**:read", "--json", *remote)
    assert created.exit_code == 0, created.stderr
    assert json.loads(created.stdout)["secret"].startswith("skt_")

    events = json.loads(cli(*remote, "audit", "--action", "token-create", "--json").stdout)
    # The first by the local operator (user@host), the second by the token, on the server.
    assert [e["actor"] for e in events] == [WHO, "root"]
    assert cli(*remote, "token", "revoke", "ci").exit_code == 0
    assert [t["name"] for t in json.loads(cli(*remote, "token", "list", "--json").stdout)] == [
        "root"
    ]
    assert not Path(".statekeeper").exists(), "--server read or wrote a local store"
    denied = cli("--server", server.url, "audit")
    assert denied.exit_code == 1 and "--token" in denied.stderr


# -- one local identity --------------------------------------------------------------------


def test_one_local_identity_in_the_audit_trail(cli: CliFn, tmp_path: Path) -> None:
    assert cli("push", NAME, _file(tmp_path, 1)).exit_code == 0
    assert cli("token", "create", "ci", "--scope", "**:read").exit_code == 0
    assert cli("token", "revoke", "ci").exit_code == 0
    events = json.loads(cli("audit", "--json").stdout)
    assert {e["action"] for e in events} >= {"push", "token-create", "token-revoke"}
    assert {e["actor"] for e in events} == {WHO}


# -- one duration grammar --------------------------------------------------------------------


def test_durations_read_alike_everywhere(cli: CliFn, tmp_path: Path) -> None:
    assert cli("push", NAME, _file(tmp_path, 1)).exit_code == 0  # reads need a store
    assert cli("locks", "reap", "--older-than", "1h30m", "--dry-run").exit_code == 0
    assert cli("audit", "--since", "1w").exit_code == 0
    for args in (
        ["locks", "reap", "--older-than", "1.5h"],
        ["doctor", "--bucket", "b", "--stale-after", "90 minutes"],
        ["token", "create", "ci", "--scope", "**:read", "--expires", "30m1h"],
    ):
        r = cli(*args)
        assert r.exit_code == 2, (args, r.stderr)
        assert "is not a duration" in r.stderr and "1h30m" in r.stderr, r.stderr


# -- help panels ---------------------------------------------------------------------------


def test_help_groups_commands_into_panels(cli_process: CliFn) -> None:
    r = cli_process("--help")
    assert r.exit_code == 0
    out = r.stdout
    panels = ["Server", "States", "Locks", "AWS setup", "Security"]
    at = {p: out.index(f"─ {p} ") for p in panels}
    # each command is listed in its panel: after its title, before the next one
    order = sorted(panels, key=at.__getitem__)
    members = {
        "Server": ["serve"],
        "States": ["states", "show", "pull", "push", "history", "diff", "rollback", "migrate"],
        "Locks": ["locks", "unlock"],
        "AWS setup": ["bootstrap", "doctor", "iam-policy"],
        "Security": ["token", "audit", "encryption"],
    }
    for i, panel in enumerate(order):
        end = at[order[i + 1]] if i + 1 < len(order) else len(out)
        body = out[at[panel] : end]
        for command in members[panel]:
            assert f"│ {command} " in body, (panel, command, body)
    assert "Global options" in out and "--data-dir" in out


# -- tables ------------------------------------------------------------------------------


LONG = "project/terraform-with-a-rather-long-name/terraform.tfstate"


def _lock(data: Path, name: str) -> LockInfo:
    services = Services.build(load_settings({"data_dir": data}, env={}))
    try:
        body = json.dumps(
            {
                "ID": "3f0e8b1c-6e1f-4a57-9d55-1c2f8a9e0b7d",
                "Operation": "OperationTypeApply",
                "Who": "someone-with-a-long-name@build-host-0042.example.internal",
                "Version": "1.15.0",
                "Created": "2026-01-01T00:00:00Z",
                "Path": name,
                "Info": "",
            }
        ).encode()
        return services.locks.lock(StateName(name), body, Caller(actor="ci"))
    finally:
        services.close()


def _env() -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")},
        "PYTHONPATH": str(SRC),
        "COLUMNS": "80",
        "LINES": "40",
    }


def test_piped_tables_are_full_tab_separated_rows(tmp_path: Path) -> None:
    data = tmp_path / "d"
    held = _lock(data, LONG)
    out = subprocess.run(
        [sys.executable, "-m", "statekeeper", "--data-dir", str(data), "locks"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=True,
    ).stdout
    header, row, *rest = out.splitlines()
    assert not rest
    columns = ["NAME", "ID", "OPERATION", "WHO", "CREATED", "AGE", "KIND", "MODE"]
    assert header.split("\t") == columns
    cells = row.split("\t")
    assert cells[:4] == [LONG, held.id, "OperationTypeApply", held.who]


def test_terminal_tables_never_split_a_cell(tmp_path: Path) -> None:
    data = tmp_path / "d"
    held = _lock(data, LONG)
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "statekeeper", "--data-dir", str(data), "locks"],
        stdin=child,
        stdout=child,
        stderr=child,
        env={**_env(), "TERM": "xterm"},
        close_fds=True,
    )
    os.close(child)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(main)
    screen = b"".join(chunks).decode(errors="replace").replace("\r", "")
    assert proc.returncode == 0, screen
    for word in (LONG, held.id, held.who):
        assert word in screen, f"{word!r} was split:\n{screen}"


# -- rollback asks only when it can proceed ------------------------------------------------


def test_rollback_checks_the_lock_before_asking(cli: CliFn, tmp_path: Path) -> None:
    assert cli("push", NAME, _file(tmp_path, 1)).exit_code == 0
    assert cli("push", NAME, _file(tmp_path, 2)).exit_code == 0
    held = _lock(Path(".statekeeper"), NAME)
    r = cli("rollback", NAME, "--to", "serial:1", input="y\n")
    assert r.exit_code == 3
    assert "Proceed?" not in r.stderr + r.stdout
    assert held.id in r.stderr and "locked" in r.stderr


# -- migrate: provenance and its own --force ---------------------------------------------


def test_migrated_versions_keep_writer_and_time(cli: CliFn, tmp_path: Path) -> None:
    source = tmp_path / "source"
    services = Services.build(load_settings({"data_dir": source}, env={}))
    try:
        alice = Caller(actor="alice@laptop")
        services.states.write(StateName(NAME), state_bytes(1), alice)
        services.states.write(StateName(NAME), state_bytes(2), alice)
        written = [v.created for v in services.history.versions(StateName(NAME), alice)]
    finally:
        services.close()
    dest = f"sqlite:///{tmp_path / 'dest.db'}"
    r = cli(
        "migrate",
        "--from",
        f"sqlite:///{source / 'statekeeper.db'}",
        "--to",
        dest,
        "--with-history",
    )
    assert r.exit_code == 0, r.stderr
    history = json.loads(cli("--store", dest, "history", NAME, "--json").stdout)
    assert [(h["serial"], h["actor"], h["migrated_by"]) for h in history] == [
        (2, "alice@laptop", WHO),
        (1, "alice@laptop", WHO),
    ]
    from statekeeper.times import format_rfc3339

    assert [h["created"] for h in history] == [format_rfc3339(t) for t in written]


def test_migrate_conflict_suggests_migrate_force(cli: CliFn, tmp_path: Path) -> None:
    dest = f"sqlite:///{tmp_path / 'dest.db'}"
    other = "5f8a0d5c-0000-4000-8000-000000000000"
    assert cli("--store", dest, "push", NAME, _file(tmp_path, 5, other)).exit_code == 0
    # The dry run says what the real run will: refused, exit 1.
    dry = cli("migrate", "--from", _file(tmp_path, 1), "--name", NAME, "--to", dest, "--dry-run")
    said = " ".join(dry.stdout.split())
    assert dry.exit_code == 1, said
    assert f"{NAME}: would be refused: cannot import state with lineage" in said
    r = cli("migrate", "--from", _file(tmp_path, 1), "--name", NAME, "--to", dest)
    assert r.exit_code == 1
    assert "statekeeper migrate --force" in r.stderr and "push --force" not in r.stderr
    assert "copied before this error, and kept: nothing" in r.stderr


@pytest.mark.parametrize(
    ("args", "hoisted"),
    [
        (["pull", "N", "--store", "s3://b"], ["--store", "s3://b", "pull", "N"]),
        (["pull", "N", "--store=s3://b"], ["--store=s3://b", "pull", "N"]),
        (
            ["locks", "--locks", "a", "reap", "--locks", "b", "--older-than", "1h"],
            ["--locks", "a", "--locks", "b", "locks", "reap", "--older-than", "1h"],
        ),
        (["push", "N", "--", "--store"], ["push", "N", "--", "--store"]),
        (["push", "N", "--store"], ["push", "N", "--store"]),  # click names the missing value
    ],
)
def test_hoist_moves_global_options_in_front(args: list[str], hoisted: list[str]) -> None:
    from statekeeper.cli.options import hoist

    assert hoist(args) == hoisted


def test_start_up_imports_nothing_heavy() -> None:
    code = (
        "import sys, statekeeper.cli\n"
        "heavy = ('rich', 'boto3', 'botocore', 'pydantic', 'fastapi', 'httpx', 'uvicorn')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True
    ).stdout
    assert out.strip() == "[]"

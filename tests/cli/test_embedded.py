"""Every operator command on the embedded store: output, JSON, exit codes, messages."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from statekeeper.testing.statefiles import instance, state_bytes

CliFn = Callable[..., Any]  # the ``cli`` fixtures of conftest.py

NAME = "team/app.tfstate"
SECRET = [[{"type": "get_attr", "value": "password"}]]


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _seed(cli: CliFn, tmp_path: Path) -> tuple[bytes, bytes]:
    v1 = state_bytes(
        1,
        resources=[
            instance(
                "terraform_data", "a", {"input": "one", "password": "hunter2"}, sensitive=SECRET
            )
        ],
        outputs={"pw": {"value": "s3cret", "type": "string", "sensitive": True}},
    )
    v2 = state_bytes(
        2,
        resources=[
            instance(
                "terraform_data", "a", {"input": "two", "password": "hunter3"}, sensitive=SECRET
            ),
            instance("terraform_data", "b", {}),
        ],
        outputs={
            "pw": {"value": "s3cret2", "type": "string", "sensitive": True},
            "o": {"value": "hi", "type": "string"},
        },
    )
    assert cli("push", NAME, _write(tmp_path / "v1.tfstate", v1)).exit_code == 0
    r = cli("push", NAME, _write(tmp_path / "v2.tfstate", v2), "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["version"]["serial"] == 2
    return v1, v2


def test_states_show_history_diff(cli: CliFn, tmp_path: Path) -> None:
    _seed(cli, tmp_path)
    assert (
        cli("push", "env:/dev/" + NAME, _write(tmp_path / "w.tfstate", state_bytes(1))).exit_code
        == 0
    )

    rows = json.loads(cli("states", "--json").stdout)
    # A key's workspace states follow it, marked with their workspace.
    expected = [(NAME, None), ("env:/dev/" + NAME, "dev")]
    assert [(r["name"], r["workspace"]) for r in rows] == expected
    assert rows[0]["serial"] == 2 and rows[0]["locked"] is False and rows[0]["versions"] is None
    under = json.loads(cli("states", "team/", "--details", "--json").stdout)
    assert [(r["name"], r["versions"]) for r in under] == [(NAME, 2), ("env:/dev/" + NAME, 1)]
    table = cli("states").stdout
    assert NAME in table and "SERIAL" in table

    shown = json.loads(cli("show", NAME, "--json").stdout)
    assert shown["resources"] == ["terraform_data.a", "terraform_data.b"]
    assert shown["outputs"]["pw"] == {"value": None, "sensitive": True}
    old = json.loads(cli("show", NAME, "--version", "serial:1", "--json").stdout)
    assert old["version"]["serial"] == 1 and old["version"]["is_current"] is False
    outputs = cli("show", NAME, "--outputs").stdout
    assert 'o = "hi"' in outputs and "pw = (sensitive)" in outputs and "s3cret" not in outputs

    history = json.loads(cli("history", NAME, "--json").stdout)
    assert [(h["serial"], h["resources_changed"], h["is_current"]) for h in history] == [
        (2, 2, True),
        (1, 1, False),
    ]
    assert history[0]["actor"].count("@") == 1, "who = user@host"

    d = json.loads(cli("diff", NAME, "--json").stdout)
    assert d["added"] == ["terraform_data.b"] and d["from"] == history[1]["version_id"]
    changes = {c["path"]: c for c in d["changed"][0]["changes"]}
    assert changes["input"]["before"] == "one" and changes["password"]["sensitive"]
    text = cli("diff", NAME).stdout
    assert "+ terraform_data.b" in text and "password: (sensitive) -> (sensitive)" in text
    for secret in ("hunter2", "hunter3", "s3cret"):
        assert secret not in text and secret not in json.dumps(d)
    back = json.loads(cli("diff", NAME, "serial:2", "serial:1", "--json").stdout)
    assert back["removed"] == ["terraform_data.b"]


def test_pull_is_verbatim_and_rollback_bumps_the_serial(cli: CliFn, tmp_path: Path) -> None:
    v1, v2 = _seed(cli, tmp_path)
    assert cli("pull", NAME).stdout_bytes == v2
    out = tmp_path / "old.tfstate"
    assert cli("pull", NAME, "--version", "serial:1", "-o", str(out)).exit_code == 0
    assert out.read_bytes() == v1

    refused = cli("rollback", NAME, "--to", "serial:1", input="n\n")
    assert refused.exit_code == 1 and "nothing was changed" in refused.stderr
    asked = cli("rollback", NAME, "--to", "serial:1", input="y\n")
    assert asked.exit_code == 0, asked.stderr
    assert "1 are dropped" in asked.stdout and "serial 3" in asked.stdout
    now = cli("pull", NAME).stdout_bytes
    assert now == v1.replace(b'"serial": 1,', b'"serial": 3,')
    r = json.loads(cli("rollback", NAME, "--to", "serial:2", "--yes", "--json").stdout)
    assert r["version"]["serial"] == 4 and r["restored_serial"] == 2


def test_locks_unlock_and_reap(cli: CliFn, tmp_path: Path) -> None:
    from statekeeper.app import Services
    from statekeeper.security.caller import Caller
    from statekeeper.settings import load_settings
    from statekeeper.terraform.lockinfo import LockInfo
    from statekeeper.terraform.names import StateName

    _seed(cli, tmp_path)
    services = Services.build(load_settings({}, env={}))
    try:
        held = LockInfo.new("OperationTypeApply", "bob@ci")
        services.locks.lock(StateName(NAME), held.body, Caller("bob"))
        plan = LockInfo.new("OperationTypePlan", "carol@ci")
        services.locks.lock(StateName("other.tfstate"), plan.body, Caller("carol"))
    finally:
        services.close()

    rows = json.loads(cli("locks", "--json").stdout)
    assert [(r["name"], r["who"], r["operation"]) for r in rows] == [
        ("other.tfstate", "carol@ci", "OperationTypePlan"),
        (NAME, "bob@ci", "OperationTypeApply"),
    ]
    assert json.loads(cli("locks", "team/", "--json").stdout)[0]["id"] == held.id
    assert "bob@ci" in cli("locks").stdout
    states = json.loads(cli("states", "--json").stdout)
    assert states[0]["lock"]["who"] == "bob@ci"

    blocked = cli("rollback", NAME, "--to", "serial:1", "--yes")
    assert blocked.exit_code == 3 and "bob@ci" in blocked.stderr
    hint = cli("unlock", NAME)
    assert hint.exit_code == 3 and f"--id {held.id}" in hint.stderr
    assert cli("unlock", NAME, "--id", "wrong").exit_code == 3

    dry = json.loads(
        cli(
            "locks", "reap", "--older-than", "0s", "--operation", "plan", "--dry-run", "--json"
        ).stdout
    )
    assert [(r["name"], r["removed"]) for r in dry] == [("other.tfstate", False)]
    reaped = cli("locks", "reap", "--older-than", "0s", "--operation", "plan")
    assert "removed lock" in reaped.stdout and "carol@ci" in reaped.stdout
    assert cli("locks", "reap", "--older-than", "1d").stderr.startswith("no lock")
    gone = json.loads(cli("unlock", NAME, "--id", held.id, "--json").stdout)
    assert gone["removed"] and gone["who"] == "bob@ci"
    assert cli("locks", "--json").stdout.strip() == "[]"


def test_migrate_between_stores_and_from_a_file(cli: CliFn, tmp_path: Path) -> None:
    v1, v2 = _seed(cli, tmp_path)
    dest = f"sqlite:///{tmp_path / 'dest.db'}"
    r = cli(
        "migrate",
        "--from",
        "sqlite:///.statekeeper/statekeeper.db",
        "--to",
        dest,
        "--with-history",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["copied"] == 2
    pulled = [
        cli("--store", dest, "pull", NAME, "--version", f"serial:{n}").stdout_bytes for n in (1, 2)
    ]
    assert pulled == [v1, v2]
    again = json.loads(
        cli(
            "migrate",
            "--from",
            "sqlite:///.statekeeper/statekeeper.db",
            "--to",
            dest,
            "--with-history",
            "--json",
        ).stdout
    )
    assert again["copied"] == 0 and again["skipped"] == 2

    f = _write(tmp_path / "terraform.tfstate", state_bytes(7, lineage="file"))
    assert cli("migrate", "--from", f, "--to", dest).exit_code == 2
    ok = cli("migrate", "--from", f, "--to", dest, "--name", "imported.tfstate")
    assert ok.exit_code == 0 and "copied 1 version" in ok.stdout
    assert (
        cli("--store", dest, "pull", "imported.tfstate").stdout_bytes
        == (tmp_path / "terraform.tfstate").read_bytes()
    )


def test_errors_are_messages_with_exit_codes(cli_process: CliFn, tmp_path: Path) -> None:
    seed = _write(tmp_path / "seed", state_bytes(1))
    assert cli_process("push", "seed.tfstate", seed).exit_code == 0  # a store to read
    missing = cli_process("show", "nope.tfstate")
    assert missing.exit_code == 1 and "there is no state named nope.tfstate" in missing.stderr
    bad_name = cli_process("history", "a//b")
    assert bad_name.exit_code == 2 and "empty" in bad_name.stderr
    usage = cli_process("rollback", "x.tfstate")
    assert usage.exit_code == 2 and "--to" in usage.stderr
    duration = cli_process("locks", "reap", "--older-than", "soon")
    assert duration.exit_code == 2 and "not a duration" in duration.stderr
    bad_file = _write(tmp_path / "junk", b"hello")
    junk = cli_process("push", "x.tfstate", bad_file)
    assert junk.exit_code == 2 and "could not be parsed as JSON" in junk.stderr
    unknown = cli_process("--store", "ftp://x", "states")
    assert unknown.exit_code == 2 and "known schemes" in unknown.stderr
    down = cli_process("--server", "http://127.0.0.1:9", "states")
    assert down.exit_code == 1 and "cannot reach the statekeeper server" in down.stderr
    for r in (missing, bad_name, usage, duration, junk, unknown, down):
        assert "Traceback" not in r.stderr


def test_every_command_has_help(cli: CliFn) -> None:
    commands = [[], ["locks"], ["locks", "reap"], ["unlock"], ["states"], ["show"], ["pull"]]
    commands += [["push"], ["history"], ["diff"], ["rollback"], ["migrate"], ["serve"]]
    for args in commands:
        r = cli(*args, "--help")
        assert r.exit_code == 0, (args, r.stderr)
        assert "Usage" in r.stdout


def test_markup_in_names_and_addresses_is_printed_as_is(cli: CliFn, tmp_path: Path) -> None:
    v1 = state_bytes(1, resources=[instance("t", "x", {"a": "[red]"}, index_key="[bold]")])
    v2 = state_bytes(2, resources=[instance("t", "x", {"a": "[/]"}, index_key="[bold]")])
    cli("push", NAME, _write(tmp_path / "1", v1))
    cli("push", NAME, _write(tmp_path / "2", v2))
    r = cli("diff", NAME)
    assert r.exit_code == 0, r.stderr
    assert 't.x["[bold]"]' in r.stdout and '"[red]" -> "[/]"' in r.stdout

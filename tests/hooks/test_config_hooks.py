"""Subscriptions from the config file's ``[[hooks]]``: their secret from the environment
or a file, delivered like the others, listed as from the config, not removable by command.

The secret is read by what signs (``serve`` at start-up, its delivery worker, ``hooks
test``), not when settings load: every other command works where it is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.hooks.test_webhooks import FAST, NAME, SECRET, Receiver, receiver  # noqa: F401
from tests.security.support import state_json
from tests.test_config_refusals import serve as refused_serve

from statekeeper.app import Services
from statekeeper.errors import ConfigError
from statekeeper.settings import load_settings
from statekeeper.testing.processes import SRC, StatekeeperServer

HOOK = """
[[hooks]]
name = "chatops"
url = "{url}"
events = ["state.written"]
states = ["team/**"]
{secret}
"""


def _config(tmp_path: Path, url: str, secret: str = 'secret_env = "CHATOPS_SECRET"') -> Path:
    path = tmp_path / "statekeeper.toml"
    path.write_text(HOOK.format(url=url, secret=secret))
    return path


WITH_SECRET = {"CHATOPS_SECRET": SECRET}


def _cli(
    workdir: Path, config: Path, *args: str, env: dict[str, str] = WITH_SECRET
) -> subprocess.CompletedProcess[str]:
    """``statekeeper --config CONFIG ARGS`` with ``env`` (by default CHATOPS_SECRET set)."""
    base = {k: v for k, v in os.environ.items() if k != "CHATOPS_SECRET"}
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", "--config", str(config), *args],
        cwd=workdir,
        env={**base, "PYTHONPATH": str(SRC), "COLUMNS": "200", **FAST, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_configured_hook_is_delivered_listed_as_from_the_config_and_not_removable(
    tmp_path: Path,
    serve: Callable[..., StatekeeperServer],
    receiver: Receiver,  # noqa: F811
) -> None:
    workdir = tmp_path / "server"
    workdir.mkdir()
    config = _config(tmp_path, receiver.url)
    added = _cli(workdir, config, "hooks", "add", "ops", "--url", receiver.url, "--secret", "x")
    assert added.returncode == 0, added.stderr
    server = serve("--config", str(config), workdir=workdir, env={**FAST, "CHATOPS_SECRET": SECRET})
    written = httpx.post(server.state_url(NAME), content=state_json(1), timeout=30)
    assert written.status_code == 200
    receiver.wait_for(2)  # chatops (configured) and ops (added), one each
    chatops = [d for d in receiver.deliveries if d["verified"]]
    assert len(chatops) == 1, "signed with the secret from CHATOPS_SECRET"
    assert chatops[0]["event"]["type"] == "io.statekeeper.state.written"

    listed = _cli(workdir, config, "hooks", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t")[:3] for line in listed.stdout.splitlines()[1:]]
    assert rows == [["chatops", "config", "env CHATOPS_SECRET"], ["ops", "command", "stored"]]
    as_json = json.loads(_cli(workdir, config, "hooks", "list", "--json").stdout)
    assert [(h["name"], h["source"], h["secret_source"]) for h in as_json] == [
        ("chatops", "config", "env CHATOPS_SECRET"),
        ("ops", "command", "stored"),
    ]
    assert SECRET not in listed.stdout and SECRET not in json.dumps(as_json)

    refused = _cli(workdir, config, "hooks", "remove", "chatops")
    assert refused.returncode != 0
    assert "defined in the config file" in refused.stderr and "Traceback" not in refused.stderr
    replaced = _cli(workdir, config, "hooks", "add", "chatops", "--url", receiver.url)
    assert replaced.returncode != 0 and "defined in the config file" in replaced.stderr
    assert _cli(workdir, config, "hooks", "remove", "ops").returncode == 0


def test_the_delivery_worker_signs_with_the_secret_from_a_file(
    tmp_path: Path,
    serve: Callable[..., StatekeeperServer],
    receiver: Receiver,  # noqa: F811
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    config = _config(tmp_path, receiver.url, f'secret_file = "{secret}"')
    server = serve("--config", str(config), env=FAST)
    written = httpx.post(server.state_url(NAME), content=state_json(1), timeout=30)
    assert written.status_code == 200
    receiver.wait_for(1)
    assert receiver.deliveries[0]["verified"], "signed with the file's secret, read by the worker"
    assert SECRET not in server.log()


@pytest.mark.parametrize("where", ["env", "missing file", "empty file"])
def test_without_its_secret_only_what_signs_a_hook_is_refused(
    tmp_path: Path,
    where: str,
    receiver: Receiver,  # noqa: F811
) -> None:
    """An operator's machine sharing the server's config file, without the hook's secret:
    the commands that deliver nothing work; ``serve`` and ``hooks test`` refuse, naming
    the variable or the file; once the secret is there, ``hooks test`` signs with it."""
    file = tmp_path / "chatops-secret"
    if where == "env":
        line, source, says = 'secret_env = "CHATOPS_SECRET"', "env CHATOPS_SECRET", "CHATOPS_SECRET"
    else:
        line, source = f'secret_file = "{file}"', f"file {file}"
        says = f"No such file or directory: '{file}'"
        if where == "empty file":
            file.write_text("\n")
            says = f"its secret_file {file} is empty"
    config = _config(tmp_path, receiver.url, line)
    workdir = tmp_path / "laptop"
    workdir.mkdir()
    (workdir / "s.json").write_bytes(state_json(1))

    for args in (("push", NAME, "s.json"), ("states",), ("pull", NAME), ("hooks", "deliveries")):
        ran = _cli(workdir, config, *args, env={})
        assert ran.returncode == 0, (args, ran.stderr)
    listed = _cli(workdir, config, "hooks", "list", env={})
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split("\t")[:3] == ["chatops", "config", source]
    (as_json,) = json.loads(_cli(workdir, config, "hooks", "list", "--json", env={}).stdout)
    assert as_json["secret_source"] == source

    tested = _cli(workdir, config, "hooks", "test", "chatops", env={})
    assert tested.returncode == 2, tested.stderr
    assert "hook chatops: " in tested.stderr and says in tested.stderr
    assert "Traceback" not in tested.stderr
    code, stderr = refused_serve(workdir, "--config", str(config), env=FAST)
    assert code == 2 and "hook chatops: " in stderr and says in stderr, stderr
    assert receiver.deliveries == []

    # The secret where it is looked for (the variable set, the file filled): read now.
    file.write_text(SECRET + "\n")
    tested = _cli(workdir, config, "hooks", "test", "chatops", env=WITH_SECRET)
    assert tested.returncode == 0, tested.stderr
    (ping,) = receiver.deliveries
    assert ping["verified"] and ping["event"]["type"] == "io.statekeeper.ping"
    for output in (tested.stdout, tested.stderr, listed.stdout, json.dumps(as_json)):
        assert SECRET not in output


@pytest.mark.parametrize(
    ("secret", "url", "says"),
    [
        ("", "https://hooks.example.com/x", "secret_env"),
        ('secret = "s"\nsecret_env = "X"', "https://hooks.example.com/x", "one of"),
        ('secret = "s"\ncolour = "red"', "https://hooks.example.com/x", "colour"),
        ("secret_env = 5", "https://hooks.example.com/x", "secret_env is a string"),
    ],
)
def test_a_bad_hook_table_is_a_config_error_naming_it(
    tmp_path: Path, secret: str, url: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings(config_file=_config(tmp_path, url, secret), env={})


def test_settings_keep_where_the_secret_is_and_read_it_only_when_asked(tmp_path: Path) -> None:
    missing = _config(tmp_path, "https://hooks.example.com/x", 'secret_file = "/nowhere/s"')
    (hook,) = load_settings(config_file=missing, env={}).hooks
    assert str(hook.secret) == "file /nowhere/s"
    with pytest.raises(ConfigError, match="hook chatops: cannot read its secret_file"):
        hook.secret.read(hook.name, {})
    inline = _config(tmp_path, "https://hooks.example.com/x", f'secret = "{SECRET}"')
    settings = load_settings(config_file=inline, env={})
    (hook,) = settings.hooks
    assert str(hook.secret) == "inline" and hook.secret.read(hook.name, {}) == SECRET
    assert SECRET not in repr(settings) and SECRET not in repr(hook)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://169.254.169.254/latest", "a link-local or cloud metadata address"),
        ("https://receiver.invalid/x", "the hook URL's host 'receiver.invalid' cannot be resolved"),
    ],
)
def test_a_hook_the_server_would_refuse_stops_it_at_start_only(
    tmp_path: Path, url: str, says: str
) -> None:
    """``serve`` refuses a hook that leads nowhere deliveries may go; an operator's
    commands, which deliver nothing, do not look where it leads (a laptop may not
    resolve the receivers' names)."""
    config = _config(tmp_path, url, 'secret = "s"')
    workdir = tmp_path / "laptop"
    workdir.mkdir()
    (workdir / "s.json").write_bytes(state_json(1))
    for args in (("push", NAME, "s.json"), ("states",), ("hooks", "list")):
        ran = _cli(workdir, config, *args, env={})
        assert ran.returncode == 0, (args, ran.stderr)
    code, stderr = refused_serve(workdir, "--config", str(config), env=FAST)
    assert code == 2, stderr
    assert "hooks: the hook 'chatops' in the config file: " in stderr and says in stderr


def test_a_hook_url_of_another_scheme_is_a_config_error(tmp_path: Path) -> None:
    config = _config(tmp_path, "ftp://hooks.example.com/x", 'secret = "s"')
    settings = load_settings({"data_dir": tmp_path / "d"}, config_file=config, env={})
    with pytest.raises(ConfigError, match="http"):
        Services.build(settings).hooks  # noqa: B018 - building them is what refuses


def test_hooks_from_the_environment_are_a_json_array_of_the_same_tables() -> None:
    hooks = [{"name": "ops", "url": "https://hooks.example.com/x", "secret_env": "OPS_SECRET"}]
    env = {"STATEKEEPER_HOOKS": json.dumps(hooks), "OPS_SECRET": SECRET}
    (hook,) = load_settings(env=env).hooks
    assert (hook.name, hook.events, hook.states) == ("ops", None, None)
    assert hook.secret.read(hook.name, env) == SECRET
    with pytest.raises(ConfigError, match="STATEKEEPER_HOOKS"):
        load_settings(env={"STATEKEEPER_HOOKS": "[[hooks]]"})

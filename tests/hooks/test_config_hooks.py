"""Subscriptions from the config file's ``[[hooks]]``: their secret from the environment
or a file, delivered like the others, listed as from the config, not removable by command."""

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


def _cli(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", "--config", str(config), *args],
        cwd=workdir,
        env={
            **os.environ,
            "PYTHONPATH": str(SRC),
            "COLUMNS": "200",
            "CHATOPS_SECRET": SECRET,
            **FAST,
        },
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
    rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:]}
    assert rows == {"chatops": "config", "ops": "command"}
    as_json = json.loads(_cli(workdir, config, "hooks", "list", "--json").stdout)
    assert [(h["name"], h["source"]) for h in as_json] == [
        ("chatops", "config"),
        ("ops", "command"),
    ]
    assert SECRET not in listed.stdout and SECRET not in json.dumps(as_json)

    refused = _cli(workdir, config, "hooks", "remove", "chatops")
    assert refused.returncode != 0
    assert "defined in the config file" in refused.stderr and "Traceback" not in refused.stderr
    replaced = _cli(workdir, config, "hooks", "add", "chatops", "--url", receiver.url)
    assert replaced.returncode != 0 and "defined in the config file" in replaced.stderr
    assert _cli(workdir, config, "hooks", "remove", "ops").returncode == 0


def test_the_secret_comes_from_a_file_too(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    config = _config(tmp_path, "https://hooks.example.com/x", f'secret_file = "{secret}"')
    (hook,) = load_settings(config_file=config, env={}).hooks
    assert hook.secret == SECRET
    assert SECRET not in repr(load_settings(config_file=config, env={}))


@pytest.mark.parametrize(
    ("secret", "url", "says"),
    [
        ('secret_env = "CHATOPS_SECRET"', "https://hooks.example.com/x", "CHATOPS_SECRET"),
        ("", "https://hooks.example.com/x", "secret_env"),
        ('secret_file = "/nowhere/secret"', "https://hooks.example.com/x", "secret_file"),
        ('secret = "s"\nsecret_env = "X"', "https://hooks.example.com/x", "one of"),
        ('secret = "s"\ncolour = "red"', "https://hooks.example.com/x", "colour"),
    ],
)
def test_a_bad_hook_table_is_a_config_error_naming_it(
    tmp_path: Path, secret: str, url: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings(config_file=_config(tmp_path, url, secret), env={})


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://169.254.169.254/latest", "chatops"),  # the guard: cloud metadata
        ("ftp://hooks.example.com/x", "http"),
    ],
)
def test_a_hook_the_server_would_refuse_stops_it_at_start(
    tmp_path: Path, url: str, says: str
) -> None:
    config = _config(tmp_path, url, 'secret = "s"')
    settings = load_settings({"data_dir": tmp_path / "d"}, config_file=config, env={})
    with pytest.raises(ConfigError, match=says):
        Services.build(settings)


def test_hooks_from_the_environment_are_a_json_array_of_the_same_tables() -> None:
    hooks = [{"name": "ops", "url": "https://hooks.example.com/x", "secret_env": "OPS_SECRET"}]
    env = {"STATEKEEPER_HOOKS": json.dumps(hooks), "OPS_SECRET": SECRET}
    (hook,) = load_settings(env=env).hooks
    assert (hook.name, hook.secret, hook.events, hook.states) == ("ops", SECRET, None, None)
    with pytest.raises(ConfigError, match="STATEKEEPER_HOOKS"):
        load_settings(env={"STATEKEEPER_HOOKS": "[[hooks]]"})

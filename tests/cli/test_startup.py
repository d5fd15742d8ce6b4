"""The CLI's start-up path: what ``statekeeper --help`` and ``locks --json`` import.

Structural, not timed: a real process runs the command under ``python -X
importtime`` and the test reads which modules it imported. A heavy import
creeping back onto the path fails here whatever the machine's speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from statekeeper.app import Services
from statekeeper.cli import COMMANDS, resolve
from statekeeper.cli import commands as typer_commands
from statekeeper.settings import Settings
from statekeeper.testing.processes import SRC

# Never on either path: the CLI frameworks' heavy halves, the server, AWS, the
# HTTP clients, the index, the views (pydantic) and what only writes need.
HEAVY = [
    "typer",
    "rich",
    "pydantic",
    "boto3",
    "botocore",
    "uvicorn",
    "fastapi",
    "starlette",
    "httpx",
    "jinja2",
    "cryptography",
    "http.client",
    "statekeeper.server",
    "statekeeper.inventory",
    "statekeeper.state.views",
    "statekeeper.state.diff",
    # What only writes, large bodies and the webhook sender need.
    "tempfile",
    "concurrent.futures",
    "zstandard",
    # What only reading TOML, resolving a webhook's host, making a token, checking a
    # state body, the server's metrics and reaping locks need.
    "tomllib",
    "socket",
    "secrets",
    "statekeeper.terraform.statestream",
    "statekeeper.terraform.fastcheck",
    "simdjson",
    "statekeeper.storage.metered",
    "statekeeper.state.reap",
    # Built on first use: compaction on the first event, the trash when asked for; the
    # webhooks on the first event, tokens, reading and writing states and their history
    # when a command uses them (``Services``' properties).
    "statekeeper.state.compaction",
    "statekeeper.state.trash",
    "statekeeper.hooks",
    "statekeeper.security.tokens",
    "statekeeper.security.tokenstores",
    "statekeeper.state.service",
    "statekeeper.state.reads",
    "statekeeper.state.history",
    "statekeeper.state.version",
]
# Not even the store for --help: the page comes from the root's table.
HELP_ALSO = ["statekeeper.app", "statekeeper.cli.context", "sqlite3", "click.testing"]


def _imported(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[bytes], set[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "statekeeper", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(SRC)},
        capture_output=True,
        timeout=60,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.decode().splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return proc, modules


def _heavy(modules: set[str], names: list[str]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_help_imports_no_command_and_no_framework(tmp_path: Path) -> None:
    proc, modules = _imported(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = proc.stdout.decode()
    assert "─ Locks " in out and "│ locks " in out and "--data-dir" in out
    assert "statekeeper.cli" in modules  # the probe sees our imports at all
    assert not _heavy(modules, HEAVY + HELP_ALSO)
    loaded = [m for m in modules if m.startswith("statekeeper.cli.") and m != "statekeeper.cli"]
    assert sorted(loaded) == ["statekeeper.cli.options", "statekeeper.cli.roothelp"], loaded


def test_locks_json_on_an_empty_store_imports_nothing_heavy(tmp_path: Path) -> None:
    # An empty store made beforehand: 'locks' opens an existing store only.
    Services.build(Settings(data_dir=tmp_path / ".statekeeper")).close()
    proc, modules = _imported(tmp_path, "locks", "--json")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().strip() == "[]"
    assert "statekeeper.app" in modules and "sqlite3" in modules  # it did open the store
    assert not _heavy(modules, HEAVY)


def _first_paragraph(text: str | None) -> str:
    return " ".join((text or "").split("\n\n")[0].split())


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_root_table_says_what_each_command_says(name: str) -> None:
    """The root's --help is printed from COMMANDS: each short help and panel there is
    the command's own."""
    entry = COMMANDS[name]
    command = resolve(name)
    assert " ".join(entry.short_help.split()) == _first_paragraph(
        getattr(command, "short_help", None) or command.help
    )
    if entry.typer:
        assert command.rich_help_panel == entry.panel


def test_every_typer_command_is_in_the_root_table() -> None:
    for name in COMMANDS:
        resolve(name)  # loads every command module
    registered = set(typer.main.get_command(typer_commands.app).commands)  # type: ignore[attr-defined]
    assert registered == {n for n, e in COMMANDS.items() if e.typer}

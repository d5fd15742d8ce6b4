"""docs/cli.md against the program: every command has its section, every option is named,
and the page's opening names every command in its ``--help`` group.

The command tree is read from the CLI itself (the same objects ``--help``
prints), so a new command or option without documentation fails here, and so
does a documented command that no longer exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statekeeper.cli import COMMANDS, app, resolve

CLI_MD = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
_HEADING = re.compile(r"^(#{1,3}) `statekeeper (?P<path>[a-z][a-z -]*?)(?: [A-Z\[-].*)?`", re.M)


# Commands are click's or typer's (typer has its own copy of click): told apart by shape.
def _is_group(cmd: object) -> bool:
    return hasattr(cmd, "commands")


def _commands() -> Iterator[tuple[str, object]]:
    def walk(cmd: object, path: tuple[str, ...]) -> Iterator[tuple[str, object]]:
        yield " ".join(path), cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            if not getattr(sub, "hidden", False):
                yield from walk(sub, (*path, name))

    for name in COMMANDS:
        yield from walk(resolve(name), (name,))


def _long_name(option: Any) -> str:
    return max((o for o in option.opts if o.startswith("--")), key=len)


def _options(cmd: object) -> list[str]:
    params = getattr(cmd, "params", [])
    return [
        _long_name(p)
        for p in params
        if getattr(p, "param_type_name", "") == "option" and p.opts != ["--help"]
    ]


GLOBAL_OPTIONS = set(_options(app))
ALL_COMMANDS = dict(_commands())


def _sections() -> dict[str, str]:
    found = list(_HEADING.finditer(CLI_MD))
    sections: dict[str, str] = {}
    for m, nxt in zip(found, [*found[1:], None], strict=True):
        end = nxt.start() if nxt else len(CLI_MD)
        sections[m.group("path").strip()] = CLI_MD[m.start() : end]
    return sections


SECTIONS = _sections()


@pytest.mark.parametrize("path", sorted(ALL_COMMANDS), ids=str)
def test_every_command_has_a_section_naming_its_options(path: str) -> None:
    command = ALL_COMMANDS[path]
    if _is_group(command) and not getattr(command, "invoke_without_command", False):
        return  # a bare group (token, encryption): its subcommands have the sections
    assert path in SECTIONS, f"docs/cli.md has no section '### `statekeeper {path} …`'"
    missing = [o for o in _options(command) if o not in GLOBAL_OPTIONS]
    missing = [o for o in missing if not re.search(f"`{o}[`/= ]", SECTIONS[path])]
    assert not missing, f"docs/cli.md's section on `statekeeper {path}` does not name {missing}"


def test_every_documented_command_exists() -> None:
    stale = sorted(set(SECTIONS) - set(ALL_COMMANDS))
    assert not stale, f"docs/cli.md documents commands the CLI does not have: {stale}"


@pytest.mark.parametrize("option", sorted(GLOBAL_OPTIONS), ids=str)
def test_every_global_option_is_in_the_global_table(option: str) -> None:
    table = CLI_MD.split('<a id="global-options"></a>', 1)[1].split("\n## ")[1]
    assert f"`{option}" in table


def test_the_opening_names_every_command_in_its_help_group() -> None:
    # The first thing a reader learns of the CLI: a command missing here goes unseen.
    opening = CLI_MD.split("`statekeeper --help` lists", 1)[1].split("\n\n", 1)[0]
    named = {
        panel: {words.split()[0] for words in re.findall(r"`([^`]+)`", listed)}
        for panel, listed in re.findall(r"\*\*([^*]+)\*\*\s+\(([^)]*)\)", opening)
    }
    panels: dict[str, set[str]] = {}
    for name, entry in COMMANDS.items():
        panels.setdefault(entry.panel, set()).add(name)
    assert named == panels


def test_the_contents_link_every_command() -> None:
    contents = CLI_MD.split("Contents:", 1)[1].split("\n\n", 1)[0]
    links = re.findall(r"\(#statekeeper-([a-z-]+)\)", contents)
    unlinked = [c for c in COMMANDS if not any(f"{link}-".startswith(f"{c}-") for link in links)]
    assert not unlinked, f"docs/cli.md's contents do not link {unlinked}"

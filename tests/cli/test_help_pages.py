"""Every ``--help`` page as a newcomer reads it: ``python -m statekeeper … --help``
for the root, every group and every command, piped at 80 and at 200 columns.

A listing (the root's panels, a group's commands) shows each command's summary,
the first paragraph of its help: one sentence on one row, never broken where the
docstring's source lines break, nor cut short. The detail goes in later
paragraphs, which only the command's own page shows. Every option says what it
is for, and its help is printed whole (rich markup would eat a ``[default: …]``).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from statekeeper.cli import COMMANDS, app, resolve
from statekeeper.cli.options import JSON_HELP
from statekeeper.testing.processes import SRC

# A summary fits one row of an 80-column listing's text column, give or take: longer,
# and it is no summary.
SUMMARY_MAX = 80


def _tree() -> Iterator[tuple[tuple[str, ...], Any]]:
    def walk(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, (*path, name))

    for name in COMMANDS:
        yield from walk(resolve(name), (name,))


TREE = dict(_tree())
PAGES = {(): app, **TREE}  # the root's page too: its options are the global ones


def _plain(text: str) -> str:
    """Help as written (rich markup, ``\\[`` for a bracket) as it reads printed."""
    return " ".join(text.replace("\\[", "[").split())


def _summary(cmd: Any) -> str:
    return _plain(inspect.cleandoc(cmd.help or "").split("\n\n")[0])


def _flat(page: str) -> str:
    """A page's words in order: box borders gone, the rows of a wrapped cell joined."""
    return " ".join(page.replace("│", " ").split())


def _params(cmd: Any) -> list[Any]:
    # A click argument (unlock's NAME) is not shown with help: its command's text names
    # it. typer's are, in their own box.
    return [
        p
        for p in cmd.params
        if p.opts != ["--help"]
        and (p.param_type_name == "option" or type(p).__module__.startswith("typer."))
    ]


@pytest.mark.parametrize("path", sorted(TREE), ids=" ".join)
def test_summary_is_one_short_sentence(path: tuple[str, ...]) -> None:
    summary = _summary(TREE[path])
    assert summary, f"'{' '.join(path)}' has no help"
    assert len(summary) <= SUMMARY_MAX, (
        f"'{' '.join(path)}' summary is {len(summary)} characters; keep the first paragraph "
        f"to one line of at most {SUMMARY_MAX} and move the rest to later paragraphs: {summary!r}"
    )
    assert summary[0].isupper() and summary.endswith("."), summary
    if len(path) == 1:
        assert _plain(COMMANDS[path[0]].short_help) == summary  # what the root lists


@pytest.mark.parametrize("path", sorted(PAGES), ids=lambda p: " ".join(p) or "root")
def test_every_option_says_what_it_is_for(path: tuple[str, ...]) -> None:
    for p in _params(PAGES[path]):
        assert (p.help or "").strip(), f"'{' '.join(path)}' {p.opts[0]} has no help"
        if p.opts[0] == "--json":
            assert p.help == JSON_HELP, f"'{' '.join(path)}' --json: {p.help!r}"


# One child process prints every page, as ``statekeeper`` runs (the root group's own
# main, its output piped): a process per page would take a minute of start-ups.
_PRINT_PAGES = """
import contextlib, io, json, os, sys
from statekeeper.cli import app
pages = []
for path in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            app.main([*path, "--help"], prog_name="statekeeper")
            code = 0
        except SystemExit as exc:
            code = exc.code
    pages.append((path, code, out.getvalue()))
json.dump(pages, sys.__stdout__)
"""


def _pages(columns: int) -> dict[tuple[str, ...], tuple[int, str]]:
    proc = subprocess.run(
        [sys.executable, "-c", _PRINT_PAGES, json.dumps(list(PAGES))],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")},
            "PYTHONPATH": str(SRC),
            "COLUMNS": str(columns),
        },
        capture_output=True,
        timeout=120,
        check=True,
    )
    return {tuple(path): (code, page) for path, code, page in json.loads(proc.stdout)}


@pytest.mark.parametrize("columns", [80, 200])
def test_every_page_lists_whole_summaries_and_prints_every_help(columns: int) -> None:
    wrong: list[str] = []
    for path, (code, page) in _pages(columns).items():
        where = f"statekeeper {' '.join(path)} --help".replace("  ", " ")
        if code != 0 or not page.strip():
            wrong.append(f"{where}: exit {code}, {page[-500:]!r}")
            continue
        flat = _flat(page)
        listed = COMMANDS if not path else getattr(PAGES[path], "commands", {})
        for name in listed:
            summary = _summary(TREE[(*path, name)])
            # Each row whole: the name, then the summary, nothing broken off or cut.
            if f"{name} {summary}" not in flat:
                wrong.append(f"{where}: {name}'s row is not {summary!r}")
            if columns == 200 and not any(
                f"{name} {summary}" in _flat(line) for line in page.splitlines()
            ):
                wrong.append(f"{where}: {name}'s summary does not fit one row at 200 columns")
        if columns == 200 and path and type(PAGES[path]).__module__.startswith("typer."):
            # A paragraph fills the width (click's own pages stop at 80 columns by design).
            for para in inspect.cleandoc(PAGES[path].help or "").split("\n\n")[1:]:
                text = _plain(para)
                line = next((li for li in page.splitlines() if text[:40] in li), "")
                if len(line.strip()) < min(len(text), 150):
                    wrong.append(f"{where}: a paragraph breaks where its source does: {line!r}")
        for p in _params(PAGES[path]):
            if _plain(p.help or "") not in flat:
                wrong.append(f"{where}: {p.opts[0]}'s help is not printed whole: {p.help!r}")
        # One wording for an environment variable: "(env: VAR)", never click's own too.
        if "[env var:" in page:
            wrong.append(f"{where}: click's '[env var: …]' beside our '(env: …)'")
        if re.search(r"(?m)^\s*│?\s*--help\b.*\n(?:.*\n)*?\s*│?\s*--help\b", page):
            wrong.append(f"{where}: --help is listed twice")
    assert not wrong, "\n".join(wrong)

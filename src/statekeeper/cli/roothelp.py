"""``statekeeper --help``: the root's page, in the panels the commands' own pages use.

The commands' pages are typer's (drawn by rich); rich alone takes longer to
import than this whole page may take to print, so the root draws the same
boxes itself from plain text: a usage line, the description, then one box per
panel (the options, the global options, the commands by topic).
"""

from __future__ import annotations

import shutil
import textwrap

__all__ = ["render"]

Row = tuple[str, str]


def _box(title: str, rows: list[Row], width: int) -> list[str]:
    """A rounded box titled ``title``: the first column padded, the second wrapped."""
    inner = width - 4  # "│ " and " │"
    first = max(len(name) for name, _ in rows) + 2
    wrap = max(inner - first, 10)
    lines = ["╭─ " + title + " " + "─" * max(width - len(title) - 5, 0) + "╮"]
    for name, text in rows:
        parts = textwrap.wrap(" ".join(text.split()), wrap) or [""]
        for i, part in enumerate(parts):
            cell = (name if i == 0 else "").ljust(first) + part
            lines.append("│ " + cell.ljust(inner) + " │")
    lines.append("╰" + "─" * (width - 2) + "╯")
    return lines


def render(
    usage: str,
    description: str,
    options: list[Row],
    options_title: str,
    panels: dict[str, list[Row]],
) -> str:
    """The page: ``options`` are (flag, help) rows; ``panels`` map a title to its
    (command, short help) rows, in order."""
    width = max(shutil.get_terminal_size((80, 24)).columns, 40)
    body = max(width - 2, 10)
    lines = ["", " Usage: " + usage, ""]
    lines += [" " + line for line in textwrap.wrap(description, body)]
    lines.append("")
    lines += _box("Options", [("--help", "Show this message and exit.")], width)
    lines += _box(options_title, options, width)
    for title, commands in panels.items():
        lines += _box(title, commands, width)
    return "\n".join(lines) + "\n"

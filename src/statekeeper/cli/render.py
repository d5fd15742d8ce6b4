"""Formatting for people: sizes, ages, times, tables. Scripts use ``--json``.

Tables never split a cell: a state name, lock ID or resource address is one
unbroken word wherever it is printed. On a terminal a table is aligned by rich
and, when wider than the window, is printed at its full width (the terminal
wraps the whole line, not a cell). When stdout is not a terminal (a pipe, a
file, CI logs) a table is plain tab-separated text: a header line, then one
line per row, every cell in full, for ``cut -f`` and ``awk -F'\\t'``. Every
column has a header and no cell is empty (an empty one is shown ``-``, on a
terminal too): shell ``read`` and ``column -t`` merge adjacent tabs, so an empty
field would shift the ones after it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from statekeeper.escapes import shown
from statekeeper.settings import format_size
from statekeeper.times import format_age, parse_rfc3339

if TYPE_CHECKING:
    from statekeeper.state.views import LockEntry

__all__ = ["age", "dash", "print_table", "size", "when", "who_lock"]


def size(n: int | None) -> str:
    return "-" if n is None else format_size(n)


def age(seconds: float | None) -> str:
    return "?" if seconds is None else format_age(seconds)


def when(text: str | None) -> str:
    if not text:
        return "-"
    try:
        return parse_rfc3339(text).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return text


def who_lock(lock: LockEntry | None) -> str:
    if lock is None:
        return "-"
    if lock.damaged:
        return "damaged lock (see 'statekeeper locks')"
    return f"{lock.who or '?'} ({lock.operation or '?'}, {age(lock.age_seconds)})"


def dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _cell(cell: str) -> str:
    """A cell as printed: on one line, every character a terminal would obey shown as
    its escape, ``-`` when empty."""
    return shown(cell.replace("\t", " ").replace("\n", " ")) or "-"


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    styles: dict[int, str] | None = None,
) -> None:
    """Print ``rows`` under ``columns``: aligned on a terminal, tab-separated otherwise.

    Cells are plain text (never read as markup); ``styles`` colours whole
    columns on a terminal (by index).
    """
    from statekeeper.cli.output import console

    if not console.is_terminal:
        out = sys.stdout
        out.write("\t".join(columns) + "\n")
        for row in rows:
            out.write("\t".join(_cell(c) for c in row) + "\n")
        out.flush()
        return
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, box=None, pad_edge=False, header_style="bold")
    for i, name in enumerate(columns):
        table.add_column(name, no_wrap=True, overflow="ignore", style=(styles or {}).get(i))
    for row in rows:
        table.add_row(*(Text(_cell(c)) for c in row))
    # Measured without the window's limit: the width at which no cell is cut.
    unlimited = console.options.update_width(1_000_000)
    needed = Measurement.get(console, unlimited, table).maximum
    if needed <= console.width:
        console.print(table)
        return
    # rich never prints wider than its console: a console as wide as the table.
    from rich.console import Console

    Console(width=needed).print(table, crop=False)

"""Formatting for people: sizes, ages, times, tables. Scripts use ``--json``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from statekeeper.times import parse_rfc3339

if TYPE_CHECKING:
    from statekeeper.state.views import LockEntry

__all__ = ["age", "size", "table", "when", "who_lock"]


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def age(seconds: float | None) -> str:
    """``42s``, ``3m12s``, ``2h05m``, ``4d02h``: two units at most."""
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


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


def table(*columns: str) -> Table:
    t = Table(show_edge=False, box=None, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)

"""How the CLI shows things: rich for people, stable JSON for scripts.

rich is imported on the first print, not when the command modules load, so
``statekeeper --help`` and the JSON paths start without it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from statekeeper.errors import BadRequest, LockConflict, LockMismatch, StatekeeperError
from statekeeper.escapes import shown

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console

    from statekeeper.state.listing import Unaddressable

__all__ = [
    "console",
    "err_console",
    "escape",
    "print_error",
    "print_json",
    "print_view",
    "warn_left_out",
    "warn_unkept_digest",
    "write_output",
]


class _LazyConsole:
    """A rich Console made on first use (on stdout or stderr as it is then)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def _get(self) -> Console:
        if self._console is None:
            self._console = _shown_console(stderr=self._stderr)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


def _shown_console(stderr: bool) -> Console:
    """A rich Console whose printed strings are :func:`shown` first (rich's own
    styles are added after, so they still colour a terminal).

    Off a terminal (a pipe, a file, CI logs) a message is never wrapped: rich would
    cut it at 80 columns (or COLUMNS), and a log or ``grep`` wants one line per
    message. On a terminal rich wraps at the window's width, as a person reads it.
    """
    from rich.console import Console
    from rich.text import Text

    class ShownConsole(Console):
        def render_str(self, text: str, **options: Any) -> Text:
            return super().render_str(shown(text), **options)

    made = ShownConsole(stderr=stderr)
    made.soft_wrap = not made.is_terminal
    return made


# Typed as Console for callers; the proxy forwards every attribute.
console: Console = _LazyConsole(stderr=False)  # type: ignore[assignment]
err_console: Console = _LazyConsole(stderr=True)  # type: ignore[assignment]


def escape(text: str) -> str:
    """``text`` with rich markup escaped (state names may hold ``[``)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def print_error(exc: StatekeeperError) -> None:
    # Messages are plain text: "statekeeper[aws]" must not be read as rich markup.
    err_console.print(f"[bold red]Error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
    # A note says what was done before the error (migrate: the states it copied).
    for note in getattr(exc, "__notes__", ()):
        err_console.print(f"  {note}", highlight=False, markup=False, soft_wrap=True)
    if isinstance(exc, LockConflict | LockMismatch):
        h = exc.holder
        err_console.print(
            f"  Lock ID: {h.id}\n  Operation: {h.operation or '-'}\n"
            f"  Who: {h.who or h.actor or '-'}\n  Created: {h.client_created or h.since or '-'}",
            highlight=False,
            markup=False,
        )


def warn_left_out(left_out: Unaddressable, what: str = "key(s)") -> None:
    """One line on stderr naming the keys a listing left out (no state name), if any:
    never silently, with ``--json`` too (stdout keeps its shape)."""
    text = left_out.warning(what)
    if text is not None:
        err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


def warn_unkept_digest(why: str | None) -> None:
    """After a write: Terraform's DynamoDB digest may now be stale, and what to do."""
    if why is not None:
        err_console.print(f"[yellow]warning:[/] {escape(why)}", highlight=False, soft_wrap=True)


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def print_view(view: BaseModel | Sequence[BaseModel]) -> None:
    """``--json``: a view (or a list of them) exactly as the JSON API answers it."""
    if isinstance(view, Sequence):
        print_json([v.model_dump(mode="json") for v in view])
    else:
        print_json(view.model_dump(mode="json"))


def write_output(data: bytes, output: Path | None) -> Path | None:
    """``data`` to the file ``output`` (returned), or to stdout when it is None or
    ``-`` (as ``push`` reads ``-`` as stdin).

    A file that cannot be written (a directory, a missing parent) is refused
    naming it, as the command's error, not as a traceback.
    """
    if output is None or str(output) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return None
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise BadRequest(f"cannot write {output}: {exc.strerror or exc}") from exc
    return output

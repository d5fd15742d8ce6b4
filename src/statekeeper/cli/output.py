"""How the CLI shows things: rich for people, stable JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from statekeeper.errors import LockConflict, LockMismatch, StatekeeperError

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["console", "err_console", "print_error", "print_json", "print_view"]

console = Console()
err_console = Console(stderr=True)


def print_error(exc: StatekeeperError) -> None:
    # Messages are plain text: "statekeeper[aws]" must not be read as rich markup.
    err_console.print(f"[bold red]Error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
    if isinstance(exc, LockConflict | LockMismatch):
        h = exc.holder
        err_console.print(
            f"  Lock ID: {h.id}\n  Operation: {h.operation or '-'}\n"
            f"  Who: {h.who or h.actor or '-'}\n  Created: {h.since or '-'}",
            highlight=False,
        )


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def print_view(view: BaseModel | Sequence[BaseModel]) -> None:
    """``--json``: a view (or a list of them) exactly as the JSON API answers it."""
    if isinstance(view, Sequence):
        print_json([v.model_dump(mode="json") for v in view])
    else:
        print_json(view.model_dump(mode="json"))

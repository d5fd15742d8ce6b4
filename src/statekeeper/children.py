"""The processes of statekeeper's own code that ``serve`` starts beside it (the
webhook delivery worker, the log process)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["own_module"]

#: The directory holding the statekeeper package: a child runs the server's code,
#: even where that code is a checkout that is not installed.
_ROOT = str(Path(__file__).resolve().parents[1])


def own_module(module: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run ``python -m module args`` on this
    interpreter and this copy of statekeeper."""
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, path]))}
    return [sys.executable, "-m", module, *args], env

"""The serial/lineage guard: may these bytes replace the current state?

The rules and their wording are Terraform's own ``CheckValidImport``
(``internal/states/statemgr/migrate.go``), which ``terraform state push``
applies; the server applies them to every write, because Terraform itself
sends no compare-and-swap and a ``-lock=false`` run could otherwise overwrite
newer state.
"""

from __future__ import annotations

import enum
from typing import Protocol

__all__ = ["Stamped", "Verdict", "compare", "explain"]


class Stamped(Protocol):
    """Anything with a serial and a lineage: a parsed state or version metadata."""

    @property
    def serial(self) -> int: ...

    @property
    def lineage(self) -> str: ...


class Verdict(enum.Enum):
    """How an incoming state relates to the current one."""

    FIRST = "first"  # no current state
    NEWER = "newer"  # same lineage (or one is blank), higher serial
    IDENTICAL = "identical"  # the exact bytes already current
    OTHER_LINEAGE = "other_lineage"
    OLDER_SERIAL = "older_serial"
    SAME_SERIAL_OTHER_CONTENT = "same_serial_other_content"

    @property
    def accepted(self) -> bool:
        return self in (Verdict.FIRST, Verdict.NEWER, Verdict.IDENTICAL)


def compare(current: Stamped | None, incoming: Stamped, *, same_bytes: bool) -> Verdict:
    if current is None:
        return Verdict.FIRST
    if same_bytes:
        return Verdict.IDENTICAL
    if current.lineage and incoming.lineage and current.lineage != incoming.lineage:
        return Verdict.OTHER_LINEAGE
    if incoming.serial < current.serial:
        return Verdict.OLDER_SERIAL
    if incoming.serial == current.serial:
        return Verdict.SAME_SERIAL_OTHER_CONTENT
    return Verdict.NEWER


def explain(verdict: Verdict, current: Stamped, incoming: Stamped) -> str:
    """Terraform's message for a refused write, with what to do about it."""
    if verdict is Verdict.OTHER_LINEAGE:
        text = (
            f'cannot import state with lineage "{incoming.lineage}" over unrelated '
            f'state with lineage "{current.lineage}"'
        )
    elif verdict is Verdict.OLDER_SERIAL:
        text = (
            f"cannot import state with serial {incoming.serial} over newer state "
            f"with serial {current.serial}"
        )
    elif verdict is Verdict.SAME_SERIAL_OTHER_CONTENT:
        text = (
            f"cannot overwrite existing state with serial {incoming.serial} with a "
            "different state that has the same serial"
        )
    else:
        raise ValueError(f"{verdict} is not a refusal")
    return text + FORCE_HINT.format(command="statekeeper push --force")


#: What a refused write is told to do; ``migrate`` names its own --force.
FORCE_HINT = "; pull the current state and re-run, or have an admin force the write ({command})"

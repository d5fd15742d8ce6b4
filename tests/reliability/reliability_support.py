"""What the reliability checks share: sizes, a recorded history, state documents, figures.

The checks run small in ``make test``; ``make soak`` sets ``STATEKEEPER_SOAK=1``
for the full sizes and ``STATEKEEPER_RELIABILITY_OUT`` to a JSON file that
collects each check's figures for ``bench/RESULTS.md``.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SOAK",
    "History",
    "Interval",
    "lock_body",
    "record_figures",
    "size",
    "state_doc",
]

SOAK = os.environ.get("STATEKEEPER_SOAK", "") not in ("", "0")


def size(small: int, soak: int) -> int:
    """``small`` in ``make test``, ``soak`` under ``STATEKEEPER_SOAK=1``."""
    return soak if SOAK else small


def lock_body(lock_id: str | None = None, who: str = "reliability@test") -> bytes:
    """A LockInfo as Terraform marshals it."""
    return json.dumps(
        {
            "ID": lock_id or str(uuid.uuid4()),
            "Operation": "OperationTypeApply",
            "Info": "",
            "Who": who,
            "Version": "1.15.0",
            "Created": "2026-01-01T00:00:00Z",
            "Path": "",
        },
        separators=(",", ":"),
    ).encode()


def state_doc(serial: int, lineage: str, counter: int, padding: int = 0) -> bytes:
    """A Terraform v4 state holding a counter output (and optional bulk)."""
    doc: dict[str, Any] = {
        "version": 4,
        "terraform_version": "1.15.0",
        "serial": serial,
        "lineage": lineage,
        "outputs": {"counter": {"value": counter, "type": "number"}},
        "resources": [],
        "check_results": None,
    }
    if padding:
        doc["resources"] = [
            {
                "mode": "managed",
                "type": "terraform_data",
                "name": f"r{i}",
                "provider": 'provider["terraform.io/builtin/terraform"]',
                "instances": [{"schema_version": 0, "attributes": {"id": f"{serial}-{i}"}}],
            }
            for i in range(padding)
        ]
    return json.dumps(doc).encode()


def md5_header(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


@dataclass(frozen=True)
class Interval:
    """A critical section as a client saw it: from the LOCK's 200 to sending UNLOCK.

    The server held the lock over at least this span, so two of these that
    overlap mean two holders at once.
    """

    client: int
    granted: float
    released: float


@dataclass
class History:
    """Grant/release times recorded by every client, checked for overlaps at the end."""

    intervals: list[Interval] = field(default_factory=list)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def add(self, client: int, granted: float, released: float) -> None:
        with self._guard:
            self.intervals.append(Interval(client, granted, released))

    def overlaps(self) -> list[tuple[Interval, Interval]]:
        ordered = sorted(self.intervals, key=lambda i: i.granted)
        found = []
        latest: Interval | None = None  # the interval released last so far
        for current in ordered:
            if latest is not None and current.granted < latest.released:
                found.append((latest, current))
            if latest is None or current.released > latest.released:
                latest = current
        return found


def now() -> float:
    return time.monotonic()


def record_figures(check: str, store: str, violations: int, **figures: Any) -> None:
    """Append one check's figures to ``$STATEKEEPER_RELIABILITY_OUT`` (``make soak``)."""
    out = os.environ.get("STATEKEEPER_RELIABILITY_OUT")
    if not out:
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        data: dict[str, Any] = json.loads(text) if text.strip() else {"mode": "", "runs": []}
        data["mode"] = "STATEKEEPER_SOAK=1" if SOAK else "small sizes (make test)"
        data["runs"] = [r for r in data["runs"] if (r["check"], r["store"]) != (check, store)]
        size_used = "soak" if SOAK else "small"
        data["runs"].append(
            {"check": check, "store": store, "size": size_used, "violations": violations, **figures}
        )
        f.seek(0)
        f.truncate()
        f.write(json.dumps(data, indent=1) + "\n")

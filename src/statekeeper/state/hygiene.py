"""The ``[history]`` section of the config file: compaction, retention and the trash.

```toml
[history]
compact = "auto"        # true, false, or auto: on for the embedded store, off on S3
keep_every = 0          # also keep every Nth intermediate snapshot of a lock (0: none)
trash = "30d"           # how long a deleted state stays restorable ("0s": until purged)
prune_interval = "1h"   # serve prunes and empties the trash this often (absent, "0s": never)

[[history.retention]]
states = "prod/**"      # a state glob (statekeeper.state.globs)
keep_last = 50          # the newest N versions stay ...
keep_for = "90d"        # ... and so do versions newer than this
```

The first retention rule whose glob covers a state applies; a state no rule
covers keeps every version. The current version is never pruned, whatever the
rule says. ``STATEKEEPER_HISTORY`` holds the same table as inline TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from statekeeper.errors import BadRequest
from statekeeper.state.globs import StateGlob, parse_glob
from statekeeper.terraform.names import StateName
from statekeeper.times import parse_duration

__all__ = ["HistoryPolicy", "Retention", "parse_history"]

_KEYS = {"compact", "keep_every", "trash", "prune_interval", "retention"}
_RULE_KEYS = {"states", "keep_last", "keep_for"}


@dataclass(frozen=True)
class Retention:
    """Which versions of the states ``glob`` covers stay: the newest N and/or the recent."""

    glob: StateGlob
    keep_last: int | None = None
    keep_for: timedelta | None = None

    def describe(self) -> str:
        kept = []
        if self.keep_last is not None:
            kept.append(f"the last {self.keep_last}")
        if self.keep_for is not None:
            kept.append(f"those newer than {self.keep_for}")
        return f"{self.glob.pattern}: keep " + " and ".join(kept)


@dataclass(frozen=True)
class HistoryPolicy:
    #: None: "auto", on where versions are the store's own rows (the embedded store).
    compact: bool | None = None
    keep_every: int = 0
    #: None: deleted states stay in the trash until purged by hand.
    trash: timedelta | None = timedelta(days=30)
    prune_interval: timedelta | None = None
    retention: tuple[Retention, ...] = field(default_factory=tuple)

    def compacts(self, scheme: str) -> bool:
        """Whether lock releases compact on a store of ``scheme``.

        On S3 compaction deletes object versions, which Terraform's own backend
        and the bucket's owners may count on: only when asked for.
        """
        return self.compact if self.compact is not None else scheme != "s3"

    def rule_for(self, name: StateName) -> Retention | None:
        return next((r for r in self.retention if r.glob.covers(name)), None)


def _int(section: str, key: str, value: object, least: int = 0, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{section}.{key} must be a whole number ≥ {least}{why}, not {value!r}")
    return value


def _duration(section: str, key: str, value: object) -> timedelta:
    if not isinstance(value, str):
        raise ValueError(f'{section}.{key} is a duration such as "30d", not {value!r}')
    try:
        return parse_duration(value, what=f"{section}.{key}")
    except BadRequest as exc:
        raise ValueError(exc.message) from exc


def _rule(raw: object, at: int) -> Retention:
    where = f"history.retention[{at}]"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a table with states, keep_last and/or keep_for")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    states = raw.get("states")
    if not isinstance(states, str) or not states:
        raise ValueError(f'{where} needs states = "GLOB" (e.g. "prod/**")')
    try:
        glob = parse_glob(states)
    except BadRequest as exc:
        raise ValueError(f"{where}: {exc.message}") from exc
    # The newest version is the current one, which always stays: 1 keeps only it, and
    # 0 would say the same thing less truly (and is no S3 lifecycle rule).
    keep_last = (
        _int(where, "keep_last", raw["keep_last"], 1, " (1 keeps only the current version)")
        if "keep_last" in raw
        else None
    )
    keep_for = _duration(where, "keep_for", raw["keep_for"]) if "keep_for" in raw else None
    if keep_last is None and keep_for is None:
        raise ValueError(f"{where} keeps everything: give keep_last and/or keep_for")
    if keep_for is not None and not keep_for:
        raise ValueError(
            f'{where}: keep_for = "{raw["keep_for"]}" would keep only the current version; '
            'use a longer duration, e.g. "1d"'
        )
    return Retention(glob, keep_last, keep_for)


def parse_history(value: dict[str, Any] | str) -> HistoryPolicy:
    """The ``[history]`` table (or its inline TOML text, from the environment)."""
    if isinstance(value, str):
        import tomllib  # here: only a table given as text needs it

        try:
            value = tomllib.loads(value)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(
                f"not TOML (write the table's keys, e.g. compact = true): {exc}"
            ) from exc
    unknown = set(value) - _KEYS
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_KEYS))}"
        )
    compact = value.get("compact", "auto")
    if not isinstance(compact, bool) and compact != "auto":
        raise ValueError(f'history.compact is true, false or "auto", not {compact!r}')
    trash = _duration("history", "trash", value["trash"]) if "trash" in value else timedelta(30)
    interval = value.get("prune_interval")
    every = None if interval is None else _duration("history", "prune_interval", interval)
    rules = value.get("retention", [])
    if not isinstance(rules, list):
        raise ValueError("history.retention is a list of tables: [[history.retention]]")
    return HistoryPolicy(
        compact=None if compact == "auto" else bool(compact),
        keep_every=_int("history", "keep_every", value.get("keep_every", 0)),
        trash=trash or None,
        # "0s" is off, as for history.trash and lock_policy.sweep: no background task
        # can run continuously, and an interval of nothing is the way to write none.
        prune_interval=every or None,
        retention=tuple(_rule(r, i) for i, r in enumerate(rules)),
    )

"""Listing states and locks across a whole store, fast on big buckets.

``states`` costs one listing of objects plus one listing of locks: no state
is downloaded. What a listing does not carry is reported as unknown, never
as absent: S3's ListObjectsV2 has no user metadata, so no serial
(``serial_known`` false; the operator lists S3 from the inventory index, which
knows it), and nothing lists version counts. Both are filled
in only when asked for with ``details``: a version listing per state (on S3
also a HEAD per version, which brings the current version's metadata), a
HEAD where there is no version listing, and a GET of the current state only
where the metadata lacks the serial (a state Terraform's own backend wrote).

Every holder is listed: the lock Terraform sees (the *primary* holder) and,
under the ``shared-plans`` lock policy, the plans sharing it (shared holds,
see :mod:`statekeeper.state.holds`), each a row of its own after the primary.

Locks are listed from every lock table configured. With both kinds (Terraform's
``use_lockfile`` plus ``dynamodb_table``), a state locked in one table and not
in the other is a *dual-lock drift*: Terraform takes both or neither, so one
alone is the remains of a crashed run or of a client configured with only one.

Terraform's ``backend "s3"`` accepts any object key (``team/my app.tfstate``,
``a@b.tfstate``, ``x//y.tfstate``); statekeeper addresses a state by a name
that follows its name rules (:data:`~statekeeper.terraform.names.NAME_RULES`).
A key that breaks them and is not one the layout reserves (a lock file, a
digest, statekeeper's own objects) is left out of a listing, never silently:
it is noted in an :class:`Unaddressable` the caller reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from statekeeper.errors import InvalidStateName
from statekeeper.security.caller import Caller
from statekeeper.security.grants import visible
from statekeeper.security.policy import Permission, Policy
from statekeeper.state.globs import literal_prefix
from statekeeper.state.lockpolicy import LockPolicy
from statekeeper.storage.base import LockTable, ObjectInfo, ObjectStore
from statekeeper.terraform.layout import reserved_reason, split_shared_hold
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.terraform.workspaces import split_workspace
from statekeeper.times import format_rfc3339, utcnow

# The views are pydantic models: imported when one is made, so a CLI run that
# makes none (an empty listing) starts without pydantic.
if TYPE_CHECKING:
    from statekeeper.state import views

__all__ = [
    "UNADDRESSABLE_HEADER",
    "LockSummary",
    "StateIndex",
    "StateSummary",
    "Unaddressable",
    "is_state_key",
    "list_locks",
    "list_states",
]


#: How many left-out keys a warning names.
_NAMED = 3
#: How many a server's answer names (in :data:`UNADDRESSABLE_HEADER`; headers are small).
_HEADER_KEYS = 20
#: The JSON API's response header for an :class:`Unaddressable`: ``{"count", "keys"}``.
UNADDRESSABLE_HEADER = "Statekeeper-Unaddressable"


@dataclass
class Unaddressable:
    """The keys a listing left out because statekeeper cannot address them by name.

    A store or lock table shared with Terraform's own backend may hold states
    under any key; such a state cannot be shown, locked, copied or unlocked by
    name here, so every listing that meets one says so (:meth:`warning`).
    """

    keys: dict[str, None] = field(default_factory=dict)  # an ordered set
    #: Keys left out beyond those named in ``keys`` (a server's answer names a few).
    more: int = 0

    def note(self, key: str) -> None:
        """Record ``key``, a key that is not a valid state name."""
        if reserved_reason(key) is None:  # reserved ones are not states: left out silently
            self.keys[key] = None

    @property
    def count(self) -> int:
        return len(self.keys) + self.more

    def header(self) -> str:
        """The value of :data:`UNADDRESSABLE_HEADER`: the count and the first keys, as
        JSON in ASCII (a key may hold any character)."""
        return json.dumps({"count": self.count, "keys": list(self.keys)[:_HEADER_KEYS]})

    def add_header(self, value: str) -> None:
        """Note what a server's :meth:`header` says it left out."""
        try:
            got = json.loads(value)
            keys, count = [str(k) for k in got["keys"]], int(got["count"])
        except (ValueError, KeyError, TypeError):
            return  # not ours to judge: the listing itself was answered
        fresh = [k for k in keys if k not in self.keys]
        self.keys.update(dict.fromkeys(fresh))
        self.more += max(0, count - len(keys))

    def warning(self, what: str = "key(s)") -> str | None:
        """One line naming how many ``what`` were left out, the first few and why;
        None when none were."""
        if not self.count:
            return None
        keys = list(self.keys)
        more = ", …" if self.count > min(len(keys), _NAMED) else ""
        named = ", ".join(repr(k) for k in keys[:_NAMED]) + more
        return (
            f"{self.count} {what} left out: {named}: not state names statekeeper can address "
            '(Terraform\'s backend "s3" accepts any key; see the state name rules in '
            "docs/cli.md#state-names)"
        )


def is_state_key(key: str, unaddressable: Unaddressable | None = None) -> bool:
    """A listed key that is a state: a valid state name, so not a lock file, a digest
    or one of statekeeper's own objects (the names the layout reserves). Any other
    key that is no valid name is noted in ``unaddressable``."""
    return _state_name(key, unaddressable) is not None


def _state_name(key: str, unaddressable: Unaddressable | None) -> StateName | None:
    """``key`` as a state name; None, noted in ``unaddressable``, when it is none."""
    try:
        return StateName(key)
    except InvalidStateName:
        if unaddressable is not None:
            unaddressable.note(key)
        return None


def _time(when: datetime | None) -> str | None:
    return None if when is None else format_rfc3339(when)


@dataclass(frozen=True)
class LockSummary:
    """One held lock, as ``statekeeper locks`` shows it."""

    name: str
    lock: LockInfo
    #: The lock tables holding it, by scheme (``dynamodb``, ``s3lock``, ``sqlite``…).
    kinds: tuple[str, ...]
    #: With two kinds configured: the kinds that do NOT hold it (a dual-lock drift).
    missing: tuple[str, ...] = ()
    age_seconds: float | None = None
    #: ``shared`` for a plan sharing the lock (shared-plans), else ``exclusive``.
    mode: str = "exclusive"
    #: False for a shared hold recorded beside the lock Terraform sees.
    primary: bool = True

    @property
    def drift(self) -> bool:
        return bool(self.missing)

    def view(self) -> views.LockEntry:
        from statekeeper.state import views

        entry = views.LockEntry.of(
            self.name, self.lock, list(self.kinds), list(self.missing), self.age_seconds
        )
        return entry.model_copy(update={"mode": self.mode, "primary": self.primary})


@dataclass(frozen=True)
class StateSummary:
    """One state, as ``statekeeper states`` shows it."""

    name: str
    size: int
    last_modified: datetime
    version_id: str
    serial: int | None
    lineage: str | None
    lock: LockSummary | None
    #: None unless counted (``details``): counting costs a call per state.
    versions: int | None = None
    #: The Terraform workspace of a state named ``<workspace_key_prefix>/W/KEY``; None
    #: for any other state (a backend key itself is its ``default`` workspace).
    workspace: str | None = None

    def view(self) -> views.StateEntry:
        from statekeeper.state import views

        return views.StateEntry(
            name=self.name,
            size=self.size,
            last_modified=format_rfc3339(self.last_modified),
            version_id=self.version_id,
            serial=self.serial,
            serial_known=self.serial is not None,
            lineage=self.lineage,
            locked=self.lock is not None,
            lock=None if self.lock is None else self.lock.view(),
            versions=self.versions,
            workspace=self.workspace,
        )


class StateIndex(Protocol):
    """Where a listing can come from instead of the store (the inventory index)."""

    def summaries(
        self, prefix: str, *, wait: bool = True, unaddressable: Unaddressable | None = None
    ) -> list[StateSummary] | None:
        """Every state under ``prefix`` as the store's listing shows it, no lock joined;
        None when the index cannot answer now (list the store). ``wait``: catch up first
        when due, rather than answer None. The keys under ``prefix`` its last listing
        left out (no state name) are noted in ``unaddressable``."""
        ...


def _visible(policy: Policy, caller: Caller, key: str, unaddressable: Unaddressable | None) -> bool:
    """:func:`~statekeeper.security.grants.visible`, with a key that is no valid name
    noted in ``unaddressable``: the key is validated once, here."""
    name = _state_name(key, unaddressable)
    return name is not None and visible(policy, caller, name)


def _noted_for(
    policy: Policy, caller: Caller, unaddressable: Unaddressable | None
) -> Unaddressable | None:
    """``unaddressable`` for a caller who may read the whole store, else None: no grant
    on a name covers a key that is none, so only such a caller is told of those keys."""
    if unaddressable is None or not policy.allows(caller, None, Permission.READ):
        return None
    return unaddressable


def list_locks(
    table: LockTable,
    policy: Policy,
    caller: Caller,
    prefix: str = "",
    now: datetime | None = None,
    lock_policy: LockPolicy | None = None,
    unaddressable: Unaddressable | None = None,
) -> list[LockSummary]:
    """Every holder under ``prefix``: per state the primary lock, then its shared
    holds; drift flagged. ``lock_policy`` says which primary plans share; the
    locks of keys that are no state name are noted in ``unaddressable``."""
    prefix = literal_prefix(prefix)
    now = now or utcnow()
    lock_policy = lock_policy or LockPolicy()
    unaddressable = _noted_for(policy, caller, unaddressable)
    tables = table.parts()
    # (state, shared hold key or "") -> the tables' views of that holder
    found: dict[tuple[str, str], list[tuple[str, LockInfo]]] = {}
    for t in tables:
        for key, lock in t.scan(prefix):
            hold = split_shared_hold(key)
            if hold is not None and hold[1]:
                continue  # a marker: no holder
            name = key if hold is None else hold[0]
            if not _visible(policy, caller, name, unaddressable):
                continue
            found.setdefault((name, "" if hold is None else key), []).append((t.scheme, lock))
    kinds_all = tuple(t.scheme for t in tables)
    out: list[LockSummary] = []
    for name, hold_key in sorted(found):
        held = found[(name, hold_key)]
        kinds = tuple(k for k, _ in held)
        missing = tuple(k for k in kinds_all if k not in kinds) if len(tables) > 1 else ()
        # The first table's view of the lock (the lock file, Terraform's first step).
        lock = held[0][1]
        primary = not hold_key
        shared = not primary or lock_policy.for_state(name).shares(lock)
        mode = "shared" if shared else "exclusive"
        out.append(LockSummary(name, lock, kinds, missing, lock.age(now), mode, primary))
    # Per state: the primary, then the shared holds in the order they came.
    return sorted(out, key=lambda r: (r.name, not r.primary, -(r.age_seconds or 0.0)))


def _listed(objects: Iterable[ObjectInfo]) -> Iterator[StateSummary]:
    # Imported here, once a listing: a lock listing reads no version (the CLI's loop path).
    from statekeeper.state.version import listed_facts

    for info in objects:
        serial, lineage, written = listed_facts(info)
        yield StateSummary(
            name=info.key,
            size=info.size,
            last_modified=written,
            version_id=info.version_id,
            serial=serial,
            lineage=lineage,
            lock=None,
        )


def _detailed(store: ObjectStore, summary: StateSummary) -> StateSummary:
    from statekeeper.state.version import listed_facts, version_from_info

    count: int | None = None
    current: ObjectInfo | None = None
    if store.supports_versions:
        listed = store.versions(summary.name)
        count = len(listed)
        current = next((v for v in listed if v.is_latest and v.has_metadata), None)
    serial, lineage, written = summary.serial, summary.lineage, summary.last_modified
    if serial is None:
        # The current version's metadata (a HEAD on S3, unless the version listing
        # brought it), and only where statekeeper wrote none (Terraform's own
        # writes) the bytes.
        info = current or store.head(summary.name)
        if info is not None:
            serial, lineage, written = listed_facts(info)
        if serial is None:
            obj = store.get(summary.name)
            if obj is not None:
                v = version_from_info(summary.name, obj.info, obj.data)
                serial, lineage = v.serial, v.lineage
    elif current is not None:
        written = listed_facts(current)[2]
    return replace(summary, versions=count, serial=serial, lineage=lineage, last_modified=written)


def list_states(
    store: ObjectStore,
    table: LockTable,
    policy: Policy,
    caller: Caller,
    prefix: str = "",
    *,
    details: bool = False,
    now: datetime | None = None,
    workspace_key_prefix: str = "env:",
    index: StateIndex | None = None,
    wait_for_index: bool = True,
    unaddressable: Unaddressable | None = None,
) -> list[StateSummary]:
    """Every state under ``prefix`` with its lock; ``details`` adds per-state calls.

    With an ``index`` (the inventory, on a store whose listing is costly) the
    states come from it instead of a listing of the store; it answers as fresh
    as its refresh bound, with the serials it read. With ``wait_for_index`` false
    a stale index is not waited for: the store is listed (the UI's states page).

    The workspace states of the keys under ``prefix`` are included, as
    ``terraform workspace list`` would find them (``env:/dev/team/app.tfstate``
    for the prefix ``team/``), each marked with its workspace and listed after
    its key. With an empty ``workspace_key_prefix`` (workspaces at ``W/KEY``)
    only names under ``prefix`` itself are listed: any first path segment could
    then be a workspace.

    Keys (of states or of locks) that are no state name are noted in
    ``unaddressable``.
    """
    prefix = literal_prefix(prefix)
    unaddressable = _noted_for(policy, caller, unaddressable)
    ws = f"{workspace_key_prefix}/" if workspace_key_prefix else None
    scans = [prefix]
    if prefix and ws and not prefix.startswith(ws) and not ws.startswith(prefix):
        scans.append(ws)
    locks: dict[str, LockSummary] = {}
    keyed: list[tuple[str, str, StateSummary]] = []
    for scan in scans:
        held = list_locks(table, policy, caller, scan, now, unaddressable=unaddressable)
        locks.update((s.name, s) for s in held if s.primary)
    for i, scan in enumerate(scans):
        indexed = (
            index.summaries(scan, wait=wait_for_index, unaddressable=unaddressable)
            if index is not None
            else None
        )
        listed = indexed if indexed is not None else _listed(store.scan(scan))
        for row in listed:
            if not _visible(policy, caller, row.name, unaddressable):
                continue
            workspace, key = split_workspace(row.name, workspace_key_prefix)
            if i == 0 or key.startswith(prefix):
                # One copy per row with both joined: at 10,000 states a copy is a cost.
                joined = replace(row, lock=locks.get(row.name), workspace=workspace)
                keyed.append((key, workspace or "", joined))
    # A key's workspace states follow it: the listing groups by backend key.
    keyed.sort(key=lambda k: (k[0], k[1]))
    rows = [row for _, _, row in keyed]
    if details:
        rows = [_detailed(store, row) for row in rows]
    return rows

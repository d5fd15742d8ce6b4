"""Retention: ``statekeeper prune`` removes the versions the ``[history]`` rules let go.

A rule keeps the newest ``keep_last`` versions and/or those newer than
``keep_for``; a version either keeps stays. The current version stays
whatever the rule, and so does a version a rollback restored (the history
names it). A removal holds only while the state's current version is still the
one its plan was made from: a rollback that lands meanwhile (naming a version the
plan let go) makes the prune plan that state again. Each state with versions
removed is one ``prune`` event; a dry run removes nothing and records nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from statekeeper.errors import (
    BadRequest,
    CapabilityMissing,
    Forbidden,
    StatekeeperError,
    VersionNotFound,
    WriteRace,
)
from statekeeper.events import Action, EventStream
from statekeeper.security.caller import SERVER_ACTOR, Caller
from statekeeper.security.grants import visible
from statekeeper.security.policy import Permission, Policy, require
from statekeeper.state.globs import literal_prefix
from statekeeper.state.hygiene import HistoryPolicy, Retention
from statekeeper.state.listing import Unaddressable, is_state_key
from statekeeper.state.version import StateVersion, version_from_info
from statekeeper.storage.base import ObjectStore
from statekeeper.terraform.names import StateName
from statekeeper.times import utcnow

if TYPE_CHECKING:
    from statekeeper.app import Services

__all__ = ["PruneTask", "Pruned", "expendable", "prune"]

log = logging.getLogger("statekeeper.prune")


@dataclass(frozen=True)
class Pruned:
    """One state's prune: the versions removed (or, in a dry run, that would be)."""

    name: str
    rule: str
    removed: tuple[str, ...]
    kept: int
    dry_run: bool


def expendable(versions: list[StateVersion], rule: Retention, now: datetime) -> list[str]:
    """The IDs of ``versions`` (newest first) that ``rule`` lets go."""
    restored = {v.restored_from for v in versions if v.restored_from}
    out = []
    for index, v in enumerate(versions):
        if v.is_current or v.version_id in restored:
            continue
        if rule.keep_last is not None and index < rule.keep_last:
            continue
        if rule.keep_for is not None and v.created >= now - rule.keep_for:
            continue
        out.append(v.version_id)
    return out


def prune(
    store: ObjectStore,
    history: HistoryPolicy,
    policy: Policy,
    events: EventStream,
    caller: Caller,
    *,
    prefix: str = "",
    dry_run: bool = False,
    now: datetime | None = None,
    unaddressable: Unaddressable | None = None,
) -> list[Pruned]:
    """Apply the retention rules to every state under ``prefix`` (admin on each).

    Keys that are no state name (Terraform's backend "s3" accepts any key) have no
    rule to match: they are noted in ``unaddressable`` and kept as they are.
    """
    prefix = literal_prefix(prefix)
    if not history.retention:
        # Refused, not answered with nothing pruned: that would read as "nothing to do"
        # where nothing was ever going to be done.
        raise BadRequest(
            "no retention rule is configured: add [[history.retention]] tables to the "
            "config file (docs/configuration.md#history)"
        )
    if not store.supports_history_edits:
        raise CapabilityMissing(
            f"the {store.scheme} store keeps no versions to prune: "
            + (store.history_warning or "it keeps no version history")
        )
    now = now or utcnow()
    covered: list[tuple[StateName, Retention]] = []
    for info in store.scan(prefix):
        if not is_state_key(info.key, unaddressable):
            continue  # statekeeper's own records in a bucket, or no state name
        name = StateName(info.key)
        rule = history.rule_for(name)
        if rule is not None:
            covered.append((name, rule))
    # Every grant is checked before anything is removed: a refusal half-way through
    # answered 403 for a prune that had already removed the versions of the states
    # before it. A refusal is recorded; success is the removal's event below.
    for name, _ in covered:
        with events.event(Action.PRUNE, caller, name, record_success=False):
            try:
                require(policy, caller, name, Permission.ADMIN, "prune")
            except Forbidden as exc:
                # A state the caller may not even read goes unnamed, as in every listing.
                refused = (
                    exc.message
                    if visible(policy, caller, name)
                    else f"{caller.actor} may not prune every state the retention rules "
                    "cover here: it needs the 'admin' permission on each"
                )
                raise Forbidden(
                    f"{refused}; nothing was pruned: give a prefix whose states it may "
                    "prune (statekeeper prune PREFIX, or prefix in the body)"
                ) from exc
    out: list[Pruned] = []
    for name, rule in covered:
        key = str(name)
        versions = [version_from_info(key, i) for i in store.versions(key)]
        doomed = expendable(versions, rule, now)
        if not doomed:
            continue
        if dry_run:
            kept = len(versions) - len(doomed)
            out.append(Pruned(key, rule.describe(), tuple(doomed), kept, True))
            continue
        with events.event(Action.PRUNE, caller, name) as event:
            gone, kept = _remove(store, key, rule, now, versions, doomed)
            event.detail = f"removed {len(gone)} version(s) by the rule {rule.describe()}"
            # Another server's prune (or a compaction) removed them all first: this one
            # changed nothing, and "removed 0" would count a prune that never happened.
            event.changed = bool(gone)
        if gone:
            out.append(Pruned(key, rule.describe(), tuple(gone), kept, False))
    return out


#: How often one prune plans a state again when writes land during its removals; the
#: rest is left to the next prune.
_PLANS = 3


def _remove(
    store: ObjectStore,
    key: str,
    rule: Retention,
    now: datetime,
    versions: list[StateVersion],
    doomed: list[str],
) -> tuple[list[str], int]:
    """Remove ``doomed``, each only while the current version is still the one planned
    from; the versions removed and how many stay.

    A write since the plan may be a rollback that restored one of them, which then
    stays: the store refuses the removal and the state is planned again.
    """
    gone: list[str] = []
    vanished: set[str] = set()  # removed by another process since ``versions`` was read
    for _ in range(_PLANS):
        current = versions[0].version_id if versions and versions[0].is_current else None
        if current is None:
            break  # deleted meanwhile: its versions are the trash's now
        try:
            for version_id in doomed:
                try:
                    store.delete_version(key, version_id, current)
                except VersionNotFound:
                    vanished.add(version_id)  # compacted or pruned by another process
                    continue
                gone.append(version_id)
            break
        except WriteRace:
            versions = [version_from_info(key, i) for i in store.versions(key)]
            doomed = expendable(versions, rule, now)
            vanished.clear()  # the listing just read no longer has them
    return gone, sum(
        1 for v in versions if v.version_id not in gone and v.version_id not in vanished
    )


class PruneTask:
    """``serve``'s background prune: the retention rules and the trash, every ``interval``.

    It acts as the server itself (an actor named for it, no grants to lack), and
    each run is the events of what it removed; a failing run is logged and the
    next one tries again.
    """

    ACTOR = f"{SERVER_ACTOR} (history.prune_interval)"

    def __init__(self, services: Services, interval: timedelta) -> None:
        self.services = services
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="statekeeper-prune", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_once(self) -> None:
        s = self.services
        caller = Caller(actor=self.ACTOR)
        if s.settings.history.retention and s.store.supports_history_edits:
            left_out = Unaddressable()
            prune(s.store, s.settings.history, s.policy, s.events, caller, unaddressable=left_out)
            if left_out.count:
                log.warning("the background prune: %s", left_out.warning("state(s)"))
        if s.trash is not None:
            s.trash.expire(caller)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval.total_seconds()):
            try:
                self.run_once()
            except StatekeeperError as exc:
                log.warning("the background prune failed (next try in %s): %s", self.interval, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

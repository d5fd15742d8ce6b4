"""A version pruned by another server between a history listing and the listing's
read of it: the listing answers without it, and the audit trail records no failed
read (the caller met no failure); the versions read are each one ``read`` event.

Two ``Services`` on one data directory stand for two servers; server B's prune runs
at the exact point where server A's store has answered the listing of versions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from statekeeper.app import Services
from statekeeper.events import Action
from statekeeper.security.audit import AuditFilter
from statekeeper.security.caller import Caller
from statekeeper.server.ui.reading import timeline
from statekeeper.settings import Settings
from statekeeper.state.history import HistoryService
from statekeeper.state.hygiene import parse_history
from statekeeper.state.inspection import Inspector
from statekeeper.state.prune import prune
from statekeeper.storage.base import ObjectInfo
from statekeeper.storage.encrypting import EncryptingStore
from statekeeper.terraform.names import StateName
from statekeeper.testing.statefiles import state_bytes

NAME = StateName("kept/app.tfstate")
ALICE = Caller("alice")


class _ListedThen(EncryptingStore):
    """Server A's store, running ``act`` once right after it listed the versions."""

    def __init__(self, store: EncryptingStore, act: Callable[[], object]) -> None:
        super().__init__(store.inner, store.ring, [*store.keys.values()], store.sealed_with)
        self.act: Callable[[], object] | None = act

    def versions(self, key: str) -> list[ObjectInfo]:
        listed = super().versions(key)
        if self.act is not None:
            act, self.act = self.act, None
            act()
        return listed


def _servers(tmp_path: Path) -> tuple[Services, Services, Inspector]:
    """Servers A and B, three versions written, and A's inspector whose listing B's
    prune (keep the newest one) follows at once."""
    history = parse_history('[[retention]]\nstates = "kept/**"\nkeep_last = 1')
    a, b = (Services.build(Settings(data_dir=tmp_path / "data", history=history)) for _ in "ab")
    for serial in (1, 2, 3):
        a.states.write(NAME, state_bytes(serial), ALICE)
    assert isinstance(a.store, EncryptingStore)
    pruned_by_b = _ListedThen(
        a.store, lambda: prune(b.store, b.settings.history, b.policy, b.events, ALICE)
    )
    inspector = Inspector(a.states, HistoryService(pruned_by_b, a.policy, a.ledger))
    return a, b, inspector


def _reads(s: Services) -> list[tuple[str, int | None]]:
    return [(e.outcome, e.serial) for e in s.audit.query(AuditFilter()) if e.action is Action.READ]


def test_a_version_pruned_after_the_listing_is_neither_listed_nor_a_failed_read(
    tmp_path: Path,
) -> None:
    a, b, inspector = _servers(tmp_path)
    try:
        entries = inspector.history_entries(NAME, ALICE)
        assert [e.serial for e in entries] == [3]
        # The one version read is one read event; the two pruned meanwhile are none.
        assert _reads(a) == [("ok", 3)]
        prunes = [e for e in a.audit.query(AuditFilter()) if e.action is Action.PRUNE]
        assert [e.detail.split()[:2] for e in prunes if e.detail] == [["removed", "2"]]
    finally:
        a.close()
        b.close()


def test_the_ui_timeline_leaves_out_a_version_pruned_after_the_listing(tmp_path: Path) -> None:
    a, b, inspector = _servers(tmp_path)
    try:
        shown = a.states.read_existing(NAME, ALICE)
        entries, total = timeline(inspector, NAME, ALICE, 10, shown)
        assert [e.version.serial for e in entries] == [3] and total == 1
        assert _reads(a) == [("ok", 3)]  # the page's own read; none failed
    finally:
        a.close()
        b.close()

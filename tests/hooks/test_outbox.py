"""The outbox on the embedded database: made by the sender from the audit trail, leases, order."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from tests.security.support import OPERATOR, state_json

from statekeeper.app import Services
from statekeeper.events import Action, Event
from statekeeper.hooks import outbox as outbox_module
from statekeeper.hooks.model import Subscription, cloudevent, recorded_cloudevent
from statekeeper.hooks.outbox import Entry
from statekeeper.security.audit import AuditFilter
from statekeeper.settings import load_settings
from statekeeper.terraform.names import StateName


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = Services.build(
        load_settings({"data_dir": tmp_path / "data"}, env={"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"})
    )
    assert built.hooks is not None
    built.hooks.add(Subscription("ci", "http://127.0.0.1:9/hook", "s3cret", ("team/**",)))
    yield built
    built.close()


def _outbox(services: Services) -> list[tuple[str, str, str]]:
    assert services.hooks is not None
    rows = services.hooks.outbox.db.run(
        lambda db: db.execute("SELECT event_id, hook, kind FROM hook_outbox ORDER BY id").fetchall()
    )
    return [tuple(r) for r in rows]


def _claim(services: Services, owner: str, lease: float = 60, limit: int = 20) -> list[Entry]:
    """A sender's claim: the rows of the audit records since the last one, then a lease."""
    assert services.hooks is not None
    return services.hooks.outbox.claim(owner, lease, limit, wanted=services.hooks.wanting)


def test_the_request_writes_no_row_and_the_senders_claim_makes_the_wanted_ones(
    services: Services,
) -> None:
    services.states.write(StateName("team/a.tfstate"), state_json(1), OPERATOR)
    services.states.write(StateName("other/b.tfstate"), state_json(1), OPERATOR)  # not wanted
    assert _outbox(services) == []  # the audit record is the outbox's log
    (written,) = services.audit.query(AuditFilter(action="write", state="team/**"))
    (entry,) = _claim(services, "a")
    assert (entry.event_id, entry.hook, entry.kind) == (written.id, "ci", "state.written")
    assert _outbox(services) == [(written.id, "ci", "state.written")]
    # The cursor moved past both records: a later claim makes no row twice.
    assert _claim(services, "b", lease=-1) == []
    assert _outbox(services) == [(written.id, "ci", "state.written")]


def test_a_commands_event_is_queued_by_the_next_sender(tmp_path: Path) -> None:
    """A CLI run with no sender of its own (it never builds the webhooks for a write)
    leaves its event in the audit trail; a server's sender makes its row."""
    settings = load_settings(
        {"data_dir": tmp_path / "data"}, env={"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"}
    )
    first = Services.build(settings)
    first.hooks.add(Subscription("ci", "http://127.0.0.1:9/hook", "s3cret", ("team/**",)))
    first.close()
    command = Services.build(settings)
    try:
        command.states.write(StateName("team/a.tfstate"), state_json(1), OPERATOR)
        (written,) = command.audit.query(AuditFilter(action="write", state="team/**"))
    finally:
        command.close()
    server = Services.build(settings)
    try:
        assert [e.event_id for e in _claim(server, "a")] == [written.id]
    finally:
        server.close()


def test_events_from_before_the_outbox_existed_are_not_queued(tmp_path: Path) -> None:
    settings = load_settings(
        {"data_dir": tmp_path / "data"}, env={"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"}
    )
    before = Services.build(settings)
    before.states.write(StateName("team/old.tfstate"), state_json(1), OPERATOR)
    before.close()
    services = Services.build(settings)
    try:
        services.hooks.add(Subscription("ci", "http://127.0.0.1:9/hook", "s3cret"))
        services.states.write(StateName("team/new.tfstate"), state_json(1), OPERATOR)
        assert [e.event.state for e in _claim(services, "a")] == ["team/new.tfstate"]
    finally:
        services.close()


def test_a_sender_behind_by_many_records_catches_up_in_bounded_claims(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim looks at a bounded number of records (it holds the write lock meanwhile)
    and says when it left some: the sender claims again at once."""
    monkeypatch.setattr(outbox_module, "_SCAN", 3)
    for i in range(4):  # a record each
        services.states.write(StateName(f"team/s{i}.tfstate"), state_json(1), OPERATOR)
    assert services.hooks is not None
    claimed: list[str | None] = []
    rounds = 0
    while True:
        rounds += 1
        claimed += [e.event.state for e in _claim(services, "a")]
        if not services.hooks.outbox.more:
            break
    assert sorted(s for s in claimed if s) == [f"team/s{i}.tfstate" for i in range(4)]
    assert rounds > 1


def test_a_lease_gives_each_row_to_one_sender(services: Services) -> None:
    for i in range(5):
        services.states.write(StateName(f"team/s{i}.tfstate"), state_json(1), OPERATOR)
    first = _claim(services, "a", limit=3)
    second = _claim(services, "b", limit=10)
    assert len(first) == 3 and len(second) == 2
    assert not {e.id for e in first} & {e.id for e in second}
    assert _claim(services, "c") == []  # all leased
    assert [e.id for e in _claim(services, "d", lease=-1)] == []  # leases still running


def test_a_row_names_its_audit_record_and_the_sender_reads_the_event_from_it(
    services: Services,
) -> None:
    services.states.write(StateName("team/a.tfstate"), state_json(1), OPERATOR)
    assert services.hooks is not None
    outbox = services.hooks.outbox
    (entry,) = _claim(services, "a")
    # One short row: the event itself stays in the audit trail, once.
    ((text, seq, audited),) = outbox.db.run(
        lambda db: db.execute(
            "SELECT o.event, o.audit_seq, a.event FROM hook_outbox o "
            "JOIN audit a ON a.seq = o.audit_seq"
        ).fetchall()
    )
    assert text == "" and seq >= 1
    (written,) = services.audit.query(AuditFilter(action="write", state="team/**"))
    assert entry.event == written and entry.event.to_json() == json.loads(audited)
    assert entry.kind == "state.written" and entry.hook == "ci"


def test_an_outbox_from_before_audit_references_is_read_and_extended(tmp_path: Path) -> None:
    data = tmp_path / "data"
    built = Services.build(load_settings({"data_dir": data}))
    built.build_parts()  # the outbox's tables, as a server's start creates them
    built.close()
    db = sqlite3.connect(data / "statekeeper.db")
    db.executescript(
        "DROP TABLE hook_outbox; CREATE TABLE hook_outbox ("
        "id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, hook TEXT NOT NULL, "
        "kind TEXT NOT NULL, event TEXT NOT NULL, payload BLOB, status TEXT NOT NULL, "
        "attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL, lease_owner TEXT, "
        "lease_until REAL, last_error TEXT, created TEXT NOT NULL, done TEXT, "
        "UNIQUE (event_id, hook));"
    )
    old = Event(action=Action.LOCK, actor="ci", state="team/a.tfstate", lock_id="L1")
    db.execute(
        "INSERT INTO hook_outbox (event_id, hook, kind, event, status, next_attempt, created) "
        "VALUES (?, 'ci', 'lock.acquired', ?, 'pending', 0, '2026-12-05T00:00:00Z')",
        (old.id, json.dumps(old.to_json())),
    )
    db.commit()
    db.close()
    reopened = Services.build(
        load_settings({"data_dir": data}, env={"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"})
    )
    try:
        assert reopened.hooks is not None
        reopened.hooks.add(Subscription("ci", "http://127.0.0.1:9/hook", "s3cret"))
        reopened.states.write(StateName("team/a.tfstate"), state_json(1), OPERATOR)
        entries = _claim(reopened, "a")
        assert [(e.kind, e.event.action) for e in entries] == [
            ("lock.acquired", Action.LOCK),
            ("state.written", Action.WRITE),
        ]
        assert entries[0].event == old
    finally:
        reopened.close()


def test_a_cloudevent_is_compact_utf8_json_even_with_what_orjson_refuses() -> None:
    event = Event(action=Action.WRITE, actor="ci", state="équipe/app.tfstate", serial=3)
    body = cloudevent("state.written", event, "statekeeper", {"resources": {"added": ["a.b"]}})
    envelope = json.loads(body)
    assert body == json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
    assert envelope["subject"] == "équipe/app.tfstate" and envelope["data"]["serial"] == 3
    huge = Event(action=Action.WRITE, actor="ci", state="team/app.tfstate", serial=2**70)
    assert json.loads(cloudevent("state.written", huge, "statekeeper"))["data"]["serial"] == 2**70


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 12, 5, 15, 20, 1, 123456, tzinfo=UTC),
        datetime(2026, 12, 5, 15, 20, 1, 120000, tzinfo=UTC),
        datetime(2026, 12, 5, 15, 20, 1, 0, tzinfo=UTC),
        datetime(2026, 12, 5, 16, 20, 1, 5, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_the_cloudevent_of_a_recorded_event_is_the_events_own(when: datetime) -> None:
    event = Event(
        action=Action.LOCK,
        actor="ci",
        state="team/app.tfstate",
        lock_id="L1",
        who="ci@runner",
        operation="OperationTypeApply",
        time=when,
    )
    extra = {"resources": {"added": ["a.b"], "changed": [], "removed": []}}
    recorded = json.loads(json.dumps(event.to_json()))
    assert recorded_cloudevent("lock.acquired", recorded, "sk", extra) == cloudevent(
        "lock.acquired", event, "sk", extra
    )
    # A time recorded in another form (an older writer's) is sent in the usual one.
    recorded["time"] = when.astimezone(UTC).isoformat()
    envelope = json.loads(recorded_cloudevent("lock.acquired", recorded, "sk"))
    assert envelope["time"] == json.loads(cloudevent("lock.acquired", event, "sk"))["time"]


def test_a_write_that_stored_nothing_makes_no_row(services: Services) -> None:
    """Terraform retrying a write it already made: the bytes were current, no version
    was stored, and no subscription hears of it."""
    services.states.write(StateName("team/a.tfstate"), state_json(1), OPERATOR)
    services.states.write(StateName("team/a.tfstate"), state_json(1), OPERATOR)
    writes = services.audit.query(AuditFilter(action="write", state="team/**"))
    assert [bool(e.detail and e.detail.startswith("unchanged")) for e in writes] == [False, True]
    assert [e.event_id for e in _claim(services, "a")] == [writes[0].id]


def test_a_claim_with_no_new_record_changes_no_page(services: Services) -> None:
    """A round with nothing new (the worker's poll, every second) commits no change: each
    change empties the page cache of every other connection to the database, the
    requests' included."""
    services.states.write(StateName("team/a.tfstate"), state_json(1), OPERATOR)
    assert services.hooks is not None
    other = sqlite3.connect(services.hooks.outbox.db.path)
    try:
        _claim(services, "a")
        (before,) = other.execute("PRAGMA data_version").fetchone()
        assert _claim(services, "b") == []
        assert other.execute("PRAGMA data_version").fetchone() == (before,)
        services.states.write(StateName("other/b.tfstate"), state_json(1), OPERATOR)
        (written,) = other.execute("PRAGMA data_version").fetchone()
        assert _claim(services, "b") == []  # a record no one wants: the cursor moves
        assert other.execute("PRAGMA data_version").fetchone() != (written,)
    finally:
        other.close()

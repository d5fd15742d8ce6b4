"""The outbox on the embedded database: rows commit with the audit record, leases, order."""

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
from statekeeper.hooks.model import Subscription, cloudevent, recorded_cloudevent
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


def test_an_events_outbox_row_is_committed_with_its_audit_record(services: Services) -> None:
    services.states.write(StateName("team/a.tfstate"), state_json(1), OPERATOR)
    services.states.write(StateName("other/b.tfstate"), state_json(1), OPERATOR)  # not wanted
    (written,) = services.audit.query(AuditFilter(action="write", state="team/**"))
    assert _outbox(services) == [(written.id, "ci", "state.written")]


def test_a_command_queues_its_event_for_a_hook_it_never_opened(tmp_path: Path) -> None:
    """A CLI run builds the webhooks on its first event (a lock listing never does): that
    event still gets its row, in its audit record's transaction."""
    settings = load_settings(
        {"data_dir": tmp_path / "data"}, env={"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"}
    )
    first = Services.build(settings)
    first.hooks.add(Subscription("ci", "http://127.0.0.1:9/hook", "s3cret", ("team/**",)))
    first.close()
    later = Services.build(settings)
    try:
        later.states.write(StateName("team/a.tfstate"), state_json(1), OPERATOR)
        (written,) = later.audit.query(AuditFilter(action="write", state="team/**"))
        assert _outbox(later) == [(written.id, "ci", "state.written")]
    finally:
        later.close()


def test_a_failing_outbox_write_never_costs_the_audit_record(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(db: sqlite3.Connection, event: Event, seq: int) -> None:
        db.execute("INSERT INTO hook_outbox (event_id) VALUES ('half a row')")

    services.audit.join(broken)
    services.states.write(StateName("team/a.tfstate"), state_json(1), OPERATOR)
    assert [e.action for e in services.audit.query(AuditFilter(state="team/**"))] == ["write"]
    # The working companion's row is kept; the broken one's half row is not.
    assert [kind for _, _, kind in _outbox(services)] == ["state.written"]
    assert "a write joined to the audit record failed" in caplog.text


def test_a_lease_gives_each_row_to_one_sender(services: Services) -> None:
    for i in range(5):
        services.states.write(StateName(f"team/s{i}.tfstate"), state_json(1), OPERATOR)
    assert services.hooks is not None
    outbox = services.hooks.outbox
    first = outbox.claim("a", lease=60, limit=3)
    second = outbox.claim("b", lease=60, limit=10)
    assert len(first) == 3 and len(second) == 2
    assert not {e.id for e in first} & {e.id for e in second}
    assert outbox.claim("c", lease=60) == []  # all leased
    assert [e.id for e in outbox.claim("d", lease=-1)] == []  # leases still running


def test_a_row_names_its_audit_record_and_the_sender_reads_the_event_from_it(
    services: Services,
) -> None:
    services.states.write(StateName("team/a.tfstate"), state_json(1), OPERATOR)
    assert services.hooks is not None
    outbox = services.hooks.outbox
    # One short row: the event itself stays in the audit trail, once.
    ((text, seq, audited),) = outbox.db.run(
        lambda db: db.execute(
            "SELECT o.event, o.audit_seq, a.event FROM hook_outbox o "
            "JOIN audit a ON a.seq = o.audit_seq"
        ).fetchall()
    )
    assert text == "" and seq >= 1
    (entry,) = outbox.claim("a", lease=60)
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
        entries = reopened.hooks.outbox.claim("a", lease=60)
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

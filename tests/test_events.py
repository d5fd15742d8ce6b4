"""The event stream's contract: one event per operation, its outcome, and subscribers."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from statekeeper.errors import Forbidden, StorageError
from statekeeper.events import Action, Event, EventStream
from statekeeper.security.audit import AuditFilter, SqliteAuditLog
from statekeeper.security.caller import Caller
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName

CI = Caller(actor="ci", remote_addr="10.0.0.7", claims={"run_id": "42"})
NAME = StateName("team/app.tfstate")


def _stream() -> tuple[EventStream, list[Event]]:
    stream, seen = EventStream(), []
    stream.subscribe(seen.append)
    return stream, seen


def test_an_operation_is_one_event_with_the_callers_facts() -> None:
    stream, seen = _stream()
    lock = LockInfo.new("OperationTypeApply", "ci@runner")
    with stream.event(Action.LOCK, CI, NAME) as event:
        event.lock(lock)
        event.version, event.serial = "v7", 7
    (e,) = seen
    assert (e.action, e.actor, e.outcome, e.state) == (Action.LOCK, "ci", "ok", str(NAME))
    assert (e.remote_addr, e.claims) == ("10.0.0.7", {"run_id": "42"})
    assert (e.lock_id, e.who, e.operation) == (lock.id, "ci@runner", "OperationTypeApply")
    assert (e.version, e.serial, e.detail) == ("v7", 7, None)


@pytest.mark.parametrize(
    ("error", "outcome", "detail"),
    [
        (Forbidden("ci may not write team/app.tfstate"), "forbidden", "ci may not write"),
        (ValueError("boom"), "internal", "ValueError"),
    ],
)
def test_a_failed_operation_is_one_event_with_the_error_code(
    error: Exception, outcome: str, detail: str
) -> None:
    stream, seen = _stream()

    def fail() -> None:
        with stream.event(Action.WRITE, CI, NAME) as event:
            event.detail = "overwritten by the failure"
            raise error

    with pytest.raises(type(error)):
        fail()
    (e,) = seen
    assert e.outcome == outcome and e.detail is not None and e.detail.startswith(detail)


def test_events_inside_an_open_event_fold_into_it() -> None:
    stream, seen = _stream()
    with stream.event(Action.ROLLBACK, CI, NAME):
        with stream.event(Action.READ, CI, NAME):
            pass
        with stream.event(Action.WRITE, CI, NAME) as inner:
            inner.version = "not-recorded"
    assert [(e.action, e.version) for e in seen] == [(Action.ROLLBACK, None)]
    # Once closed, the next operation is its own event again.
    with stream.event(Action.READ, CI, NAME):
        pass
    assert [e.action for e in seen] == [Action.ROLLBACK, Action.READ]


def test_a_failure_inside_a_folded_event_is_the_outer_events_outcome() -> None:
    stream, seen = _stream()
    with (
        pytest.raises(Forbidden),
        stream.event(Action.PUSH, CI, NAME),
        stream.event(Action.WRITE, CI, NAME),
    ):
        raise Forbidden("no write")
    assert [(e.action, e.outcome) for e in seen] == [(Action.PUSH, "forbidden")]


def test_two_streams_do_not_fold_into_each_other() -> None:
    a, seen_a = _stream()
    b, seen_b = _stream()
    with a.event(Action.MIGRATE, CI, NAME), b.event(Action.WRITE, CI, NAME):
        pass
    assert [e.action for e in seen_a] == [Action.MIGRATE]
    assert [e.action for e in seen_b] == [Action.WRITE]


def test_record_success_false_records_only_a_refusal() -> None:
    stream, seen = _stream()
    with stream.event(Action.AUDIT_READ, CI, record_success=False):
        pass
    assert seen == []
    with pytest.raises(Forbidden), stream.event(Action.AUDIT_READ, CI, record_success=False):
        raise Forbidden("admin needed")
    assert [(e.action, e.outcome) for e in seen] == [(Action.AUDIT_READ, "forbidden")]


def test_a_failing_subscriber_is_logged_with_the_event_and_fails_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = EventStream()

    def broken(event: Event) -> None:
        raise StorageError("the audit bucket refused the object")

    seen: list[Event] = []
    stream.subscribe(broken)
    stream.subscribe(seen.append)
    with (
        caplog.at_level(logging.ERROR, logger="statekeeper.events"),
        stream.event(Action.WRITE, CI, NAME) as event,
    ):
        event.serial = 3
    assert [e.serial for e in seen] == [3]  # the next subscriber still has it
    (record,) = [r for r in caplog.records if r.name == "statekeeper.events"]
    message = record.getMessage()
    assert "the audit bucket refused the object" in message
    logged = json.loads(message.split("the event: ", 1)[1])
    assert logged["action"] == "write" and logged["serial"] == 3 and logged["state"] == str(NAME)


def test_an_unexpected_subscriber_error_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = EventStream()

    def broken(event: Event) -> None:
        raise KeyError("bug")

    stream.subscribe(broken)
    with caplog.at_level(logging.ERROR, logger="statekeeper.events"):
        stream.emit(Event(action=Action.LOCK, actor="ci"))
    (record,) = [r for r in caplog.records if r.name == "statekeeper.events"]
    assert record.exc_info is not None and '"action":"lock"' in record.getMessage()


def test_the_audit_trail_is_a_subscriber_and_keeps_the_json_shape(tmp_path: Path) -> None:
    stream = EventStream()
    log = SqliteAuditLog(SqliteDatabase(tmp_path / "a.db"))
    stream.subscribe(log.record)
    with stream.event(Action.ROLLBACK, CI, NAME) as event:
        event.version, event.serial = "v3", 3
    (stored,) = log.query(AuditFilter(action="rollback"))
    doc = stored.to_json()
    assert list(doc) == [
        "action",
        "actor",
        "outcome",
        "state",
        "version",
        "serial",
        "remote_addr",
        "claims",
        "lock_id",
        "who",
        "operation",
        "detail",
        "time",
        "id",
        "count",
    ]
    assert doc["action"] == "rollback" and isinstance(doc["action"], str)
    assert Event.from_json(json.loads(json.dumps(doc))) == stored


def test_the_audit_time_column_is_fixed_width_utc_with_microseconds(tmp_path: Path) -> None:
    """Text order is time order (the ``since`` filter compares text), a whole second too."""
    db = SqliteDatabase(tmp_path / "a.db")
    log = SqliteAuditLog(db)
    whole = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for when in (
        whole,
        whole.replace(microsecond=7),
        whole.astimezone(timezone(timedelta(hours=2))),
    ):
        log.record(Event(action=Action.READ, actor="ci", time=when))
    column = [
        r[0] for r in db.run(lambda c: c.execute("SELECT time FROM audit ORDER BY seq").fetchall())
    ]
    assert column == [
        "2026-01-02T03:04:05.000000Z",
        "2026-01-02T03:04:05.000007Z",
        "2026-01-02T03:04:05.000000Z",
    ]
    assert len(log.query(AuditFilter(since=whole))) == 3


def test_an_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="not-an-action"):
        Event(action="not-an-action", actor="ci")  # type: ignore[arg-type]


def test_to_json_carries_every_field_and_reads_back() -> None:
    event = Event(action=Action.WRITE, actor="ci", claims={"sub": "x"}, serial=3, count=2)
    raw = event.to_json()
    assert set(raw) == set(Event.__dataclass_fields__)
    assert Event.from_json(json.loads(json.dumps(raw))) == event
    raw["claims"]["sub"] = "changed"  # a copy: the event stays as it was
    assert event.claims == {"sub": "x"}


def test_to_json_is_a_fresh_dict_each_time() -> None:
    # Made once and kept (the audit trail and the access line both ask): what a caller
    # adds to or takes from its copy is not in the next one.
    event = Event(action=Action.WRITE, actor="ci", state="team/a.tfstate", claims={"k": "v"})
    first = event.to_json()
    first["event_time"] = first.pop("time")
    first["claims"]["k"] = "changed"
    again = event.to_json()
    assert again == Event.from_json(again).to_json()
    assert "event_time" not in again and again["time"].endswith("Z")
    assert again["claims"] == {"k": "v"}


@pytest.mark.parametrize(
    ("serial", "detail", "as_is"),
    [
        (3, "the lineage is ü", True),  # orjson's text: UTF-8 as is
        (2**70, "past 64 bits", False),  # orjson refuses the integer: json's, escaped
        (3, "a lone \udc80 surrogate", False),  # orjson refuses it: json's, escaped
    ],
)
def test_json_text_is_the_events_json_and_what_the_audit_trail_stores(
    tmp_path: Path, serial: int, detail: str, as_is: bool
) -> None:
    event = Event(Action.WRITE, "ci", state="team/ü.tfstate", serial=serial, detail=detail)
    text = event.json_text()
    assert json.loads(text) == event.json_view()
    assert "\n" not in text and text.encode()  # one line, and UTF-8 encodable
    assert ("team/ü.tfstate" in text) is as_is and ("\\u00fc" in text) is not as_is
    assert event.json_text() is text  # made once
    db = SqliteDatabase(tmp_path / "a.db")
    SqliteAuditLog(db).record(event)
    (stored,) = db.run(lambda c: c.execute("SELECT event FROM audit").fetchone())
    assert stored == text
    assert Event.from_json(json.loads(stored)) == event


def test_an_enclosing_scope_covers_the_operation_and_its_recording_once() -> None:
    stream, seen = _stream()
    trace: list[str] = []

    @contextmanager
    def scope() -> Iterator[None]:
        trace.append("enter")
        try:
            yield
        finally:
            trace.append(f"exit after {len(seen)} events")

    stream.enclose(scope)
    with stream.event(Action.WRITE, CI, NAME), stream.event(Action.READ, CI, NAME):
        trace.append("operation")
    with pytest.raises(Forbidden), stream.event(Action.LOCK, CI, NAME):
        raise Forbidden("no")
    assert trace == [
        "enter",
        "operation",
        "exit after 1 events",
        "enter",
        "exit after 2 events",
    ]


def test_several_enclosing_scopes_nest_in_the_order_they_were_added() -> None:
    stream, seen = _stream()
    trace: list[str] = []

    def scope(name: str) -> Callable[[], AbstractContextManager[None]]:
        @contextmanager
        def entered() -> Iterator[None]:
            trace.append(f"enter {name}")
            try:
                yield
            finally:
                trace.append(f"exit {name} after {len(seen)} events")

        return entered

    stream.enclose(scope("a"))
    stream.enclose(scope("b"))
    with stream.event(Action.WRITE, CI, NAME):
        trace.append("operation")
    assert trace == [
        "enter a",
        "enter b",
        "operation",
        "exit b after 1 events",
        "exit a after 1 events",
    ]


def test_an_event_id_is_the_text_of_a_random_uuid() -> None:
    ids = {Event(action=Action.READ, actor="ci").id for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122

"""The outbox on the embedded database: made by the sender from the audit trail, leases, order."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from tests.security.support import OPERATOR, state_json

from statekeeper.app import Services
from statekeeper.events import Action, Event
from statekeeper.hooks import outbox as outbox_module
from statekeeper.hooks.model import Subscription, cloudevent, recorded_cloudevent
from statekeeper.hooks.outbox import Attempt, Entry
from statekeeper.security.audit import AuditFilter
from statekeeper.settings import Settings, load_settings
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
    ((text, seq),) = outbox.db.run(
        lambda db: db.execute("SELECT event, audit_seq FROM hook_outbox").fetchall()
    )
    ((audited,),) = services.store.records.database.run(
        lambda db: db.execute("SELECT event FROM audit WHERE seq = ?", (seq,)).fetchall()
    )
    assert text == "" and seq >= 1
    (written,) = services.audit.query(AuditFilter(action="write", state="team/**"))
    assert entry.event == written and entry.event.to_json() == json.loads(audited)
    assert entry.kind == "state.written" and entry.hook == "ci"


def _opened(settings: Settings) -> None:
    """The services opened with their webhooks (which open the queue), and closed."""
    services = Services.build(settings)
    assert services.hooks is not None
    services.close()


def _old_queue(path: Path, columns: str, rows: str) -> None:
    """The webhook queue's tables as an earlier statekeeper kept them, in the store's own
    database (``columns``: hook_outbox's; ``rows``: SQL run after)."""
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE hook_outbox (" + columns + ", UNIQUE (event_id, hook));"
        "CREATE TABLE hook_cursor (name TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE hook_deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "outbox_id INTEGER NOT NULL, event_id TEXT NOT NULL, hook TEXT NOT NULL, "
        "kind TEXT NOT NULL, attempt INTEGER NOT NULL, time TEXT NOT NULL, status INTEGER, "
        "error TEXT, duration_ms REAL NOT NULL, outcome TEXT NOT NULL);" + rows
    )
    db.commit()
    db.close()


_OLD_OUTBOX = (
    "id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, hook TEXT NOT NULL, "
    "kind TEXT NOT NULL, event TEXT NOT NULL, payload BLOB, status TEXT NOT NULL, "
    "attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL, lease_owner TEXT, "
    "lease_until REAL, last_error TEXT, created TEXT NOT NULL, done TEXT"
)


def test_a_queue_kept_in_the_stores_database_moves_to_its_own_file(tmp_path: Path) -> None:
    """An earlier statekeeper kept the queue in the store's database, its rows without
    their audit record's seq: its rows, delivery log and cursor move, the subscriptions
    stay, and the old tables are dropped."""
    data = tmp_path / "data"
    settings = load_settings({"data_dir": data}, env={"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"})
    built = Services.build(settings)
    assert built.hooks is not None
    built.hooks.add(Subscription("ci", "http://127.0.0.1:9/hook", "s3cret"))
    built.close()
    store = data / "statekeeper.db"
    (store.parent / (store.name + "-hooks")).unlink()  # as before the queue had a file
    old = Event(action=Action.LOCK, actor="ci", state="team/a.tfstate", lock_id="L1")
    _old_queue(
        store,
        _OLD_OUTBOX,
        "INSERT INTO hook_outbox (event_id, hook, kind, event, status, next_attempt, created) "
        f"VALUES ('{old.id}', 'ci', 'lock.acquired', '{json.dumps(old.to_json())}', 'pending', "
        "0, '2026-12-05T00:00:00Z');"
        "INSERT INTO hook_deliveries (outbox_id, event_id, hook, kind, attempt, time, status, "
        "duration_ms, outcome) VALUES (7, 'e7', 'ci', 'lock.released', 1, "
        "'2026-12-05T00:00:00Z', 204, 1.5, 'delivered');"
        "INSERT INTO hook_cursor VALUES ('audit', (SELECT COALESCE(MAX(seq), 0) FROM audit));",
    )
    reopened = Services.build(settings)
    try:
        assert reopened.hooks is not None
        assert [s.name for s in reopened.hooks.all()] == ["ci"]
        assert [d["event_id"] for d in reopened.hooks.outbox.deliveries()] == ["e7"]
        reopened.states.write(StateName("team/a.tfstate"), state_json(1), OPERATOR)
        entries = _claim(reopened, "a")
        assert [(e.kind, e.event.action) for e in entries] == [
            ("lock.acquired", Action.LOCK),
            ("state.written", Action.WRITE),
        ]
        assert entries[0].event == old
    finally:
        reopened.close()
    tables = sqlite3.connect(store).execute("SELECT name FROM sqlite_master").fetchall()
    assert not {t for (t,) in tables} & {"hook_outbox", "hook_cursor", "hook_deliveries"}
    assert ("hook_subscriptions",) in tables


def test_a_queue_moved_halfway_is_moved_again_and_nothing_doubles(tmp_path: Path) -> None:
    """A process stopped after copying the old tables, before dropping them: the next one
    copies them again, keeping the rows already copied."""
    data = tmp_path / "data"
    settings = load_settings({"data_dir": data}, env={"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"})
    _opened(settings)
    store = data / "statekeeper.db"
    row = (
        "INSERT INTO hook_outbox (event_id, hook, kind, event, status, next_attempt, created, "
        "audit_seq) VALUES ('e1', 'ci', 'lock.acquired', '', 'pending', 0, 'then', 1);"
    )
    _old_queue(store, _OLD_OUTBOX + ", audit_seq INTEGER", row)
    queue = sqlite3.connect(store.parent / (store.name + "-hooks"))
    queue.execute(row.removesuffix(";").replace("INSERT", "INSERT OR IGNORE"))  # copied once
    queue.commit()
    queue.close()
    _opened(settings)
    queue = sqlite3.connect(store.parent / (store.name + "-hooks"))
    assert queue.execute("SELECT event_id FROM hook_outbox").fetchall() == [("e1",)]
    queue.close()


def test_a_queue_an_older_release_made_again_joins_the_queues_own_rows(tmp_path: Path) -> None:
    """An older release run on a data directory this one had opened makes its queue in
    the store's database again, numbered from 1 like the queue file's own rows: on the
    next upgrade its pending row and log entry are kept beside those, not dropped as
    duplicates of them."""
    data = tmp_path / "data"
    settings = load_settings({"data_dir": data}, env={"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"})
    _opened(settings)
    store = data / "statekeeper.db"
    queue = sqlite3.connect(store.parent / (store.name + "-hooks"))
    queue.executescript(
        "INSERT INTO hook_outbox (id, event_id, hook, kind, event, status, next_attempt, "
        "created, done) VALUES (1, 'mine', 'ci', 'state.written', '', 'delivered', 0, 'then', "
        "'then');"
        "INSERT INTO hook_deliveries (seq, outbox_id, event_id, hook, kind, attempt, time, "
        "status, duration_ms, outcome) VALUES (1, 1, 'mine', 'ci', 'state.written', 1, 'then', "
        "204, 1.0, 'delivered');"
    )
    queue.close()
    _old_queue(
        store,
        _OLD_OUTBOX + ", audit_seq INTEGER",
        "INSERT INTO hook_outbox (id, event_id, hook, kind, event, status, next_attempt, "
        "created, attempts) VALUES (1, 'theirs', 'ci', 'state.written', '', 'pending', 0, "
        "'later', 1);"
        "INSERT INTO hook_deliveries (seq, outbox_id, event_id, hook, kind, attempt, time, "
        "error, duration_ms, outcome) VALUES (1, 1, 'theirs', 'ci', 'state.written', 1, "
        "'later', 'refused', 1.0, 'retry');",
    )
    _opened(settings)
    _opened(settings)  # a second open finds nothing left to move
    queue = sqlite3.connect(store.parent / (store.name + "-hooks"))
    rows = queue.execute("SELECT id, event_id, status FROM hook_outbox ORDER BY id").fetchall()
    log = queue.execute(
        "SELECT outbox_id, event_id, outcome FROM hook_deliveries ORDER BY seq"
    ).fetchall()
    queue.close()
    assert rows == [(1, "mine", "delivered"), (2, "theirs", "pending")]
    assert log == [(1, "mine", "delivered"), (2, "theirs", "retry")]


def test_a_store_restored_behind_its_queue_has_its_new_events_delivered(tmp_path: Path) -> None:
    """The store's database restored from a backup older than the queue: its new records
    take the numbers of records the queue looked at before. They are queued and sent;
    the rows of the records lost are dead (their numbers name other events now)."""
    data = tmp_path / "data"
    settings = load_settings({"data_dir": data}, env={"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"})
    store = data / "statekeeper.db"
    services = Services.build(settings)
    try:
        assert services.hooks is not None
        services.hooks.add(Subscription("ci", "http://127.0.0.1:9/hook", "s3cret"))
        services.states.write(StateName("team/kept.tfstate"), state_json(1), OPERATOR)
        assert len(_claim(services, "a")) == 1
        backup = sqlite3.connect(tmp_path / "backup.db")
        with closing(sqlite3.connect(store)) as live:
            live.backup(backup)
        for i in range(3):
            services.states.write(StateName(f"team/lost{i}.tfstate"), state_json(1), OPERATOR)
        assert len(_claim(services, "a", limit=1)) == 1  # the cursor moves past all three
    finally:
        services.close()
    with closing(sqlite3.connect(store)) as live:
        backup.backup(live)  # SQLite's online backup, the way docs/operations.md restores
    backup.close()
    restored = Services.build(settings)
    try:
        for i in range(4):
            restored.states.write(StateName(f"team/new{i}.tfstate"), state_json(1), OPERATOR)
        claimed = [e.event.state for e in _claim(restored, "b")]
        assert claimed == [f"team/new{i}.tfstate" for i in range(4)]
        assert restored.hooks is not None
        dead = restored.hooks.outbox.db.run(
            lambda db: db.execute(
                "SELECT event_id FROM hook_outbox WHERE status = 'dead' "
                "AND last_error LIKE '%audit record is not in the store%'"
            ).fetchall()
        )
        assert len(dead) == 2  # lost1 and lost2; lost0 is leased to "a" still
    finally:
        restored.close()


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


def test_the_senders_rounds_change_no_page_of_the_stores_database(services: Services) -> None:
    """The sender's claims and attempts write the queue's file only: a request never
    waits for the sender's write lock, nor finds its page cache emptied by it. A round
    with nothing new (the worker's poll, every second) changes no page even there."""
    assert services.hooks is not None
    store = sqlite3.connect(services.store.records.database.path)
    queue = sqlite3.connect(services.hooks.outbox.db.path)
    try:
        services.states.write(StateName("team/a.tfstate"), state_json(1), OPERATOR)
        (before,) = store.execute("PRAGMA data_version").fetchone()
        (entry,) = _claim(services, "a")
        services.hooks.outbox.finish("a", [Attempt(entry, "delivered", 204, None, 0.01)])
        assert services.hooks.outbox.deliveries()[0]["outcome"] == "delivered"
        assert store.execute("PRAGMA data_version").fetchone() == (before,)
        (looked,) = queue.execute("PRAGMA data_version").fetchone()
        assert _claim(services, "b") == []
        assert queue.execute("PRAGMA data_version").fetchone() == (looked,)
        services.states.write(StateName("other/b.tfstate"), state_json(1), OPERATOR)
        assert _claim(services, "b") == []  # a record no one wants: the cursor moves
        assert queue.execute("PRAGMA data_version").fetchone() != (looked,)
    finally:
        store.close()
        queue.close()

"""The rules as tables: grants, tokens (database and file), the rate limiter, the audit log."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from statekeeper.errors import BadRequest, Conflict, NotFound, RateLimited
from statekeeper.events import Event
from statekeeper.security.audit import AuditFilter, SqliteAuditLog, StoreAuditLog
from statekeeper.security.caller import Caller
from statekeeper.security.grants import ScopePolicy, parse_grant, visible
from statekeeper.security.policy import Permission
from statekeeper.security.tokens import hash_secret, issue
from statekeeper.security.tokenstores import FileTokenStore, SqliteTokenStore
from statekeeper.server.limits import RateLimiter
from statekeeper.storage.memory import MemoryStore
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.terraform.names import StateName
from statekeeper.times import parse_duration, utcnow


@pytest.mark.parametrize(
    "text", ["team/*", "team/*:owner", ":read", "/team:read", "a**b:read", "team/:read"]
)
def test_malformed_grants_say_how_to_write_one(text: str) -> None:
    with pytest.raises(BadRequest, match="PATTERN:PERMISSION"):
        parse_grant(text)


def test_permissions_are_ordered_and_server_actions_need_admin_on_everything() -> None:
    policy = ScopePolicy()
    name = StateName("team/app.tfstate")
    writer = Caller(actor="w", scopes=("team/*:write",))
    assert policy.allows(writer, name, Permission.OUTPUTS)
    assert policy.allows(writer, name, Permission.WRITE)
    assert not policy.allows(writer, name, Permission.ADMIN)
    assert not policy.allows(Caller(actor="a", scopes=("team/**:admin",)), None, Permission.ADMIN)
    assert policy.allows(Caller(actor="r", scopes=("**:admin",)), None, Permission.ADMIN)
    assert not policy.allows(Caller(actor="nobody", scopes=()), name, Permission.OUTPUTS)
    # The local operator is not subject to grants.
    assert policy.allows(Caller(actor="operator:me"), None, Permission.ADMIN)


def test_tokens_are_hashed_and_expire(tmp_path: Path) -> None:
    store = SqliteTokenStore(SqliteDatabase(tmp_path / "t.db"))
    assert store.empty()
    issued = issue("ci", ["team/*:write"], parse_duration("90d"))
    store.add(issued.record)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("t.db*"))
    assert issued.secret.encode() not in raw
    assert issued.secret.startswith("skt_") and len(issued.secret) > 40
    found = store.find(hash_secret(issued.secret))
    assert found is not None and found.matches(issued.secret)
    assert not found.matches(issued.secret + "x")
    assert found.expires is not None
    assert not found.expired()
    assert found.expired(utcnow() + timedelta(days=91))
    with pytest.raises(Conflict):
        store.add(issue("ci", ["**:read"]).record)
    store.revoke("ci")
    with pytest.raises(NotFound):
        store.revoke("ci")
    with pytest.raises(BadRequest):
        issue("has:colon", ["**:read"])
    with pytest.raises(BadRequest):
        parse_duration("90 years")


def test_tokens_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    writer = FileTokenStore(path)
    reader = FileTokenStore(path)  # another replica
    issued = issue("deploy", ["team/**:write", "shared/*:outputs"])
    writer.add(issued.record)
    assert issued.secret not in path.read_text()
    assert reader.get("deploy") == issued.record
    writer.revoke("deploy")
    assert reader.get("deploy") is None
    assert reader.empty()


def test_rate_limiter_is_a_bucket_per_caller() -> None:
    limiter = RateLimiter(rate=2, burst=3)
    for _ in range(3):
        limiter.check("ci", now=100.0)
    with pytest.raises(RateLimited) as info:
        limiter.check("ci", now=100.0)
    assert info.value.retry_after == 1
    limiter.check("other", now=100.0)  # another caller has its own bucket
    limiter.check("ci", now=100.5)  # refilled at 2 per second
    with pytest.raises(RateLimited):
        limiter.check("ci", now=100.5)
    RateLimiter(rate=0, burst=1).check("anyone")  # 0 turns it off


def test_sqlite_audit_log_is_append_only(tmp_path: Path) -> None:
    log = SqliteAuditLog(SqliteDatabase(tmp_path / "a.db"))
    log.record(Event(action="read", actor="ci", state="team/app.tfstate"))
    log.record(Event(action="write", actor="ci", state="ops/x.tfstate", outcome="forbidden"))
    with sqlite3.connect(tmp_path / "a.db") as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE audit SET outcome = 'ok'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit")
    assert [e.action for e in log.query(AuditFilter(state="team/**"))] == ["read"]
    assert [e.outcome for e in log.query(AuditFilter(actor="ci"))] == ["ok", "forbidden"]


def test_store_audit_log_writes_jsonl_objects_in_batches() -> None:
    store = MemoryStore(name=str(uuid.uuid4()))
    log = StoreAuditLog(store, flush_every=3600)
    first = Event(action="lock", actor="oidc:repo", claims={"run_id": "7"}, who="ci@x")
    second = Event(action="read", actor="reader", state="team/app.tfstate")
    log.record(first)
    log.record(second)
    assert list(store.scan("statekeeper!/audit/")) == []  # pending
    assert log.query(AuditFilter()) == [first, second]  # a query writes what is pending
    keys = [i.key for i in store.scan("statekeeper!/audit/")]
    assert len(keys) == 1
    assert keys[0].startswith(f"statekeeper!/audit/{first.time:%Y/%m/%d}/")
    assert keys[0].endswith(".jsonl")
    assert store.get(keys[0]).data.decode().count("\n") == 2  # type: ignore[union-attr]
    third = Event(action="write", actor="ci", state="team/app.tfstate")
    log.record(third)
    log.close()  # the server stopping writes the rest
    assert len(list(store.scan("statekeeper!/audit/"))) == 2
    assert log.query(AuditFilter(actor="ci")) == [third]
    assert log.query(AuditFilter(since=utcnow() + timedelta(days=1))) == []


def test_listings_show_only_states_the_caller_may_read() -> None:
    names = ["team/a.tfstate", "ops/b.tfstate", "statekeeper!/audit/x.jsonl", "team/c/d.tfstate"]
    reader = Caller(actor="ci", scopes=("team/*:read",))
    assert [n for n in names if visible(ScopePolicy(), reader, n)] == ["team/a.tfstate"]
    # outputs is what terraform_remote_state needs of a state it names; a listing tells more.
    outputs = Caller(actor="remote", scopes=("team/*:outputs",))
    assert [n for n in names if visible(ScopePolicy(), outputs, n)] == []
    operator = Caller(actor="operator:me")
    assert [n for n in names if visible(ScopePolicy(), operator, n)] == [
        "team/a.tfstate",
        "ops/b.tfstate",
        "team/c/d.tfstate",
    ]


def test_a_request_that_never_answers_gets_503_after_the_timeout() -> None:
    import asyncio

    import httpx
    from starlette.types import Receive, Scope, Send

    from statekeeper.server.limits import TimeoutMiddleware

    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.Event().wait()  # a store that never answers

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=TimeoutMiddleware(stuck, seconds=0.2))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await client.get("/state/team/a.tfstate")

    r = asyncio.run(call())
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "1"
    assert "longer than 0.2 s" in r.json()["message"]

"""Unauthenticated requests cannot flood the store (#11.5).

300 refused requests with long paths from one address, against a real server
on SQLite: the address is limited (429 with Retry-After after a burst), the
refusals are recorded as a few events with a count, each bounded in size, and
the database grows by kilobytes, not megabytes. Valid credentials from the
same address still work.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
from tests.security.support import basic, make_tokens

from statekeeper.events import Event
from statekeeper.server.denials import Denials
from statekeeper.testing.processes import StatekeeperServer

FLOOD = 300


def _db_size(data: Path) -> int:
    return sum(p.stat().st_size for p in data.glob("statekeeper.db*"))


def test_a_flood_of_refused_requests_is_limited_and_coalesced(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    workdir = tmp_path / "server"
    secrets = make_tokens(workdir, {"ci": ["team/*:read"]})
    server = serve(workdir=workdir)
    data = workdir / ".statekeeper"
    before = _db_size(data)
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=30) as http:
        for n in range(FLOOD):
            path = f"/state/team/{n:04d}-" + "x" * 3000 + ".tfstate"
            r = http.post(server.url + path, content=b"{}", headers=basic("nobody", "wrong"))
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1
        assert (
            http.get(
                server.state_url("team/a.tfstate"), headers=basic("ci", secrets["ci"])
            ).status_code
            == 404
        )  # the address's valid caller is not limited
    assert set(statuses) == {401, 429}
    assert statuses[429] >= FLOOD // 2
    server.stop()  # pending counts are recorded at shutdown

    with sqlite3.connect(data / "statekeeper.db") as db:
        rows = db.execute("SELECT event FROM audit WHERE action = 'authenticate'").fetchall()
    events = [json.loads(row[0]) for row in rows]
    assert 1 <= len(events) <= 3
    assert sum(e["count"] for e in events) == FLOOD
    assert all(len(e["detail"]) <= 1100 for e in events)
    assert _db_size(data) - before < 256 * 1024


def test_refusals_are_recorded_once_per_window_per_caller() -> None:
    emitted: list[Event] = []
    denials = Denials(emitted.append, rate=1000, burst=1000, window=60)
    for t in range(10):
        denials.refuse("10.0.0.1", "anonymous", "GET /state/a", "no credentials", now=float(t))
    denials.refuse("10.0.0.2", "anonymous", "GET /state/a", "no credentials", now=10.0)
    assert [(e.remote_addr, e.count) for e in emitted] == [("10.0.0.1", 1), ("10.0.0.2", 1)]
    denials.refuse("10.0.0.2", "anonymous", "GET /state/b", "no credentials", now=61.0)
    # The first window of 10.0.0.1 has passed: its 9 repeats are one event.
    assert [(e.remote_addr, e.count) for e in emitted[2:]] == [("10.0.0.1", 9)]
    denials.flush()
    assert [(e.remote_addr, e.count) for e in emitted[3:]] == [("10.0.0.2", 1)]
    assert "GET /state/b" in str(emitted[3].detail)


def test_an_event_is_bounded_whatever_it_is_given() -> None:
    from statekeeper.events import Action

    event = Event(
        action=Action.AUTHENTICATE,
        actor="a" * 10_000,
        detail="d" * 1_000_000,
        who="w" * 100_000,
        claims={f"k{i}": "v" * 5000 for i in range(100)},
    )
    assert len(json.dumps(event.to_json())) < 16 * 1024
    assert event.detail is not None and len(event.detail) <= 1024
    assert event.detail.endswith("(999003 more characters)")
    assert event.detail.startswith("d" * 997 + "…")
    # Read back from the audit trail, a cut field is kept as recorded, not cut again.
    again = Event.from_json(event.to_json())
    for name in ("actor", "detail", "who", "claims"):
        assert getattr(again, name) == getattr(event, name), name

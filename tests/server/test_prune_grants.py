"""A prune that reaches a state the caller may not prune removes nothing at all.

It used to check each state's grant as it came to it: a caller with ``admin`` on
``team/**`` and no prefix pruned ``team/app.tfstate``, then was answered 403 at
``zzz/app.tfstate``, reading as if nothing had happened.

A real ``statekeeper serve`` on SQLite with access control and a retention rule.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from tests.security.support import bearer, make_tokens

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import state_bytes

HISTORY = '[[retention]]\nstates = "**"\nkeep_last = 1\n'
STATES = ("team/app.tfstate", "zzz/app.tfstate")


def test_a_refused_prune_removes_nothing(tmp_path: Path) -> None:
    secrets = make_tokens(
        tmp_path,
        {
            "root": ["**:admin"],
            "team": ["team/**:admin"],
            "peek": ["team/**:admin", "zzz/**:read"],
        },
    )
    env = {"STATEKEEPER_HISTORY": HISTORY, "STATEKEEPER_RATE_LIMIT": "0"}
    server = StatekeeperServer(tmp_path, env=env).start()
    root, team = bearer(secrets["root"]), bearer(secrets["team"])
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for name in STATES:
                for serial in (1, 2, 3):
                    r = http.post(f"/state/{name}", content=state_bytes(serial), headers=root)
                    assert r.status_code == 200, r.text
            for body in ({"dry_run": True}, {}):
                refused = http.post("/api/v1/prune", json=body, headers=team)
                assert refused.status_code == 403, refused.text
                message = refused.json()["message"]
                assert "nothing was pruned" in message
                assert "zzz" not in message  # a state it may not read goes unnamed
                peek = http.post("/api/v1/prune", json=body, headers=bearer(secrets["peek"]))
                assert peek.status_code == 403, peek.text
                assert "may not prune zzz/app.tfstate" in peek.json()["message"]
            for name in STATES:
                assert len(http.get(f"/api/v1/versions/{name}", headers=root).json()) == 3
            done = http.post("/api/v1/prune", json={"prefix": "team/"}, headers=team)
            assert done.status_code == 200, done.text
            assert [p["name"] for p in done.json()] == ["team/app.tfstate"]
    finally:
        server.stop()

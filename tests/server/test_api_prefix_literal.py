"""A prefix holding a glob character (``*``, ``?``, ``[``) is refused by the API as by
the CLI (one rule, ``globs.literal_prefix``, in the listings, the reap, the prune and
the trash they share): 400 naming the prefix and the one meant, where it answered an
empty list, since no state name holds a glob character. A real ``statekeeper serve``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from tests.security.support import lock_body

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import state_bytes

HISTORY = '[[retention]]\nstates = "**"\nkeep_last = 1'


def test_the_api_refuses_a_glob_given_as_a_prefix(tmp_path: Path) -> None:
    env = {"STATEKEEPER_HISTORY": HISTORY, "STATEKEEPER_RATE_LIMIT": "0"}
    server = StatekeeperServer(tmp_path, env=env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for serial in (1, 2):
                r = http.post("/state/team/app.tfstate", content=state_bytes(serial))
                assert r.status_code == 200, r.text
            assert http.request("LOCK", "/lock/team/app.tfstate", content=lock_body("1")).is_success
            asked = [
                http.get("/api/v1/states", params={"prefix": "team/*"}),
                http.get("/api/v1/locks", params={"prefix": "team/?"}),
                http.get("/api/v1/trash", params={"prefix": "team/["}),
                http.post("/api/v1/prune", json={"prefix": "team/*"}),
                http.post("/api/v1/reap", json={"older_than": "0s", "prefix": "team/*"}),
            ]
            for refused in asked:
                assert refused.status_code == 400, (refused.request.url, refused.text)
                body = refused.json()
                assert body["error"] == "bad_request"
                assert "the prefix 'team/" in body["message"]
                assert "not a glob; give 'team/'" in body["message"]
            assert len(http.get("/api/v1/versions/team/app.tfstate").json()) == 2  # not pruned
            assert [lock["name"] for lock in http.get("/api/v1/locks").json()] == [
                "team/app.tfstate"
            ]  # not reaped
    finally:
        server.stop()

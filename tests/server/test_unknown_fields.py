"""A change asked with a body field or query parameter the route does not take is
refused, and nothing is done.

Ignored, a misspelt ``"dryrun": true`` to ``POST /api/v1/prune`` pruned for real, as
did ``POST /api/v1/prune?dry_run=true``, and ``"dry_run": true`` to ``POST
/api/v1/rollback`` (which has no dry run) rolled back. Reads may carry any parameter.

A real ``statekeeper serve`` on SQLite with a retention rule.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import state_bytes

HISTORY = '[[retention]]\nstates = "**"\nkeep_last = 1\n'


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/prune", {"dryrun": True}, "body field dryrun"),
        ("/api/v1/prune", {"dry-run": True}, "body field dry-run"),
        ("/api/v1/prune?dry_run=true", {}, "query parameter dry_run"),
        (
            "/api/v1/rollback/team/app.tfstate",
            {"to": "serial:1", "dry_run": True},
            "body field dry_run",
        ),
        ("/api/v1/rollback/team/app.tfstate?dry_run=1", {"to": "1"}, "query parameter dry_run"),
        ("/api/v1/reap", {"older_than": "0s", "dryRun": True}, "body field dryRun"),
    ],
)
def test_an_unknown_field_is_refused_and_nothing_changes(
    tmp_path: Path, path: str, body: dict[str, object], field: str
) -> None:
    server = StatekeeperServer(tmp_path, env={"STATEKEEPER_HISTORY": HISTORY}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for serial in (1, 2, 3):
                r = http.post("/state/team/app.tfstate", content=state_bytes(serial))
                assert r.status_code == 200, r.text
            before = http.get("/api/v1/versions/team/app.tfstate").json()
            refused = http.post(path, json=body)
            assert refused.status_code == 400, refused.text
            assert refused.json()["error"] == "invalid_request"
            message = refused.json()["message"]
            assert field in message
            assert "nothing was done" in message
            assert http.get("/api/v1/versions/team/app.tfstate").json() == before
    finally:
        server.stop()


def test_a_read_may_carry_any_query_parameter(tmp_path: Path) -> None:
    server = StatekeeperServer(tmp_path).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/state/team/app.tfstate", content=state_bytes(1)).status_code == 200
            r = http.get("/api/v1/versions/team/app.tfstate", params={"_": "1700000000"})
            assert r.status_code == 200, r.text
    finally:
        server.stop()

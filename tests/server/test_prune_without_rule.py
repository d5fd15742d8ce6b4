"""A prune with no retention rule configured is refused the same way by the API and the
CLI (one rule, in ``state/prune.py``): 400 / exit 2, saying what to configure. An
answer of nothing pruned would read as "nothing to do" where nothing could be done.

A real ``statekeeper serve`` with access control on, and the CLI on its store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from tests.security.support import bearer, make_tokens

from statekeeper.testing.processes import SRC, StatekeeperServer
from statekeeper.testing.statefiles import state_bytes

MESSAGE = "no retention rule is configured: add [[history.retention]] tables"


def test_the_api_and_the_cli_refuse_a_prune_without_a_rule(tmp_path: Path) -> None:
    secret = make_tokens(tmp_path, {"root": ["**:admin"]})["root"]
    server = StatekeeperServer(tmp_path, env={"STATEKEEPER_RATE_LIMIT": "0"}).start()
    try:
        with httpx.Client(base_url=server.url, headers=bearer(secret), timeout=30) as http:
            for serial in (1, 2):
                r = http.post("/state/team/app.tfstate", content=state_bytes(serial))
                assert r.status_code == 200, r.text
            for body in ({}, {"dry_run": True}, {"prefix": "team/"}):
                refused = http.post("/api/v1/prune", json=body)
                assert refused.status_code == 400, (body, refused.text)
                assert refused.json()["error"] == "bad_request"
                assert MESSAGE in refused.json()["message"]
            versions = http.get("/api/v1/versions/team/app.tfstate").json()
            assert len(versions) == 2  # nothing removed
    finally:
        server.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")}
    cli = subprocess.run(
        [sys.executable, "-m", "statekeeper", "prune"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 2, (cli.stdout, cli.stderr)
    assert MESSAGE in cli.stderr

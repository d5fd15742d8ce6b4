"""A trash restore is refused while someone holds the state's lock, as a rollback is.

A lock on a deleted name is a run about to write a new state there: restored under
it, the run's write was refused (another lineage) after its resources were made.
Through the API (423, the holder named) and the CLI on the server's store (exit 3),
against a real ``statekeeper serve`` holding a Terraform LOCK.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from tests.cli.conftest import CliFn

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import state_bytes

NAME = "team/app.tfstate"
LOCK = (
    '{"ID":"5c4f6a1e-0000-4000-8000-0000000000cc","Operation":"OperationTypeApply",'
    '"Info":"","Who":"bob@ci","Version":"1.15.5","Created":"2026-11-23T09:12:40Z","Path":""}'
)


def test_a_restore_under_someone_elses_lock_is_refused(
    serve: Callable[..., StatekeeperServer], cli_process: CliFn
) -> None:
    server = serve()
    store = ("--data-dir", str(server.workdir / ".statekeeper"))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for serial in (1, 2):
            assert http.post(f"/state/{NAME}", content=state_bytes(serial)).status_code == 200
        assert http.delete(f"/state/{NAME}").status_code == 200
        assert http.request("LOCK", f"/state/{NAME}", content=LOCK).status_code == 200

        refused = http.post(f"/api/v1/trash/restore/{NAME}")
        assert refused.status_code == 423, refused.text
        assert refused.json()["Who"] == "bob@ci"
        run = cli_process(*store, "trash", "restore", NAME)
        assert run.exit_code == 3, (run.stdout, run.stderr)
        assert "bob@ci" in run.stderr
        assert [t["name"] for t in http.get("/api/v1/trash").json()] == [NAME]

        assert http.request("UNLOCK", f"/state/{NAME}", content=LOCK).status_code == 200
        restored = http.post(f"/api/v1/trash/restore/{NAME}")
        assert restored.status_code == 200, restored.text
        assert http.get(f"/state/{NAME}").content == state_bytes(2)

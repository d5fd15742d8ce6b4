"""History hygiene through a real ``statekeeper serve``: Terraform's DELETE goes to the
trash and the API brings it back; the background prune applies the retention rules."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import instance, state_bytes

Serve = Callable[..., StatekeeperServer]

CONFIG = """
[history]
prune_interval = "1s"

[[history.retention]]
states = "kept/**"
keep_last = 2
"""


def test_delete_restore_and_background_prune(serve: Serve, tmp_path: Path) -> None:
    config = tmp_path / "statekeeper.toml"
    config.write_text(CONFIG)
    server = serve("--config", str(config))
    name = "team/app.tfstate"
    data = state_bytes(1, resources=[instance("terraform_data", "x", {"id": "é <&>"})])
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.post(f"/state/{name}", content=data).status_code == 200
        # Terraform's DELETE (what `workspace delete` sends): gone, but in the trash.
        assert http.delete(f"/state/{name}").status_code == 200
        assert http.get(f"/state/{name}").status_code == 404
        listed = http.get("/api/v1/trash").json()
        assert [t["name"] for t in listed] == [name]
        restored = http.post(f"/api/v1/trash/restore/{name}")
        assert restored.status_code == 200, restored.text
        assert restored.json()["serial"] == 1
        assert http.get(f"/state/{name}").content == data
        again = http.post(f"/api/v1/trash/restore/{name}")
        assert again.status_code == 409 and again.json()["error"] == "conflict"

        for serial in (1, 2, 3, 4):
            http.post("/state/kept/app.tfstate", content=state_bytes(serial)).raise_for_status()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            listed = http.get("/api/v1/versions/kept/app.tfstate")
            assert listed.status_code == 200, listed.text  # also while the prune runs
            versions = listed.json()
            if len(versions) == 2:
                break
            time.sleep(0.2)
        assert [v["serial"] for v in versions] == [4, 3]
        assert len(http.get(f"/api/v1/versions/{name}").json()) == 1  # no rule covers it
        audit = http.get("/api/v1/audit", params={"action": "prune"}).json()["events"]
        assert audit and audit[0]["actor"] == "statekeeper (history.prune_interval)"


def test_a_prune_interval_of_0s_never_prunes_in_the_background(
    serve: Serve, tmp_path: Path
) -> None:
    config = tmp_path / "statekeeper.toml"
    config.write_text(CONFIG.replace('prune_interval = "1s"', 'prune_interval = "0s"'))
    server = serve("--config", str(config))
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for serial in (1, 2, 3, 4):
            http.post("/state/kept/app.tfstate", content=state_bytes(serial)).raise_for_status()
        time.sleep(3)  # three of the 1s test's intervals
        assert len(http.get("/api/v1/versions/kept/app.tfstate").json()) == 4
        # The rules still apply when asked for.
        assert http.post("/api/v1/prune", json={}).status_code == 200
        assert len(http.get("/api/v1/versions/kept/app.tfstate").json()) == 2

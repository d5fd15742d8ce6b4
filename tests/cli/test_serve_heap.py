"""``statekeeper serve`` freezes what start-up built out of the cyclic collector's sight."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from statekeeper.testing.processes import StatekeeperServer


def test_a_started_server_has_frozen_its_start_up_objects(tmp_path: Path) -> None:
    server = StatekeeperServer(tmp_path).start()
    try:
        text = httpx.get(server.url + "/metrics", timeout=30).text
    finally:
        server.stop()
    found = re.search(r"^statekeeper_gc_frozen_objects ([0-9.e+]+)$", text, re.MULTILINE)
    assert found is not None, text
    # Modules, the app, its routes and drivers: tens of thousands of objects, which
    # a full collection would otherwise walk while every request waits.
    assert float(found.group(1)) > 20_000

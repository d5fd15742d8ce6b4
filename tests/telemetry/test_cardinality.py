"""/metrics of a real ``statekeeper serve``: what a caller can add series to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from tests.security.support import basic, make_tokens, state_json

from statekeeper.testing.processes import StatekeeperServer


def test_a_caller_refused_a_write_adds_no_series_per_state_name(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    workdir = tmp_path / "server"
    workdir.mkdir()
    secrets = make_tokens(workdir, {"scraper": ["**:metrics"], "ci": ["team/*:write"]})
    server = serve(workdir=workdir, env={"STATEKEEPER_METRICS_STATES": "team/**"})
    scraper = basic("scraper", secrets["scraper"])
    with httpx.Client(base_url=server.url, timeout=30) as http:
        ci = http.post("/state/team/app", content=state_json(1), headers=basic("ci", secrets["ci"]))
        assert ci.status_code == 200, ci.text
        # The scraper's token may write nothing, and names as many states as it likes.
        for n in range(20):
            refused = http.post(f"/state/team/made-up-{n}", content=state_json(1), headers=scraper)
            assert refused.status_code == 403, refused.text
        text = http.get("/metrics", headers=scraper).text

    assert "made-up" not in text
    refusals = 'statekeeper_state_write_refusals_total{reason="permission",state=""} 20.0'
    assert refusals in text.splitlines()
    # A state the caller may write is still labelled, as the allow-list asks.
    created = 'statekeeper_state_writes_total{result="created",state="team/app"} 1.0'
    assert created in text.splitlines()

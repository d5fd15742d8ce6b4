"""Names and globs refused where they are written, against a real ``statekeeper serve``.

- A token may not take a name the audit trail gives callers that are no token
  (``anonymous``, the server's own ``statekeeper``…): its actions would pass for theirs.
- A state glob ending in ``/`` matches nothing; it is refused wherever a glob is
  written, with the glob that was meant. A token and a webhook subscription stored
  with one before the refusal keep working.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.security.support import basic, bearer, make_tokens, state_json

from statekeeper.app import Services
from statekeeper.hooks.model import Subscription
from statekeeper.security.tokens import TokenRecord, hash_secret
from statekeeper.settings import load_settings
from statekeeper.testing.processes import SRC, StatekeeperServer
from statekeeper.times import utcnow

LEGACY_SECRET = "skt_legacy-token-stored-before-the-refusal-0000000000"


class Served:
    def __init__(self, server: StatekeeperServer, workdir: Path, root: str) -> None:
        self.server = server
        self.workdir = workdir
        self.client = httpx.Client(base_url=server.url, timeout=30, headers=bearer(root))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``statekeeper ARGS`` on the server's own store, as the operator runs it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")}
        return subprocess.run(
            [sys.executable, "-m", "statekeeper", *args],
            cwd=self.workdir,
            env={**env, "PYTHONPATH": str(SRC), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )


def _store_legacy(workdir: Path) -> None:
    """A token and a subscription as an earlier version stored them: each with a glob
    ending in '/' (which never matched anything) beside one that matches."""
    services = Services.build(load_settings({"data_dir": workdir / ".statekeeper"}, env={}))
    try:
        assert services.tokens.store is not None
        services.tokens.store.add(
            TokenRecord(
                "legacy", hash_secret(LEGACY_SECRET), ("team/:read", "team/**:write"), utcnow()
            )
        )
        raw = {"name": "legacy", "url": "https://hooks.example.test/in", "secret": "whsec_x"}
        services.hooks.outbox.add(Subscription.from_json({**raw, "states": ["team/", "ops/**"]}))
    finally:
        services.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir: Path = tmp_path_factory.mktemp("names-and-globs")
    secrets = make_tokens(workdir, {"root": ["**:admin"]})
    _store_legacy(workdir)
    server = StatekeeperServer(workdir, env={"STATEKEEPER_RATE_LIMIT": "0"}).start()
    try:
        yield Served(server, workdir, secrets["root"])
    finally:
        server.stop()


@pytest.mark.parametrize("name", ["anonymous", "Anonymous", "statekeeper", "oidc", "unknown"])
def test_a_token_may_not_take_an_actor_label_of_the_server(served: Served, name: str) -> None:
    r = served.client.post("/api/v1/tokens", json={"name": name, "scopes": ["**:read"]})
    assert r.status_code == 400, r.text
    assert "audit trail" in r.json()["message"] and name in r.json()["message"]
    cli = served.cli("token", "create", name, "--scope", "**:read")
    assert cli.returncode == 2, (cli.stdout, cli.stderr)
    assert "audit trail" in cli.stderr
    names = [t["name"] for t in served.client.get("/api/v1/tokens").json()["tokens"]]
    assert name not in names
    # A name that only begins like one is a name like any other.
    ok = served.client.post("/api/v1/tokens", json={"name": f"{name}-ci", "scopes": ["**:read"]})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(("glob", "meant"), [("team/", "team/**"), ("**/", "**")])
def test_a_glob_ending_in_a_slash_is_refused_where_it_is_written(
    served: Served, glob: str, meant: str
) -> None:
    written = {
        "token grant": served.client.post(
            "/api/v1/tokens", json={"name": "t-slash", "scopes": [f"{glob}:read"]}
        ),
        "audit filter": served.client.get("/api/v1/audit", params={"state": glob}),
        "search filter": served.client.get("/api/v1/search", params={"q": f"state:{glob}"}),
    }
    for where, r in written.items():
        assert r.status_code == 400, (where, r.text)
        assert f"write {meant!r}" in r.json()["message"], (where, r.text)
    for args in (
        ("token", "create", "t-slash", "--scope", f"{glob}:read"),
        ("hooks", "add", "h-slash", "--url", "https://hooks.example.test/x", "--state", glob),
        ("audit", "--state", glob),
    ):
        cli = served.cli(*args)
        assert cli.returncode == 2, (args, cli.stdout, cli.stderr)
        assert meant in cli.stderr, (args, cli.stderr)


def test_a_token_and_a_subscription_stored_with_one_keep_working(served: Served) -> None:
    legacy = basic("legacy", LEGACY_SECRET)
    write = served.client.post("/state/team/app.tfstate", content=state_json(1), headers=legacy)
    assert write.status_code == 200, (
        write.text
    )  # its team/** grant; the write's event passes the hook
    assert served.client.get("/state/team/app.tfstate", headers=legacy).status_code == 200
    assert served.client.get("/state/other/app.tfstate", headers=legacy).status_code == 403
    hooks = served.client.get("/api/v1/hooks")
    assert hooks.status_code == 200, hooks.text
    (hook,) = hooks.json()["hooks"]
    assert hook["states"] == ["team/", "ops/**"]
    listed = served.cli("hooks", "list")
    assert listed.returncode == 0 and "legacy" in listed.stdout, listed.stderr

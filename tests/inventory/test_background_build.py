"""A new replica's first index build runs in the background: searches meanwhile answer
from what is indexed so far, and say how far the build is (API, UI, CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from statekeeper.app import Services
from statekeeper.inventory import Inventory
from statekeeper.inventory.index import Building
from statekeeper.inventory.views import search
from statekeeper.security.caller import Caller
from statekeeper.security.grants import ScopePolicy
from statekeeper.server.app import create_app
from statekeeper.settings import load_settings
from statekeeper.storage.base import ObjectStream
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.storage.sqlite.store import SqliteStore
from statekeeper.testing.statefiles import instance, state_bytes

OPERATOR = Caller(actor="operator:test")
#: More than one batch of the catch-up (200 states per transaction).
STATES = 260


class GatedReads(SqliteStore):
    """The real embedded store, whose reads of the states after the first batch wait
    for ``gate``: a build that is slow past a known point, as a big bucket's is."""

    def __init__(self, db: SqliteDatabase, slow: Callable[[str], bool]) -> None:
        super().__init__(db)
        self.slow = slow
        self.gate = threading.Event()

    def open(self, key: str, version_id: str | None = None) -> ObjectStream | None:
        # What the index reads a state with.
        if self.slow(key):
            assert self.gate.wait(60), "the test never opened the gate"
        return super().open(key, version_id)


def _name(i: int) -> str:
    return f"svc/{i:03d}.tfstate"


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = Services.build(load_settings({"data_dir": tmp_path / "data"}, env={}))
    for i in range(STATES):
        doc = state_bytes(1, resources=[instance("aws_s3_bucket", "logs", {"bucket": f"b{i}"})])
        built.store.put(_name(i), doc, {})
    yield built
    built.close()


def _wait(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _gated(services: Services) -> tuple[Inventory, GatedReads]:
    """An inventory on a gated copy of the store, started as a server starts it, once its
    first batch is in."""
    db = services.store.records.database
    assert db is not None
    # The catch-up reads in listing order (by key): the first batch is 200 states.
    first = {_name(i) for i in range(200)}
    store = GatedReads(db, lambda key: key not in first)
    inventory = Inventory(services.inventory_path, store, refresh=3600)
    services._inventory = inventory  # the server's index: its pages and API answer from it
    inventory.start_build()
    _wait(lambda: inventory.building() == Building(200, STATES), "the first batch")
    return inventory, store


def test_a_search_during_the_first_build_answers_from_the_states_indexed_so_far(
    services: Services,
) -> None:
    inventory, store = _gated(services)
    policy = ScopePolicy()
    started = time.monotonic()
    partial = search(inventory, policy, OPERATOR, "type:aws_s3_bucket", 1000)
    assert time.monotonic() - started < 5  # answered, not waiting for the gate
    assert partial.building is not None
    assert (partial.building.indexed, partial.building.states) == (200, STATES)
    assert "200 of 260 states indexed" in partial.building.note
    assert {h.state for h in partial.hits} == {_name(i) for i in range(200)}
    # The states listing does not come from a partial index: the store answers it.
    assert inventory.summaries("") is None
    store.gate.set()
    _wait(lambda: inventory.building() is None, "the end of the build")
    done = search(inventory, policy, OPERATOR, "type:aws_s3_bucket", 1000)
    assert done.building is None
    assert len(done.hits) == STATES
    listed = inventory.summaries("")
    assert listed is not None and len(listed) == STATES


def test_the_api_and_the_ui_say_the_index_is_being_built(services: Services) -> None:
    _, store = _gated(services)
    try:
        with TestClient(create_app(services), base_url="http://localhost") as client:
            answer = client.get("/api/v1/search", params={"q": "type:aws_s3_bucket", "limit": 1000})
            assert answer.status_code == 200
            body = answer.json()
            assert body["building"] == {"indexed": 200, "states": STATES}
            assert len(body["hits"]) == 200
            counts = client.get("/api/v1/inventory").json()
            assert counts["building"] == {"indexed": 200, "states": STATES}
            assert counts["resource_types"] == {"aws_s3_bucket": 200}
            page = client.get("/ui/search", params={"q": "b7"})
            assert page.status_code == 200
            assert "The index is being built: 200 of 260 states indexed so far" in page.text
            # The states page lists the store meanwhile: every state, not the 200 indexed.
            states = client.get("/", params={"q": "svc/2"})
            assert "60 states" in states.text  # svc/200 … svc/259
    finally:
        store.gate.set()


def test_a_caller_granted_some_states_is_told_of_those_only_during_the_build(
    services: Services,
) -> None:
    # The store-wide figures would tell it how many states there are beyond its grants.
    secret = services.tokens.create(OPERATOR, "few", ["svc/00*:read"], None).secret
    _, store = _gated(services)
    try:
        with TestClient(create_app(services), base_url="http://localhost") as client:
            auth = {"Authorization": f"Bearer {secret}"}
            answer = client.get("/api/v1/search", params={"q": "b7"}, headers=auth)
            assert answer.status_code == 200, answer.text
            assert answer.json()["building"] == {"indexed": 10, "states": None}
            assert [h["state"] for h in answer.json()["hits"]] == ["svc/007.tfstate"]
            counts = client.get("/api/v1/inventory", headers=auth).json()
            assert counts["building"] == {"indexed": 10, "states": None}
            form = client.get("/ui/signin").text
            csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            client.post("/ui/signin", data={"csrf": csrf, "token": "few", "secret": secret})
            page = client.get("/ui/search", params={"q": "b7"})
            assert page.status_code == 200
            assert "The index is being built: 10 states indexed so far" in page.text
            assert "260" not in page.text and "200" not in page.text
    finally:
        store.gate.set()


def test_without_start_build_a_search_waits_for_the_index(services: Services) -> None:
    """The CLI on the store itself: a process that would exit before a background build."""
    inventory = services.inventory()
    found = search(inventory, ScopePolicy(), OPERATOR, "type:aws_s3_bucket", 1000)
    assert found.building is None
    assert len(found.hits) == STATES


def test_statekeeper_search_through_the_server_notes_the_build(
    services: Services, tmp_path: Path
) -> None:
    import httpx
    import uvicorn

    from statekeeper.testing.processes import SRC, free_port

    _, store = _gated(services)
    port = free_port()
    config = uvicorn.Config(
        create_app(services, allow_anonymous=True), host="127.0.0.1", port=port, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: server.started, "the server to listen")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        search = ["search", "type:aws_s3_bucket", "-n", "1000"]
        proc = subprocess.run(
            [sys.executable, "-m", "statekeeper", *search, "--server", f"http://127.0.0.1:{port}"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert "note: the index is being built: 200 of 260 states indexed so far" in proc.stderr
        assert proc.stdout.count("aws_s3_bucket.logs") == 200
    finally:
        store.gate.set()
        server.should_exit = True
        thread.join(30)

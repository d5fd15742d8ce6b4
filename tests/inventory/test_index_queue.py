"""The index is updated in the background: writes only queue their state, searches wait
for what this server queued, bursts are indexed once, and a crash is caught up."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from statekeeper.app import Services
from statekeeper.inventory import Inventory
from statekeeper.inventory.views import search
from statekeeper.security.caller import Caller
from statekeeper.security.grants import ScopePolicy
from statekeeper.server.app import create_app
from statekeeper.settings import load_settings
from statekeeper.terraform.names import StateName
from statekeeper.testing.statefiles import instance, state_bytes

OPERATOR = Caller(actor="operator:test")
NAME = StateName("team/app.tfstate")
#: Long enough that the index's thread never starts on its own during a test.
NEVER = 3600.0


def _state(serial: int, bucket: str) -> bytes:
    return state_bytes(serial, resources=[instance("aws_s3_bucket", "logs", {"bucket": bucket})])


def _buckets(inventory: Inventory) -> set[str]:
    hits = search(inventory, ScopePolicy(), OPERATOR, "type:aws_s3_bucket", 100).hits
    return {h.state for h in hits}


def _indexed_version(inventory_path: Path, name: str) -> str | None:
    conn = sqlite3.connect(inventory_path)
    try:
        row = conn.execute("SELECT version_id FROM inv_states WHERE name = ?", (name,)).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    built = Services.build(load_settings({"data_dir": tmp_path / "data"}, env={}))
    built.inventory().queue.delay = NEVER  # only an answer (or close) starts the thread
    yield built
    built.close()


def test_a_write_does_not_index_in_the_request_and_a_search_right_after_sees_it(
    services: Services,
) -> None:
    inventory = services.inventory()
    services.states.write(NAME, _state(1, "queued-bucket"), OPERATOR)
    # The write returned with its state only named to the queue: nothing read or indexed.
    assert inventory.queue.pending() == 1
    assert _indexed_version(services.inventory_path, str(NAME)) is None
    started = time.monotonic()
    with TestClient(create_app(services), base_url="http://localhost") as client:
        r = client.get("/api/v1/search", params={"q": "queued-bucket"})
    assert r.status_code == 200, r.text
    assert [h["state"] for h in r.json()["hits"]] == [str(NAME)]
    # The search woke the thread instead of waiting out its delay.
    assert time.monotonic() - started < 10


def test_rapid_writes_to_one_state_are_indexed_once_from_the_last_version(
    services: Services,
) -> None:
    inventory = services.inventory()
    for serial in range(1, 11):
        services.states.write(NAME, _state(serial, f"bucket-{serial}"), OPERATOR)
    assert inventory.queue.pending() == 1
    assert inventory.queue.indexed == 0
    assert _buckets(inventory) == {str(NAME)}
    assert inventory.queue.indexed == 1  # ten writes, one re-read
    current = services.store.head(str(NAME))
    assert current is not None
    assert _indexed_version(services.inventory_path, str(NAME)) == current.version_id
    hits = search(inventory, ScopePolicy(), OPERATOR, "bucket-10", 10).hits
    assert [h.serial for h in hits] == [10]
    assert search(inventory, ScopePolicy(), OPERATOR, "bucket-9", 10).hits == []


def test_listings_and_counts_wait_for_the_queue_too(services: Services) -> None:
    inventory = services.inventory()
    inventory.fresh()  # caught up: the next answers read the index, not the store
    services.states.write(NAME, _state(1, "listed-bucket"), OPERATOR)
    assert inventory.queue.pending() == 1
    listed = inventory.summaries("team/")
    assert listed is not None and [s.name for s in listed] == [str(NAME)]
    services.states.write(StateName("team/other.tfstate"), _state(1, "b"), OPERATOR)
    assert inventory.counts(lambda _: True)["resource_types"] == {"aws_s3_bucket": 2}
    services.states.delete(NAME, OPERATOR)
    assert str(NAME) not in inventory.facts([str(NAME)])


def test_a_deleted_state_leaves_the_index_in_the_background(services: Services) -> None:
    inventory = services.inventory()
    services.states.write(NAME, _state(1, "gone-bucket"), OPERATOR)
    assert _buckets(inventory) == {str(NAME)}
    services.states.delete(NAME, OPERATOR)
    assert _indexed_version(services.inventory_path, str(NAME)) is not None  # still queued
    assert _buckets(inventory) == set()


def test_versions_queued_but_not_indexed_at_a_crash_are_caught_up_at_the_next_start(
    tmp_path: Path,
) -> None:
    settings = load_settings({"data_dir": tmp_path / "data"}, env={})
    first = Services.build(settings)
    crashed = first.inventory()
    crashed.queue.delay = NEVER
    first.states.write(NAME, _state(1, "before-crash"), OPERATOR)
    assert _buckets(crashed) == {str(NAME)}
    first.states.write(NAME, _state(2, "after-crash"), OPERATOR)
    assert crashed.queue.pending() == 1  # acknowledged, not indexed: then the crash
    indexed = _indexed_version(first.inventory_path, str(NAME))
    try:
        # The next server opens the same index file, as `serve` does, and catches up.
        second = Services.build(settings)
        try:
            second.build_index_in_background = True
            inventory = second.inventory()
            deadline = time.monotonic() + 30
            while inventory.building() is not None:
                assert time.monotonic() < deadline, "the catch-up never ended"
                time.sleep(0.02)
            current = second.store.head(str(NAME))
            assert current is not None and current.version_id != indexed
            assert _indexed_version(second.inventory_path, str(NAME)) == current.version_id
            found = search(inventory, ScopePolicy(), OPERATOR, "after-crash", 10).hits
            assert [h.serial for h in found] == [2]
            assert search(inventory, ScopePolicy(), OPERATOR, "before-crash", 10).hits == []
        finally:
            second.close()
    finally:
        first.close()


def test_closing_the_index_indexes_what_is_queued_and_stops_its_thread(
    services: Services,
) -> None:
    inventory = services.inventory()
    services.states.write(NAME, _state(1, "closing-bucket"), OPERATOR)
    thread = inventory.queue._thread
    assert thread is not None and thread.is_alive()
    inventory.close()
    services._inventory = None
    assert not thread.is_alive()
    current = services.store.head(str(NAME))
    assert current is not None
    assert _indexed_version(services.inventory_path, str(NAME)) == current.version_id

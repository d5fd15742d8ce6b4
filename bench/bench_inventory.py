"""Inventory and UI at scale: listing 10,000 states, searching 10,000 x 50 resources,
rebuilding the index from S3.

SQLite: N states of R resources each (realistic attributes: an ARN, tags, a
sensitive password) are put straight into the store (setup speed), then:
the operator's states listing and the UI's states page (listing, grouping, a
page of 50 with each row's details) as the server answers them; a full index
build; search latency over a mix of queries (an exact ARN, a word, a prefix, a
type filter, a type filter with words) as p50/p95; counts. S3 (moto): the same
states put with boto3 (as Terraform's ``backend "s3"`` would), then a full
rebuild of an empty index from the bucket and a catch-up after 1% changed.
"""

from __future__ import annotations

import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from harness import OUT, env_int, fresh, log, median, percentile

from statekeeper.security.caller import Caller

KINDS = [
    "aws_s3_bucket",
    "aws_iam_role",
    "aws_instance",
    "aws_security_group",
    "aws_lambda_function",
]


def state_doc(i: int, resources: int, serial: int = 1) -> bytes:
    out = []
    for j in range(resources):
        kind = KINDS[j % len(KINDS)]
        name = f"r{j}"
        ident = f"svc{i:05d}-{kind.removeprefix('aws_')}-{j:02d}"
        out.append(
            {
                "mode": "managed",
                "type": kind,
                "name": name,
                "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
                "instances": [
                    {
                        "schema_version": 0,
                        "attributes": {
                            "id": ident,
                            "arn": f"arn:aws:{kind.split('_')[1]}:eu-west-1:123456789012:{ident}",
                            "tags": {"team": f"team{i % 50:02d}", "env": "prod"},
                            "password": f"secret-{i}-{j}",
                            "size": j,
                        },
                        "sensitive_attributes": [[{"type": "get_attr", "value": "password"}]],
                    }
                ],
            }
        )
    doc = {
        "version": 4,
        "terraform_version": f"1.{5 + i % 10}.0",
        "serial": serial,
        "lineage": f"lineage-{i}",
        "outputs": {},
        "resources": out,
    }
    return json.dumps(doc, indent=2).encode()


def key(i: int) -> str:
    return f"org/team{i % 50:02d}/svc{i:05d}.tfstate"


def _time(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _both(fn: Any) -> tuple[float, float]:
    """Wall and CPU seconds (the process's: the server side runs on another thread)."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _queries(n: int, count: int) -> list[str]:
    rng = random.Random(7)
    out = []
    for q in range(count):
        i, j = rng.randrange(n), rng.randrange(50)
        kind = KINDS[j % len(KINDS)]
        ident = f"svc{i:05d}-{kind.removeprefix('aws_')}-{j:02d}"
        out.append(
            [
                f'"arn:aws:{kind.split("_")[1]}:eu-west-1:123456789012:{ident}"',
                ident,
                f"svc{i:05d}*",
                f"type:{kind}",
                f"type:{kind} team{i % 50:02d}",
            ][q % 5]
        )
    return out


def _sqlite(states: int, resources: int) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from statekeeper.app import Services
    from statekeeper.inventory.views import counts, search
    from statekeeper.server.app import create_app
    from statekeeper.settings import load_settings
    from statekeeper.state.operator import Operator

    work = fresh(OUT / "inventory-sqlite")
    services = Services.build(load_settings({"data_dir": work}, env={}))
    caller = Caller(actor="bench")
    setup = time.perf_counter()
    for i in range(states):
        services.store.put(key(i), state_doc(i, resources), {})
    setup_s = time.perf_counter() - setup
    log(f"inventory: {states} states x {resources} resources stored in {setup_s:.0f}s")
    op = Operator(services)
    inventory = services.inventory()
    build = inventory.catch_up()
    log(f"inventory: index built in {build.seconds:.1f}s")
    # The states page takes each row's details from the index once it is built. Timed
    # interleaved with the API's listing, so both see the same load on a shared machine,
    # in wall and in CPU seconds (the process's, which a loaded machine does not inflate).
    client = TestClient(create_app(services))
    listing, page, listing_cpu, page_cpu = [], [], [], []
    for _ in range(7):
        wall, cpu = _both(lambda: op.list_states(caller))
        listing.append(wall)
        listing_cpu.append(cpu)
        wall, cpu = _both(lambda: client.get("/").raise_for_status())
        page.append(wall)
        page_cpu.append(cpu)
    idle = _time(inventory.catch_up)
    queries = _queries(states, 500)
    latencies = []
    empty = 0
    for q in queries:
        start = time.perf_counter()
        found = search(inventory, services.policy, caller, q, 50)
        latencies.append(time.perf_counter() - start)
        empty += not found.hits
    scoped = Caller(actor="team", scopes=("org/team07/**:read",))
    scoped_lat = []
    for q in queries[:100]:
        start = time.perf_counter()
        search(inventory, services.policy, scoped, q, 50)
        scoped_lat.append(time.perf_counter() - start)
    counts_s = _time(lambda: counts(inventory, services.policy, caller))
    services.close()
    size = sum(p.stat().st_size for p in work.glob("inventory.db*"))
    return {
        "states": states,
        "resources_per_state": resources,
        "setup_s": round(setup_s, 1),
        "list_states_s": round(median(listing), 3),
        "ui_states_page_s": round(median(page), 3),
        "list_states_cpu_s": round(median(listing_cpu), 3),
        "ui_states_page_cpu_s": round(median(page_cpu), 3),
        "index_build_s": round(build.seconds, 1),
        "catch_up_unchanged_s": round(idle, 3),
        "index_mb": round(size / 1e6, 1),
        "search_p50_ms": round(median(latencies) * 1000, 1),
        "search_p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "search_scoped_p95_ms": round(percentile(scoped_lat, 0.95) * 1000, 1),
        "search_queries": len(queries),
        "search_empty": empty,
        "counts_s": round(counts_s, 3),
    }


def _s3(states: int, resources: int) -> dict[str, Any]:
    import boto3
    from servers import aws_backend, moto_server

    from statekeeper.inventory import Inventory
    from statekeeper.storage.registry import open_store

    work = fresh(OUT / "inventory-s3")
    with moto_server(work / "moto") as moto:
        aws_backend(moto, "inv", "inv-locks")
        os.environ.update(moto.env())
        s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")

        def put(i: int, serial: int = 1) -> None:
            s3.put_object(Bucket="inv", Key=key(i), Body=state_doc(i, resources, serial))

        setup = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, range(states)))
        setup_s = time.perf_counter() - setup
        store = open_store("s3://inv")
        inventory = Inventory(work / "inventory.db", store, refresh=60)
        full = inventory.catch_up()
        log(f"inventory s3: rebuilt {states} states in {full.seconds:.1f}s")
        changed = max(1, states // 100)
        for i in range(changed):
            put(i * 97 % states, serial=2)
        incremental = inventory.catch_up()
        unchanged = inventory.catch_up()
        # The operator's states listing on S3 while the index is fresh: no bucket listing.
        from_index = _time(lambda: inventory.summaries(""))
        inventory.close()
        first_search = _first_search(store, work / "new-replica.db")
        store.close()
        page_fresh, page_stale = _s3_page(work)
    return {
        "store": "s3 (moto)",
        "states": states,
        "resources_per_state": resources,
        "setup_s": round(setup_s, 1),
        "rebuild_s": round(full.seconds, 1),
        "rebuild_states_per_s": round(states / full.seconds, 1),
        "catch_up_changed": incremental.updated,
        "catch_up_s": round(incremental.seconds, 2),
        "catch_up_unchanged_s": round(unchanged.seconds, 2),
        "list_from_index_s": round(from_index, 3),
        "ui_page_fresh_index_s": round(page_fresh, 3),
        "ui_page_bucket_listing_s": round(page_stale, 3),
        **first_search,
    }


def _first_search(store: Any, path: Any) -> dict[str, Any]:
    """A new replica: the build starts in the background; a search once the build is
    under way answers from what is indexed so far (it used to wait for the whole build)."""
    from statekeeper.inventory import Inventory
    from statekeeper.inventory.views import search
    from statekeeper.security.grants import ScopePolicy

    inventory = Inventory(path, store, refresh=60)
    inventory.start_build()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        under_way = inventory.building()
        if under_way is None or (under_way.states is not None and under_way.indexed > 0):
            break
        time.sleep(0.2)
    start = time.perf_counter()
    found = search(inventory, ScopePolicy(), Caller(actor="bench"), f"type:{KINDS[0]}", 50)
    seconds = time.perf_counter() - start
    inventory.close()  # stops the build at its next batch
    building = found.building
    return {
        "first_search_ms": round(seconds * 1000, 1),
        "first_search_indexed": None if building is None else building.indexed,
        "first_search_states": None if building is None else building.states,
    }


def _s3_page(work: Any) -> tuple[float, float]:
    """The UI's states page on S3 served as a server would: from the fresh index (no
    bucket listing), and with a stale index (one listing of the bucket, no waiting)."""
    from starlette.testclient import TestClient

    from statekeeper.app import Services
    from statekeeper.server.app import create_app
    from statekeeper.settings import load_settings

    # The data directory whose inventory.db the rebuild above wrote; locks in DynamoDB
    # (on S3 lock files, listing the locks is a listing of the bucket too).
    settings = load_settings(
        {"store": "s3://inv", "locks": "dynamodb://inv-locks", "data_dir": work}, env={}
    )
    services = Services.build(settings)
    try:
        inventory = services.inventory()
        inventory.fresh()  # one catch-up (nothing changed): the index is fresh
        client = TestClient(create_app(services))
        fresh = median([_time(lambda: client.get("/").raise_for_status()) for _ in range(3)])
        inventory.refresh = 0  # always due: the page lists the bucket instead
        with inventory._sync:  # and no background catch-up competes with it
            stale = median([_time(lambda: client.get("/").raise_for_status()) for _ in range(3)])
    finally:
        services.close()
    return fresh, stale


def run() -> dict[str, Any]:
    states = env_int("BENCH_INVENTORY_STATES", 10000, 1000)
    resources = env_int("BENCH_INVENTORY_RESOURCES", 50, 50)
    s3_states = env_int("BENCH_INVENTORY_S3_STATES", 10000, 300)
    return {"sqlite": _sqlite(states, resources), "s3": _s3(s3_states, resources)}

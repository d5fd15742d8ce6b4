"""Lock cycle: LOCK → GET → POST (100 KB state) → UNLOCK, per second and its latency.

Targets, each with 1, 8 and 64 concurrent clients, on distinct states and on
one contended state (where clients retry LOCK on 423):

- ``statekeeper-sqlite``: ``statekeeper serve`` on its embedded SQLite store;
- ``statekeeper-aws``: ``statekeeper serve`` on S3 + DynamoDB (moto), once the
  drivers exist (against Terraform's own calls: ``bench_locks_s3.py``);
- ``http-floor``: a bare Starlette app under the same uvicorn, no storage;
- ``service-sqlite``: the same cycle on the service layer in process (the
  storage floor: no HTTP at all).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from durable_floor import durable_cycles
from harness import OUT, aws_drivers_available, env_int, env_list, fresh, log, median, percentile
from rawhttp import Connection, content_md5
from servers import (
    aws_backend,
    floor_server,
    moto_server,
    statekeeper_on_aws,
    statekeeper_server,
)
from statedocs import make_state, read_serial, set_serial

STATE_SIZE = 100 * 1024


def _lock_body(lock_id: str) -> bytes:
    return json.dumps(
        {
            "ID": lock_id,
            "Operation": "OperationTypeApply",
            "Info": "",
            "Who": "bench@localhost",
            "Version": "1.15.0",
            "Created": "2026-01-01T00:00:00Z",
            "Path": "",
        },
        separators=(",", ":"),
    ).encode()


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.conflicts = 0
        self.errors: list[str] = []


async def _http_client(
    port: int, name: str, lineage: str, deadline: float, contended: bool, tally: Tally
) -> None:
    conn = Connection("127.0.0.1", port)
    path = f"/state/{name}"
    doc = make_state(STATE_SIZE, 1, lineage)
    json_headers = {"Content-Type": "application/json"}
    try:
        while time.perf_counter() < deadline:
            lock_id = str(uuid.uuid4())
            lock = _lock_body(lock_id)
            start = time.perf_counter()
            while True:
                r = await conn.request("LOCK", path, lock, json_headers)
                if r.status == 200:
                    break
                if r.status in (409, 423) and contended:
                    tally.conflicts += 1
                    await asyncio.sleep(random.uniform(0, 0.002))
                    if time.perf_counter() >= deadline:
                        return
                    continue
                tally.errors.append(f"LOCK {r.status} {r.body[:200]!r}")
                return
            r = await conn.request("GET", path)
            serial = read_serial(r.body) if r.status == 200 and r.body else 0
            set_serial(doc, serial + 1)
            headers = {**json_headers, "Content-MD5": content_md5(doc)}
            r = await conn.request("POST", f"{path}?ID={lock_id}", doc, headers)
            if r.status != 200:
                tally.errors.append(f"POST {r.status} {r.body[:200]!r}")
            r = await conn.request("UNLOCK", path, lock, json_headers)
            if r.status != 200:
                tally.errors.append(f"UNLOCK {r.status} {r.body[:200]!r}")
                return
            end = time.perf_counter()
            if end <= deadline:
                tally.latencies.append(end - start)
    finally:
        await conn.close()


def run_http(port: int, clients: int, contended: bool, seconds: float, tag: str) -> dict[str, Any]:
    tally = Tally()

    async def main() -> None:
        deadline = time.perf_counter() + seconds
        lineage = str(uuid.uuid4())
        tasks = []
        for i in range(clients):
            name = f"bench/{tag}/shared" if contended else f"bench/{tag}/s{i}"
            tasks.append(
                _http_client(
                    port,
                    name,
                    lineage if contended else str(uuid.uuid4()),
                    deadline,
                    contended,
                    tally,
                )
            )
        await asyncio.gather(*tasks)

    asyncio.run(main())
    return _summary(tally, seconds)


def run_service(
    services: Any, clients: int, contended: bool, seconds: float, tag: str
) -> dict[str, Any]:
    """The cycle on StateService/LockService in this process, one thread per client."""
    from statekeeper.errors import LockConflict
    from statekeeper.security.caller import Caller
    from statekeeper.terraform.names import StateName

    tally = Tally()
    guard = threading.Lock()
    deadline = time.perf_counter() + seconds
    shared_lineage = str(uuid.uuid4())
    caller = Caller("bench", "127.0.0.1")

    def client(i: int) -> None:
        name = StateName(f"bench/{tag}/shared" if contended else f"bench/{tag}/s{i}")
        doc = make_state(STATE_SIZE, 1, shared_lineage if contended else str(uuid.uuid4()))
        mine: list[float] = []
        conflicts = 0
        while time.perf_counter() < deadline:
            lock_id = str(uuid.uuid4())
            lock = _lock_body(lock_id)
            start = time.perf_counter()
            while True:
                try:
                    services.locks.lock(name, lock, caller)
                    break
                except LockConflict:
                    if not contended:
                        raise
                    conflicts += 1
                    time.sleep(random.uniform(0, 0.002))
                    if time.perf_counter() >= deadline:
                        with guard:
                            tally.latencies += mine
                            tally.conflicts += conflicts
                        return
            current = services.states.read(name, caller)
            set_serial(doc, (current.version.serial or 0) + 1 if current else 1)
            data = bytes(doc)
            services.states.write(
                name, data, caller, lock_id=lock_id, content_md5=content_md5(data)
            )
            services.locks.unlock(name, lock, caller)
            end = time.perf_counter()
            if end <= deadline:
                mine.append(end - start)
        with guard:
            tally.latencies += mine
            tally.conflicts += conflicts

    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client, i) for i in range(clients)]:
            f.result()
    return _summary(tally, seconds)


def _summary(tally: Tally, seconds: float) -> dict[str, Any]:
    lat = tally.latencies
    return {
        "cycles": len(lat),
        "cycles_per_s": len(lat) / seconds,
        "p50_ms": percentile(lat, 0.5) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "lock_conflicts": tally.conflicts,
        "errors": tally.errors[:5],
        "error_count": len(tally.errors),
    }


#: A target's run of the cycle: (clients, contended, seconds, tag) -> its summary.
Runner = Callable[[int, bool, float, str], dict[str, Any]]


def _measure(
    targets: dict[str, Runner],
    clients_list: list[int],
    repeats: int,
    seconds: float,
) -> list[dict[str, Any]]:
    """Every target at every client count and mode, ``repeats`` times, interleaved.

    A round runs each (mode, clients) on every target in turn, so the runs a ratio
    divides (a target and its floor; 64 clients and 1 on one state) are seconds apart
    in each round. Run back to back by target they would be minutes apart, and this
    machine's speed drifts by 10-15 % from one minute to the next (findings.md,
    "The contended cycle").
    """
    runs: dict[tuple[str, bool, int], list[dict[str, Any]]] = {}
    for r in range(repeats):
        for contended in (False, True):
            for clients in clients_list:
                for target, runner in targets.items():
                    tag = f"{'c' if contended else 'd'}{clients}r{r}-{uuid.uuid4().hex[:6]}"
                    result = runner(clients, contended, seconds, tag)
                    runs.setdefault((target, contended, clients), []).append(result)
    rows = []
    for target in targets:
        for contended in (False, True):
            for clients in clients_list:
                measured = runs[(target, contended, clients)]
                row = {
                    "target": target,
                    "mode": "contended" if contended else "distinct",
                    "clients": clients,
                    "cycles_per_s": median([x["cycles_per_s"] for x in measured]),
                    "p50_ms": median([x["p50_ms"] for x in measured]),
                    "p99_ms": median([x["p99_ms"] for x in measured]),
                    "errors": sum(x["error_count"] for x in measured),
                    "runs": measured,
                }
                log(
                    f"locks {target} {row['mode']} x{clients}: {row['cycles_per_s']:.1f}/s "
                    f"p50 {row['p50_ms']:.1f} ms p99 {row['p99_ms']:.1f} ms "
                    f"errors {row['errors']}"
                )
                rows.append(row)
    return rows


def _durable_floor(work: Path, repeats: int, seconds: float) -> dict[str, Any]:
    """The durable floor's row (``durable_floor.py``): 1 client, distinct, no latencies."""
    rates = [
        durable_cycles(fresh(work / f"durable-{r}"), seconds, STATE_SIZE) for r in range(repeats)
    ]
    row = {
        "target": "durable-floor",
        "mode": "distinct",
        "clients": 1,
        "cycles_per_s": median(rates),
        "p50_ms": 1000 / median(rates),
        "p99_ms": float("nan"),
        "errors": 0,
        "runs": [{"cycles_per_s": rate} for rate in rates],
    }
    log(f"locks durable-floor distinct x1: {row['cycles_per_s']:.1f}/s")
    return row


def run() -> dict[str, Any]:
    clients_list = env_list("BENCH_LOCK_CLIENTS", [1, 8, 64], [1, 8])
    repeats = env_int("BENCH_REPEATS", 3, 1)
    seconds = float(env_int("BENCH_LOCK_SECONDS", 5, 2))
    work = OUT / "locks"
    rows: list[dict[str, Any]] = []

    def sk_sqlite(n: int, c: bool, s: float, t: str) -> dict[str, Any]:
        # A fresh server and database per run, so runs do not inherit each other's history.
        with statekeeper_server(fresh(work / f"sqlite-{t}")) as server:
            return run_http(server.port, n, c, s, t)

    def svc_sqlite(n: int, c: bool, s: float, t: str) -> dict[str, Any]:
        from statekeeper.app import Services
        from statekeeper.settings import load_settings

        services = Services.build(load_settings({"data_dir": fresh(work / f"svc-{t}")}, env={}))
        try:
            return run_service(services, n, c, s, t)
        finally:
            services.close()

    with floor_server(work / "floor") as floor:
        rows += _measure(
            {
                "http-floor": lambda n, c, s, t: run_http(floor.port, n, c, s, t),
                "statekeeper-sqlite": sk_sqlite,
                "service-sqlite": svc_sqlite,
            },
            clients_list,
            repeats,
            seconds,
        )
    if 1 in clients_list:
        rows.append(_durable_floor(work, repeats, seconds))

    if aws_drivers_available():
        with moto_server(work / "moto") as moto:

            def sk_aws(n: int, c: bool, s: float, t: str) -> dict[str, Any]:
                bucket, table = f"b-{t}".lower()[:60], f"t-{t}"
                aws_backend(moto, bucket, table)
                with statekeeper_on_aws(fresh(work / f"aws-{t}"), moto, bucket, table) as server:
                    return run_http(server.port, n, c, s, t)

            rows += _measure({"statekeeper-aws": sk_aws}, clients_list, repeats, seconds)

    return {
        "params": {
            "clients": clients_list,
            "repeats": repeats,
            "seconds_per_run": seconds,
            "state_bytes": STATE_SIZE,
        },
        "rows": rows,
    }


if __name__ == "__main__":
    from harness import save

    save("locks", run())

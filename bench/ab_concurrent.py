"""Concurrent A/B of the lock cycle: server CPU per cycle, every tree at the same moment.

    python bench/ab_concurrent.py CLIENTS SECONDS ROUNDS NAME=SRC_DIR[;VAR=VALUE...] [...]

Like ``ab_locks.py`` (the same tree and settings syntax), but each round starts a
server from every tree, then drives all of them at once, each with a client process
of its own, for the same seconds, and reads each server's CPU time from ``/proc``.
On a machine whose load swings from one minute to the next, interleaving runs still
gives each configuration a different minute; running them side by side gives them
the same one, and the ratio of two of them, taken within a round, keeps little of
the swing. The figures are inflated alike by the servers' competing for the cores,
so read the ratios, not the milliseconds. The first tree is the reference: each
other's line ends with reference / tree, paired by round (median and range). Each
line also gives the clients' p99 latency of a cycle (its median over the rounds).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import cpu_seconds
from servers import serve_tree

_BENCH_DIR = str(Path(__file__).resolve().parent)
#: The client: warms its server up, waits for the common start, runs the cycle.
_CLIENT = """
import json, sys, time
sys.path.insert(0, sys.argv[5])
from bench_locks import run_http
port, clients = int(sys.argv[1]), int(sys.argv[2])
seconds, start = float(sys.argv[3]), float(sys.argv[4])
run_http(port, clients, False, 1.0, "warm")
while time.time() < start:
    time.sleep(0.01)
print("GO", flush=True)
r = run_http(port, clients, False, seconds, "ab")
print(json.dumps({"cycles": r["cycles"], "rate": r["cycles_per_s"], "p99": r["p99_ms"]}),
      flush=True)
"""


def _start(tree: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    workdir = Path(tempfile.mkdtemp(prefix="sk-abc-"))
    return (*serve_tree(tree, workdir), workdir)


def _round(
    trees: dict[str, str], clients: int, seconds: float
) -> dict[str, tuple[float, float, float]]:
    """(server CPU ms per cycle, cycles/s, p99 ms) of each tree, all driven at once."""
    servers = {}
    try:
        for name, tree in trees.items():
            servers[name] = _start(tree)
        start = time.time() + 4 + len(trees)
        argv = [str(clients), str(seconds), str(start), _BENCH_DIR]
        drivers = {
            name: subprocess.Popen(
                [sys.executable, "-c", _CLIENT, str(port), *argv],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": trees[name].split(";")[0]},
            )
            for name, (_, port, _) in servers.items()
        }
        for driver in drivers.values():
            assert driver.stdout is not None and driver.stdout.readline().strip() == "GO"
        before = {name: cpu_seconds(proc.pid) for name, (proc, _, _) in servers.items()}
        results = {}
        for name, driver in drivers.items():
            assert driver.stdout is not None
            results[name] = json.loads(driver.stdout.readline())
            driver.wait()
        out = {}
        for name, (proc, _, _) in servers.items():
            cpu = cpu_seconds(proc.pid) - before[name]
            cycles = max(int(results[name]["cycles"]), 1)
            out[name] = (1000 * cpu / cycles, float(results[name]["rate"]), results[name]["p99"])
        return out
    finally:
        for proc, _, workdir in servers.values():
            proc.terminate()
            proc.wait(30)
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    clients, seconds, rounds = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    trees = dict(arg.split("=", 1) for arg in sys.argv[4:])
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
    for number in range(1, rounds + 1):
        for name, figures in _round(trees, clients, seconds).items():
            runs[name].append(figures)
        print(
            f"round {number}: "
            + "  ".join(
                f"{n} {r[-1][0]:.2f}ms {r[-1][1]:.0f}/s p99 {r[-1][2]:.0f}ms"
                for n, r in runs.items()
            ),
            flush=True,
        )
    reference, *others = trees
    for name in trees:
        cpu = [c for c, _, _ in runs[name]]
        p99 = statistics.median(p for _, _, p in runs[name])
        line = f"{name}: median {statistics.median(cpu):.2f} ms CPU per cycle, p99 {p99:.1f} ms"
        if name in others:
            pairs = zip(runs[reference], runs[name], strict=True)
            ratios = [r / x for (r, _, _), (x, _, _) in pairs]
            line += (
                f"; {reference}/{name} paired median {statistics.median(ratios):.3f} "
                f"(range {min(ratios):.3f}-{max(ratios):.3f})"
            )
        print(line)


if __name__ == "__main__":
    main()

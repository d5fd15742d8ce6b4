"""Interleaved A/B of the lock cycle: server CPU per cycle for several source trees.

    python bench/ab_locks.py CLIENTS SECONDS ROUNDS NAME=SRC_DIR[;VAR=VALUE...] [...] [--contended]

Each round starts a fresh ``statekeeper serve`` (a fresh data directory) from each
source tree in turn (``PYTHONPATH=SRC_DIR``; e.g. a ``git archive`` of the base
commit's ``src``; ``;VAR=VALUE`` adds settings to that server's environment, e.g.
``bare=src;STATEKEEPER_METRICS=false;STATEKEEPER_LOG_LEVEL=warning``), in an order
turned one place each round, drives it
with ``bench_locks.run_http`` on distinct states (one shared state with
``--contended``), and reads the server's CPU time from ``/proc/PID/stat``
around the run. On a machine shared with other work the cycles per second swing
from run to run; the CPU a cycle costs the server does not, and alternating the
trees spreads the load's swings over all of them. The tool behind findings.md's "Lock cycle (hotpath
branch)".
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench_locks import run_http
from harness import cpu_seconds
from servers import serve_tree


def _one(tree: str, clients: int, seconds: float, contended: bool) -> tuple[float, float, float]:
    """(cycles/s, server CPU ms per cycle, p99 ms) of one fresh server from ``tree``."""
    workdir = Path(tempfile.mkdtemp(prefix="sk-ab-"))
    proc, port = serve_tree(tree, workdir)
    try:
        before = cpu_seconds(proc.pid)
        result = run_http(port, clients, contended, seconds, "ab")
        cpu = cpu_seconds(proc.pid) - before
        cycles = max(int(result["cycles"]), 1)
        return result["cycles_per_s"], 1000 * cpu / cycles, result["p99_ms"]
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    clients, seconds, rounds = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    trees = dict(arg.split("=", 1) for arg in sys.argv[4:] if not arg.startswith("--"))
    contended = "--contended" in sys.argv
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
    names = list(trees)
    for round_ in range(rounds):
        # The order turns one place a round: whatever a server's place in a round gives
        # it (after which one's stop and deleted files) is spread over every tree, not
        # taken for a tree's own figure (findings.md, "The access line's parts at 8 clients").
        turn = round_ % len(names)
        for name in names[turn:] + names[:turn]:
            rate, cpu, p99 = _one(trees[name], clients, seconds, contended)
            runs[name].append((rate, cpu, p99))
            print(f"{name}: {rate:.1f}/s, {cpu:.2f} ms CPU per cycle, p99 {p99:.1f} ms")
    for name, measured in runs.items():
        rate = statistics.median(r[0] for r in measured)
        cpu = statistics.median(r[1] for r in measured)
        p99 = statistics.median(r[2] for r in measured)
        print(f"{name} median: {rate:.1f}/s, {cpu:.2f} ms CPU per cycle, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()

"""Interleaved A/B of the lock cycle: server CPU per cycle for several source trees.

    python bench/ab_locks.py CLIENTS SECONDS ROUNDS NAME=SRC_DIR[;VAR=VALUE...] [...] [--contended]

Each round starts a fresh ``statekeeper serve`` (a fresh data directory) from each
source tree in turn (``PYTHONPATH=SRC_DIR``; e.g. a ``git archive`` of the base
commit's ``src``; ``;VAR=VALUE`` adds settings to that server's environment, e.g.
``bare=src;STATEKEEPER_METRICS=false;STATEKEEPER_LOG_LEVEL=warning``), drives it
with ``bench_locks.run_http`` on distinct states (one shared state with
``--contended``), and reads the server's CPU time from ``/proc/PID/stat``
around the run. On a machine shared with other work the cycles per second swing
from run to run; the CPU a cycle costs the server does not, and alternating the
trees spreads the load's swings over all of them. The tool behind findings.md's "Lock cycle (hotpath
branch)".
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_locks import run_http
from harness import BENCH  # noqa: F401 - puts src/ on sys.path

from statekeeper.testing.processes import free_port


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _one(tree: str, clients: int, seconds: float, contended: bool) -> tuple[float, float, float]:
    """(cycles/s, server CPU ms per cycle, p99 ms) of one fresh server from ``tree``."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="sk-ab-"))
    src, *settings = tree.split(";")
    env = {**os.environ, "STATEKEEPER_LOG_FORMAT": "text", "PYTHONPATH": src}
    env.update(setting.split("=", 1) for setting in settings)
    with (workdir / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "statekeeper", "serve", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((workdir / "server.log").read_text()) from None
                time.sleep(0.05)
        before = _cpu_seconds(proc.pid)
        result = run_http(port, clients, contended, seconds, "ab")
        cpu = _cpu_seconds(proc.pid) - before
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
    for _ in range(rounds):
        for name, src in trees.items():
            rate, cpu, p99 = _one(src, clients, seconds, contended)
            runs[name].append((rate, cpu, p99))
            print(f"{name}: {rate:.1f}/s, {cpu:.2f} ms CPU per cycle, p99 {p99:.1f} ms")
    for name, measured in runs.items():
        rate = statistics.median(r[0] for r in measured)
        cpu = statistics.median(r[1] for r in measured)
        p99 = statistics.median(r[2] for r in measured)
        print(f"{name} median: {rate:.1f}/s, {cpu:.2f} ms CPU per cycle, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()

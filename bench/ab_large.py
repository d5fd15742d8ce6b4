"""Interleaved A/B of a large push: wall time and server CPU for several source trees.

    python bench/ab_large.py ROUNDS SIZE_MB NAME=SRC_DIR[;VAR=VALUE...] [...]

One ``statekeeper serve`` per source tree (``PYTHONPATH=SRC_DIR``, a fresh data
directory each; ``;VAR=VALUE`` adds settings to its environment) and the floor
app (``floor_app.py``) run side by side. Each round pushes the same state
(serial bumped) to the floor and to every tree in turn, timing the push and
reading the server's CPU time (all threads, user + system) from
``/proc/PID/stat`` around it. Taking turns spreads the shared machine's swings
of load over every server alike; the medians printed are per server, and the
push's ratio to the floor is the median of the per-round ratios. The tool
behind findings.md's "The push of a large state, a third time".
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_large import MB, _push
from harness import BENCH, cpu_seconds
from servers import serve_tree
from statedocs import make_state, set_serial


def main() -> None:
    rounds, size_mb = int(sys.argv[1]), int(sys.argv[2])
    trees = dict(arg.split("=", 1) for arg in sys.argv[3:])
    workdirs: list[Path] = []
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for name, tree in {"floor": "", **trees}.items():
            workdir = Path(tempfile.mkdtemp(prefix=f"sk-ab-{name}-"))
            workdirs.append(workdir)
            if name == "floor":
                servers[name] = serve_tree("", workdir, str(BENCH / "floor_app.py"))
            else:
                argv = ("-m", "statekeeper", "serve", "--log-level", "warning", "--port")
                servers[name] = serve_tree(tree, workdir, *argv)
        doc = make_state(size_mb * MB, 1)
        wall: dict[str, list[float]] = {name: [] for name in servers}
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        for i in range(rounds):
            set_serial(doc, i + 1)
            for name, (proc, port) in servers.items():
                before = cpu_seconds(proc.pid)
                wall[name].append(asyncio.run(_push(port, "ab/large", doc)))
                cpu[name].append(cpu_seconds(proc.pid) - before)
            line = "  ".join(f"{n} {wall[n][-1]:.3f}s/{cpu[n][-1]:.2f}cpu" for n in servers)
            print(f"round {i + 1}: {line}", flush=True)
        for name in servers:
            ratios = [f / s for f, s in zip(wall["floor"], wall[name], strict=True)]
            print(
                f"{name:>8}: push median {statistics.median(wall[name]):.3f} s, "
                f"server CPU median {statistics.median(cpu[name]):.3f} s, "
                f"vs floor (median of rounds) {statistics.median(ratios):.3f}"
            )
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

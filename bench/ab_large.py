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
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from ab_locks import _cpu_seconds
from bench_large import MB, _push
from harness import BENCH
from statedocs import make_state, set_serial

from statekeeper.testing.processes import free_port


def _start(
    argv: list[str], env: dict[str, str], workdir: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with (workdir / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [*argv, str(port)], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((workdir / "server.log").read_text()) from None
            time.sleep(0.05)


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
                servers[name] = _start(
                    [sys.executable, str(BENCH / "floor_app.py")], dict(os.environ), workdir
                )
                continue
            src, *settings = tree.split(";")
            env = {**os.environ, "STATEKEEPER_LOG_FORMAT": "text", "PYTHONPATH": src}
            env.update(setting.split("=", 1) for setting in settings)
            argv = [sys.executable, "-m", "statekeeper", "serve", "--log-level", "warning"]
            servers[name] = _start([*argv, "--port"], env, workdir)
        doc = make_state(size_mb * MB, 1)
        wall: dict[str, list[float]] = {name: [] for name in servers}
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        for i in range(rounds):
            set_serial(doc, i + 1)
            for name, (proc, port) in servers.items():
                before = _cpu_seconds(proc.pid)
                wall[name].append(asyncio.run(_push(port, "ab/large", doc)))
                cpu[name].append(_cpu_seconds(proc.pid) - before)
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

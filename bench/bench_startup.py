"""CLI start-up: ``statekeeper --help`` and ``statekeeper locks --json`` against ``python -c pass``.

Each command runs as a fresh process in an empty directory (an empty embedded
store), many times, the commands interleaved so that a busy neighbour slows
them alike. The figures are medians of the wall time and of the CPU time (user
+ system, from ``wait4``) and their ratios to a bare interpreter; the CPU time
is the steadier on a shared machine. The package runs with its bytecode cached
(written by a warm-up run), as an installed one does: with
``PYTHONDONTWRITEBYTECODE`` set, as in some sandboxes, every run would also
compile every module it imports from source. ``python -X importtime`` lists
the heaviest imports on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import OUT, SRC, env_int, fresh, log, median


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": str(SRC)}


def _once(argv: list[str], cwd: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and exit code of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def heaviest_imports(argv: list[str], cwd: str, top: int = 12) -> list[tuple[str, int]]:
    """The imports with the largest cumulative time (µs) for one run of ``argv``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], cwd=cwd, env=_env(), capture_output=True
    )
    seen: dict[str, int] = {}
    for line in proc.stderr.decode(errors="replace").splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cumulative, name = line.removeprefix("import time:").split("|")
        # Top-level imports only: their cumulative time includes their children.
        if len(name) - len(name.lstrip()) == 1:
            seen[name.strip()] = max(int(cumulative), seen.get(name.strip(), 0))
    return sorted(seen.items(), key=lambda x: -x[1])[:top]


def statekeeper_argv() -> list[str]:
    """The ``statekeeper`` command as users run it: the console script pip installed
    (on this tree's ``src`` through PYTHONPATH), else ``python -m statekeeper``, which
    also imports runpy."""
    script = Path(sys.executable).with_name("statekeeper")
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "statekeeper"]


def locks_available(cwd: str) -> bool:
    proc = subprocess.run(
        [*statekeeper_argv(), "locks", "--help"],
        cwd=cwd,
        env=_env(),
        capture_output=True,
    )
    return proc.returncode == 0


def run() -> dict[str, Any]:
    runs = env_int("BENCH_STARTUP_RUNS", 20, 5)
    cwd = str(fresh(OUT / "startup"))
    py = sys.executable
    sk = statekeeper_argv()
    commands: dict[str, list[str]] = {
        "python -c pass": [py, "-c", "pass"],
        "statekeeper --help": [*sk, "--help"],
    }
    if locks_available(cwd):
        # An empty store made beforehand: 'locks' opens an existing store only.
        make = "from statekeeper.app import Services; from statekeeper.settings import Settings"
        subprocess.run(
            [py, "-c", f"{make}; Services.build(Settings()).close()"],
            cwd=cwd,
            env=_env(),
            check=True,
        )
        commands["statekeeper locks --json"] = [*sk, "locks", "--json"]
    for argv in commands.values():
        _once(argv, cwd)  # warm-up: the bytecode cache and the page cache
    walls: dict[str, list[float]] = {label: [] for label in commands}
    cpus: dict[str, list[float]] = {label: [] for label in commands}
    codes: dict[str, int] = {}
    for _ in range(runs):
        for label, argv in commands.items():
            wall, cpu, codes[label] = _once(argv, cwd)
            walls[label].append(wall)
            cpus[label].append(cpu)
    base_wall = median(walls["python -c pass"])
    base_cpu = median(cpus["python -c pass"])
    rows = []
    for label, argv in commands.items():
        wall, cpu = median(walls[label]), median(cpus[label])
        rows.append(
            {
                "command": label,
                "median_ms": round(wall * 1000, 1),
                "vs_python": round(wall / base_wall, 2),
                "cpu_ms": round(cpu * 1000, 1),
                "cpu_vs_python": round(cpu / base_cpu, 2),
                "exit_code": codes[label],
                "heaviest_imports_ms": [
                    (name, round(us / 1000, 1)) for name, us in heaviest_imports(argv[1:], cwd)
                ]
                if label != "python -c pass"
                else [],
            }
        )
        rc = codes[label]
        log(f"startup {label}: {wall * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU, rc {rc}")
        if rc != 0:
            raise SystemExit(f"{label} exited {rc}: its start-up is not what is measured")
    return {
        "params": {"runs": runs, "bytecode": "cached", "interleaved": True, "argv": sk[1:]},
        "rows": rows,
    }


if __name__ == "__main__":
    from harness import save

    save("startup", run())

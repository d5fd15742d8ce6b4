"""CLI start-up: ``statekeeper --help`` and ``statekeeper locks --json`` against ``python -c pass``.

Each command runs as a fresh process in an empty directory (an empty embedded
store), many times; the figure is the median wall time and its ratio to a bare
interpreter. ``python -X importtime`` lists the heaviest imports on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from harness import OUT, SRC, env_int, fresh, log, median


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC)}


def _time(argv: list[str], cwd: str, runs: int) -> tuple[float, int]:
    times = []
    rc = 0
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True)
        times.append(time.perf_counter() - start)
        rc = proc.returncode
    return median(times), rc


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


def locks_available(cwd: str) -> bool:
    proc = subprocess.run(
        [sys.executable, "-m", "statekeeper", "locks", "--help"],
        cwd=cwd,
        env=_env(),
        capture_output=True,
    )
    return proc.returncode == 0


def run() -> dict[str, Any]:
    runs = env_int("BENCH_STARTUP_RUNS", 20, 5)
    cwd = str(fresh(OUT / "startup"))
    py = sys.executable
    commands: dict[str, list[str]] = {
        "python -c pass": [py, "-c", "pass"],
        "statekeeper --help": [py, "-m", "statekeeper", "--help"],
    }
    if locks_available(cwd):
        commands["statekeeper locks --json"] = [py, "-m", "statekeeper", "locks", "--json"]
    rows = []
    base = 0.0
    for label, argv in commands.items():
        seconds, rc = _time(argv, cwd, runs)
        if label == "python -c pass":
            base = seconds
        rows.append(
            {
                "command": label,
                "median_ms": round(seconds * 1000, 1),
                "vs_python": round(seconds / base, 2),
                "exit_code": rc,
                "heaviest_imports_ms": [
                    (name, round(us / 1000, 1)) for name, us in heaviest_imports(argv[1:], cwd)
                ]
                if label != "python -c pass"
                else [],
            }
        )
        log(f"startup {label}: {seconds * 1000:.1f} ms (rc {rc})")
    return {"params": {"runs": runs}, "rows": rows}


if __name__ == "__main__":
    from harness import save

    save("startup", run())

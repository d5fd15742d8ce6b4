"""Issue #12's goals table: every figure, measured now, against its goal.

One small function per figure reads it from ``bench/results/*.json`` and
returns a :class:`Figure` (or ``None`` when the results hold no such figure
yet: the table then says "not measured"). To point a row at a new key, change
only its function. "before" is the issue's own "today" column, kept here as
the historical baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness import load

MIB = 1024 * 1024


@dataclass(frozen=True)
class Figure:
    text: str  # what the table shows in "measured now"
    met: bool


Results = dict[str, dict[str, Any] | None]
Lookup = Callable[[Results], Figure | None]


def _locks_row(r: Results, target: str, mode: str, clients: int) -> dict[str, Any] | None:
    rows = (r.get("locks") or {}).get("rows", [])
    found = [x for x in rows if (x["target"], x["mode"], x["clients"]) == (target, mode, clients)]
    return found[0] if found else None


def _vs_floor(r: Results, clients: int) -> tuple[float, dict[str, Any]] | None:
    ours = _locks_row(r, "statekeeper-sqlite", "distinct", clients)
    floor = _locks_row(r, "http-floor", "distinct", clients)
    if ours is None or floor is None:
        return None
    return ours["cycles_per_s"] / floor["cycles_per_s"], ours


def lock_cycle_1(r: Results) -> Figure | None:
    found = _vs_floor(r, 1)
    if found is None:
        return None
    ratio, _ = found
    text = f"{ratio:.2f}"
    durable = _locks_row(r, "durable-floor", "distinct", 1)
    floor = _locks_row(r, "http-floor", "distinct", 1)
    if durable and floor:
        # At one client the HTTP floor's cycle and the durable floor's follow each other.
        d, f = durable["cycles_per_s"], floor["cycles_per_s"]
        text += f" (ceiling with every answer synced: {d / (f + d):.2f}; durable floor {d:.0f}/s)"
    return Figure(text, ratio >= 0.5)


def lock_cycle_8(r: Results) -> Figure | None:
    found = _vs_floor(r, 8)
    if found is None:
        return None
    ratio, ours = found
    return Figure(
        f"{ratio:.2f}; p99 {ours['p99_ms']:.0f} ms", ratio >= 0.3 and ours["p99_ms"] <= 50
    )


def contended(r: Results) -> Figure | None:
    one = _locks_row(r, "statekeeper-sqlite", "contended", 1)
    many = {n: _locks_row(r, "statekeeper-sqlite", "contended", n) for n in (8, 64)}
    if one is None or any(x is None for x in many.values()):
        return None
    ratios = {n: x["cycles_per_s"] / one["cycles_per_s"] for n, x in many.items() if x}
    return Figure(
        f"{ratios[8]:.2f} at 8, {ratios[64]:.3f} at 64", all(x >= 0.7 for x in ratios.values())
    )


def s3_lock_cycle(r: Results) -> Figure | None:
    ref = r.get("locks_s3")
    if not ref:
        return None
    ratio = ref["ratio"]  # median of paired ratios: statekeeper's time per cycle / Terraform's
    text = (
        f"{ratio:.2f}, median of {len(ref['runs'])} paired ratios (medians "
        f"{ref['statekeeper_aws_cycles_per_s']:.1f}/s vs {ref['terraform_s3_cycles_per_s']:.1f}/s; "
        f"CPU per cycle {ref['cpu_ratio']:.2f})"
    )
    return Figure(text, ratio <= 1.2)


def _large_row(r: Results, size_mb: int) -> dict[str, Any] | None:
    rows = (r.get("large") or {}).get("rows", [])
    found = [x for x in rows if x["size_mb"] == size_mb]
    return found[0] if found else None


def push_100(r: Results) -> Figure | None:
    row = _large_row(r, 100)
    return (
        None if row is None else Figure(f"{row['push_vs_floor']:.2f}", row["push_vs_floor"] >= 0.5)
    )


def pull_100(r: Results) -> Figure | None:
    row = _large_row(r, 100)
    return (
        None if row is None else Figure(f"{row['pull_vs_floor']:.2f}", row["pull_vs_floor"] >= 0.7)
    )


def rss_500(r: Results) -> Figure | None:
    row = _large_row(r, 500)
    if row is None:
        return None
    ratio = row["server_peak_rss_mib"] * MIB / row["bytes"]
    return Figure(f"{ratio:.2f}x", ratio <= 2)


def rss_concurrent(r: Results) -> Figure | None:
    c = (r.get("large") or {}).get("concurrent")
    if not c or c.get("clients") != 8:
        return None
    ratio = c["peak_over_total_bytes"]
    return Figure(f"{ratio:.2f}x", ratio <= 1.3)


def _startup(r: Results, command: str, goal: float) -> Figure | None:
    rows = (r.get("startup") or {}).get("rows", [])
    found = [x for x in rows if x["command"] == command]
    if not found:
        return None
    x = found[0]
    if "cpu_vs_python" not in x:  # results from before CPU time was measured
        text = f"{x['vs_python']:.1f}x wall ({x['median_ms']:.0f} ms)"
        return Figure(text, x["vs_python"] <= goal)
    return Figure(
        f"{x['cpu_vs_python']:.1f}x CPU ({x['cpu_ms']:.0f} ms); {x['vs_python']:.1f}x wall",
        x["cpu_vs_python"] <= goal,
    )


def startup_help(r: Results) -> Figure | None:
    return _startup(r, "statekeeper --help", 6)


def startup_locks(r: Results) -> Figure | None:
    return _startup(r, "statekeeper locks --json", 10)


def plan_vs_floor(r: Results) -> Figure | None:
    rows = (r.get("terraform") or {}).get("rows", [])
    found = [x for x in rows if x["backend"] == "http-sqlite" and "plan_vs_floor" in x]
    if not found:
        return None
    ratio = found[0]["plan_vs_floor"]
    resources = (r.get("terraform") or {}).get("params", {}).get("resources")
    notes = [] if resources == 500 else [f"{resources} resources"]
    floor = [x for x in rows if x["backend"] == "http-floor" and "plan_requests_ms" in x]
    if "plan_requests_ms" in found[0] and floor:
        notes.append(
            f"its requests {found[0]['plan_requests_ms']:.1f} ms vs "
            f"{floor[0]['plan_requests_ms']:.1f} ms on the floor, "
            f"of a {found[0]['plan_s']:.2f} s plan"
        )
    aws = [x for x in rows if x["backend"] == "http-aws" and "plan_vs_floor" in x]
    if aws:  # for information: the goal is SQLite's
        notes.append(f"http-aws {aws[0]['plan_vs_floor']:.2f}")
    text = f"{ratio:.2f}" + (f" ({'; '.join(notes)})" if notes else "")
    return Figure(text, ratio <= 1.05)


# figure, before (issue #12's "today"), goal, lookup
GOALS: list[tuple[str, str, str, Lookup]] = [
    (
        "lock cycle LOCK→GET→POST(100 KB)→UNLOCK, SQLite, 1 client, / HTTP floor",
        "0.10 (52/s vs 543/s)",
        "≥ 0.5",
        lock_cycle_1,
    ),
    (
        "same, 8 clients on distinct states, / HTTP floor; p99",
        "0.05; p99 612 ms",
        "≥ 0.3; p99 ≤ 50 ms",
        lock_cycle_8,
    ),
    (
        "contended (8 and 64 clients retrying LOCK on one state): critical sections/s, "
        "/ the 1-client rate on the same state",
        "0.22 at 8, 0.025 at 64",
        "≥ 0.7 at both",
        contended,
    ),
    (
        'lock cycle on S3 + DynamoDB (moto), 1 client, / Terraform\'s own backend "s3"',
        "not measured (1.46, 1.19, 0.6-1.24 in single runs before the paired measure)",
        "≤ 1.2",
        s3_lock_cycle,
    ),
    ("push of a 100 MB state, / loopback-copy floor", "0.14", "≥ 0.5", push_100),
    ("pull of a 100 MB state, / floor", "0.26", "≥ 0.7", pull_100),
    ("server peak RSS for one 500 MB push, / state size", "4.2x", "≤ 2x", rss_500),
    (
        "peak RSS with 8 x 100 MB pushes at once, / bytes in flight",
        "2.0x",
        "≤ 1.3x",
        rss_concurrent,
    ),
    ("`statekeeper --help`, / `python -c pass`", "18-32x", "≤ 6x", startup_help),
    (
        "`statekeeper locks --json` (empty store), / `python -c pass`",
        "30-46x",
        "≤ 10x",
        startup_locks,
    ),
    (
        "Terraform `plan` (no changes, 500 resources) through statekeeper (http-sqlite), "
        "/ through a bare http app serving the same state from memory",
        'not measured (1.15 against backend "s3")',
        "≤ 1.05",
        plan_vs_floor,
    ),
]


def rows(results: Results) -> list[list[str]]:
    """One row per figure: figure, before, measured now, goal, met/NOT met."""
    out = []
    for figure, before, goal, lookup in GOALS:
        found = lookup(results)
        if found is None:
            out.append([figure, before, "not measured", goal, "-"])
        else:
            out.append([figure, before, found.text, goal, "met" if found.met else "NOT met"])
    return out


def load_all() -> Results:
    return {name: load(name) for name in ("locks", "locks_s3", "large", "startup", "terraform")}

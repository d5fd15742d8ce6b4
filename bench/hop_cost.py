"""What one hop to a worker thread costs (``server/workers.py``), against running in place.

    python bench/hop_cost.py [CALLS]

Times ``Workers.run`` of an empty function, CALLS times in a row on one event loop
(as one client's requests follow each other): the wall time from the call to the
function's start (of which the pool's ``submit`` on the loop) and from its end back
to the caller, the CPU of the process and its context switches per hop; then the
same function in a copy of the context on the loop's own thread. The tool behind
findings.md's "The store work on the event loop's thread (inline branch)".
"""

from __future__ import annotations

import asyncio
import contextvars
import resource
import statistics
import sys
import time
from typing import Any

from statekeeper.server.workers import Workers

WARM = 200


def _switches() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


def _us(samples: list[int]) -> float:
    return statistics.median(samples) / 1000


async def _hops(calls: int) -> None:
    workers = Workers(4)
    marks: dict[str, int] = {}
    submits: list[int] = []
    submit = workers._store.submit

    def timed_submit(job: Any) -> None:
        started = time.perf_counter_ns()
        submit(job)
        submits.append(time.perf_counter_ns() - started)

    def work() -> None:
        marks["start"] = time.perf_counter_ns()
        marks["end"] = time.perf_counter_ns()

    workers._store.submit = timed_submit  # type: ignore[method-assign]
    try:
        for _ in range(WARM):
            await workers.run(work)
        there, back, total = [], [], []
        switches, cpu = _switches(), time.process_time()
        for _ in range(calls):
            called = time.perf_counter_ns()
            await workers.run(work)
            returned = time.perf_counter_ns()
            there.append(marks["start"] - called)
            back.append(returned - marks["end"])
            total.append(returned - called)
        cpu_us = (time.process_time() - cpu) / calls * 1e6
        per_hop = (_switches() - switches) / calls
    finally:
        workers.close()
    print(
        f"hop: {_us(total):.1f} µs (to the function's start {_us(there):.1f}, of which "
        f"submit {_us(submits[WARM:]):.1f}; back to the caller {_us(back):.1f}); "
        f"CPU {cpu_us:.1f} µs, {per_hop:.2f} context switches"
    )
    total = []
    switches, cpu = _switches(), time.process_time()
    for _ in range(calls):
        called = time.perf_counter_ns()
        contextvars.copy_context().run(work)
        total.append(time.perf_counter_ns() - called)
    cpu_us = (time.process_time() - cpu) / calls * 1e6
    per_call = (_switches() - switches) / calls
    print(f"in place: {_us(total):.1f} µs; CPU {cpu_us:.1f} µs, {per_call:.2f} context switches")


if __name__ == "__main__":
    asyncio.run(_hops(int(sys.argv[1]) if len(sys.argv) > 1 else 4000))

"""What metrics, logs and webhooks cost the lock cycle: the same cycle with them and without.

``statekeeper serve`` on SQLite runs the lock cycle of ``bench_locks.py``
(LOCK → GET → POST 100 KB → UNLOCK, distinct states) in two configurations,
alternated run by run (each round in a turned order) so that a noisy minute
on a shared machine hits both:

- ``bare``: ``metrics = false``, log level ``warning`` (no access line, no event line);
- ``observed``: metrics on and scraped every 15 s (Prometheus' usual interval;
  once when the run starts), JSON logs at ``info`` (an access line per
  request, carrying the request's event, written to the server's log file), and a webhook
  subscription to ``state.written`` on every state, delivered to a receiver on
  loopback (one delivery a cycle, with its resource diff). The receiver is a
  process of its own (``receiver.py``), as a real receiver is another program
  (sharing the load generator's GIL, it slowed the client), standing for a
  program on another machine: it runs at the lowest CPU priority, and its CPU
  per cycle is reported beside the worker's. It speaks
  HTTP/1.1 as any real receiver does (its answers keep the connection open), so
  the worker keeps one connection to it for the run, and it does no more than a
  receiver must: its CPU, which a real deployment spends on another machine,
  takes as little of the two cores as it can;
- ``metrics-logs``: ``observed`` without the webhook;
- ``every-event``: ``observed`` with the subscription to every event the cycle
  makes (``lock.acquired``, ``state.written``, ``lock.released``: three
  deliveries a cycle, each an HTTP request of its own).

The goal: observed / bare ≥ 0.95 in cycles per second. The server process's
CPU time per cycle is measured too: on a machine shared with other work the
wall-clock rate swings by tens of percent from run to run, while the CPU a
cycle costs the server does not, so its ratio (cycles per CPU second) is the
steadier figure of the two. ``serve`` delivers webhooks from a worker process
of its own: its CPU per cycle is measured apart, and the total (server +
worker) has its ratio too, so that moving work out of the server is not
mistaken for making it free.

The worker runs at a lower CPU priority than the server (``hooks_worker_nice``,
default 10), so on saturated cores its deliveries wait. That is only honest
with the wait in view: the receiver notes when each delivery arrives, and each
run reports the **delivery lag** (the CloudEvent's ``time``, when the event
happened, to its arrival; p50 and p99), the **backlog** (outbox rows waiting,
from ``/metrics``) when the cycle stops, and how long it took to drain. Every
run drains its backlog before its server stops, so no run carries work into the
next, and the worker's CPU is counted up to the end of the drain: every
delivery of the run's events is in it. ``observed-nice0`` is ``observed`` with
the worker at the server's priority (``hooks_worker_nice = 0``), alternated
with the others: the priority's effect on throughput and on the lag.
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_locks import run_http
from harness import OUT, cpu_seconds, env_int, env_list, fresh, log, median
from receiver import receiver
from servers import statekeeper_server

_OBSERVED = (
    {
        "STATEKEEPER_METRICS": "true",
        "STATEKEEPER_LOG_FORMAT": "json",
        "STATEKEEPER_HOOKS_ALLOW": "127.0.0.1",
    },
    ("--log-level", "info"),
)
CONFIGS = {
    "bare": ({"STATEKEEPER_METRICS": "false"}, ("--log-level", "warning")),
    "metrics-logs": _OBSERVED,
    "observed": _OBSERVED,
    "every-event": _OBSERVED,
    "observed-nice0": (
        {**_OBSERVED[0], "STATEKEEPER_HOOKS_WORKER_NICE": "0"},
        _OBSERVED[1],
    ),
}
#: The webhook event types each configuration subscribes to.
HOOK_EVENTS: dict[str, tuple[str, ...]] = {
    "observed": ("state.written",),
    "every-event": ("state.written", "lock.acquired", "lock.released"),
    "observed-nice0": ("state.written",),
}
#: The configurations compared with ``bare``.
COMPARED = ("metrics-logs", "observed", "every-event", "observed-nice0")
#: Seconds a run's backlog may take to drain before the bench gives up on it.
DRAIN_LIMIT = 300.0


def _subscribe(workdir: Path, url: str, events: tuple[str, ...]) -> None:
    """A subscription to ``events`` on every state, in the server's database."""
    from statekeeper.app import Services
    from statekeeper.hooks.model import Subscription
    from statekeeper.settings import load_settings

    env = {"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"}
    settings = load_settings({"data_dir": workdir / ".statekeeper"}, env=env)
    services = Services.build(settings)
    try:
        assert services.hooks is not None
        services.hooks.add(Subscription("bench", url, "bench-secret", events=events))
    finally:
        services.close()


SCRAPE_EVERY = 15.0


@contextmanager
def _scraper(url: str) -> Iterator[None]:
    """Scrape ``/metrics`` as Prometheus would while the cycle runs: now, then every 15 s."""
    stop = threading.Event()

    def scrape() -> None:
        while True:
            with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
                response.read()
            if stop.wait(SCRAPE_EVERY):
                return

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _worker_pid(server_pid: int) -> int:
    """The server's webhook delivery worker (a child process of ``serve``)."""
    for _ in range(200):
        for task in Path(f"/proc/{server_pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                if b"statekeeper.hooks.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
        time.sleep(0.05)
    raise RuntimeError("serve started no webhook delivery worker")


def _settle(pid: int) -> None:
    """Wait for the worker's start-up (imports, opening the store) to end: it is not the
    lock cycle's cost. Settled when its CPU time stands still for half a second."""
    last = -1.0
    for _ in range(60):
        now = cpu_seconds(pid)
        if now == last:
            return
        last = now
        time.sleep(0.5)


def _backlog(url: str) -> int:
    """The outbox rows waiting, as the server's ``/metrics`` counts them."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith('statekeeper_queue_depth{queue="webhooks"}'):
                return int(float(line.split()[-1]))
    raise RuntimeError("/metrics has no webhook queue depth")


def _drain(url: str) -> tuple[int, float]:
    """The backlog when the cycle stopped, and the seconds it took to reach 0."""
    start = time.perf_counter()
    left = backlog = _backlog(url)
    while left:
        if time.perf_counter() - start > DRAIN_LIMIT:
            raise RuntimeError(f"the webhook backlog ({left}) did not drain")
        time.sleep(0.1)
        left = _backlog(url)
    return backlog, time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _run(config: str, workdir: Path, clients: int, seconds: float) -> dict[str, Any]:
    env, args = CONFIGS[config]
    tag = f"{config}{clients}-{uuid.uuid4().hex[:6]}"
    where = fresh(workdir / tag)
    hooked = config in HOOK_EVENTS
    with receiver() as hooks:
        if hooked:
            _subscribe(where, hooks.url, HOOK_EVENTS[config])
        with statekeeper_server(where, *args, env=env) as server:
            worker = _worker_pid(server.proc.pid)
            _settle(worker)
            before = cpu_seconds(server.proc.pid)
            worker_before = cpu_seconds(worker)
            receiver_before = cpu_seconds(hooks.pid)
            if config != "bare":
                with _scraper(server.url):
                    result = run_http(server.port, clients, False, seconds, tag)
            else:
                result = run_http(server.port, clients, False, seconds, tag)
            cpu = cpu_seconds(server.proc.pid) - before
            # Drained before the server stops: every delivery of this run's events is in
            # the worker's CPU and the lag, and none is left for the next run.
            backlog, drain = _drain(server.url) if hooked else (0, 0.0)
            worker_cpu = cpu_seconds(worker) - worker_before
            receiver_cpu = cpu_seconds(hooks.pid) - receiver_before
        lags = hooks.lags()
    result["server_cpu_ms_per_cycle"] = 1000 * cpu / max(result["cycles"], 1)
    result["worker_cpu_ms_per_cycle"] = 1000 * worker_cpu / max(result["cycles"], 1)
    result["receiver_cpu_ms_per_cycle"] = 1000 * receiver_cpu / max(result["cycles"], 1)
    result["deliveries"] = len(lags)
    result["lag_p50_ms"] = 1000 * _percentile(lags, 0.5)
    result["lag_p99_ms"] = 1000 * _percentile(lags, 0.99)
    result["lag_max_ms"] = 1000 * max(lags, default=float("nan"))
    result["backlog_at_end"] = backlog
    result["drain_s"] = drain
    return result


def _order(round_: int) -> list[str]:
    """The configurations of one round, in turn: each round starts one further along,
    so that no configuration always runs first (after the quiet of the last drain) or
    last (after the heaviest run): a place in the round's order shows up as noise
    spread over them all, not as one configuration's cost."""
    names = list(CONFIGS)
    turn = round_ % len(names)
    return names[turn:] + names[:turn]


def run() -> dict[str, Any]:
    clients_list = env_list("BENCH_OBS_CLIENTS", [1, 8], [1])
    repeats = env_int("BENCH_OBS_REPEATS", 8, 2)
    seconds = float(env_int("BENCH_LOCK_SECONDS", 5, 2))
    work = OUT / "observability"
    rows = []
    for clients in clients_list:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
        for round_ in range(repeats):
            for name in _order(round_):
                runs[name].append(_run(name, work, clients, seconds))
        row: dict[str, Any] = {"clients": clients}
        for name, results in runs.items():
            row[name] = {
                "cycles_per_s": median([r["cycles_per_s"] for r in results]),
                "p50_ms": median([r["p50_ms"] for r in results]),
                "p99_ms": median([r["p99_ms"] for r in results]),
                "cpu_ms_per_cycle": median([r["server_cpu_ms_per_cycle"] for r in results]),
                "worker_cpu_ms_per_cycle": median([r["worker_cpu_ms_per_cycle"] for r in results]),
                "receiver_cpu_ms_per_cycle": median(
                    [r["receiver_cpu_ms_per_cycle"] for r in results]
                ),
                "total_cpu_ms_per_cycle": median(
                    [r["server_cpu_ms_per_cycle"] + r["worker_cpu_ms_per_cycle"] for r in results]
                ),
                "errors": sum(r["error_count"] for r in results),
                "deliveries": sum(r["deliveries"] for r in results),
                "lag_p50_ms": median([r["lag_p50_ms"] for r in results]),
                "lag_p99_ms": median([r["lag_p99_ms"] for r in results]),
                "lag_max_ms": max(r["lag_max_ms"] for r in results),
                "backlog_at_end": median([r["backlog_at_end"] for r in results]),
                "backlog_at_end_max": max(r["backlog_at_end"] for r in results),
                "drain_s_max": max(r["drain_s"] for r in results),
                "runs": results,
            }
        for name in COMPARED:
            row[name]["ratio"] = row[name]["cycles_per_s"] / row["bare"]["cycles_per_s"]
            # Each run against the bare run of its own round (they ran minutes apart at
            # most): a server's rate moves by up to a tenth from one process to the next,
            # so the spread of these says how far a single ratio can be trusted.
            paired = [
                r["cycles_per_s"] / b["cycles_per_s"]
                for r, b in zip(runs[name], runs["bare"], strict=True)
            ]
            row[name]["paired_ratio"] = median(paired)
            row[name]["paired_range"] = [min(paired), max(paired)]
            row[name]["cpu_ratio"] = row["bare"]["cpu_ms_per_cycle"] / row[name]["cpu_ms_per_cycle"]
            row[name]["total_cpu_ratio"] = (
                row["bare"]["total_cpu_ms_per_cycle"] / row[name]["total_cpu_ms_per_cycle"]
            )
            log(
                f"observability x{clients} {name}: {row[name]['cycles_per_s']:.1f}/s against "
                f"{row['bare']['cycles_per_s']:.1f}/s bare, ratio {row[name]['ratio']:.3f}; "
                f"server CPU {row[name]['cpu_ms_per_cycle']:.2f} against "
                f"{row['bare']['cpu_ms_per_cycle']:.2f} ms per cycle, ratio "
                f"{row[name]['cpu_ratio']:.3f}; with the worker "
                f"{row[name]['total_cpu_ms_per_cycle']:.2f} against "
                f"{row['bare']['total_cpu_ms_per_cycle']:.2f}, ratio "
                f"{row[name]['total_cpu_ratio']:.3f}"
            )
            if name in HOOK_EVENTS:
                log(
                    f"observability x{clients} {name}: delivery lag p50 "
                    f"{row[name]['lag_p50_ms']:.0f} ms, p99 {row[name]['lag_p99_ms']:.0f} ms, "
                    f"max {row[name]['lag_max_ms']:.0f} ms; backlog at the end "
                    f"{row[name]['backlog_at_end']:.0f} (max {row[name]['backlog_at_end_max']}),"
                    f" drained in {row[name]['drain_s_max']:.1f} s at most"
                )
        rows.append(row)
    return {
        "params": {"clients": clients_list, "repeats": repeats, "seconds_per_run": seconds},
        "rows": rows,
    }


if __name__ == "__main__":
    from harness import save

    save("observability", run())

"""What metrics, logs and webhooks cost the lock cycle: the same cycle with them and without.

``statekeeper serve`` on SQLite runs the lock cycle of ``bench_locks.py``
(LOCK → GET → POST 100 KB → UNLOCK, distinct states) in two configurations,
alternated run by run so that a noisy minute on a shared machine hits both:

- ``bare``: ``metrics = false``, log level ``warning`` (no access line, no event line);
- ``observed``: metrics on and scraped every 15 s (Prometheus' usual interval;
  once when the run starts), JSON logs at ``info`` (an access line and an
  event line per request, written to the server's log file), and a webhook
  subscription to ``state.written`` on every state, delivered to a receiver on
  loopback (one delivery a cycle, with its resource diff);
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
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench_locks import run_http
from harness import OUT, env_int, env_list, fresh, log, median
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
}
#: The webhook event types each configuration subscribes to.
HOOK_EVENTS: dict[str, tuple[str, ...]] = {
    "observed": ("state.written",),
    "every-event": ("state.written", "lock.acquired", "lock.released"),
}


class _Quiet(BaseHTTPRequestHandler):
    """A webhook receiver that reads the delivery and answers 204, keeping the connection."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def _receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
        now = _cpu_seconds(pid)
        if now == last:
            return
        last = now
        time.sleep(0.5)


def _run(config: str, workdir: Path, clients: int, seconds: float) -> dict[str, Any]:
    env, args = CONFIGS[config]
    tag = f"{config}{clients}-{uuid.uuid4().hex[:6]}"
    where = fresh(workdir / tag)
    with _receiver() as hook_url:
        if config in HOOK_EVENTS:
            _subscribe(where, hook_url, HOOK_EVENTS[config])
        with statekeeper_server(where, *args, env=env) as server:
            worker = _worker_pid(server.proc.pid)
            _settle(worker)
            before = _cpu_seconds(server.proc.pid)
            worker_before = _cpu_seconds(worker)
            if config != "bare":
                with _scraper(server.url):
                    result = run_http(server.port, clients, False, seconds, tag)
            else:
                result = run_http(server.port, clients, False, seconds, tag)
            cpu = _cpu_seconds(server.proc.pid) - before
            worker_cpu = _cpu_seconds(worker) - worker_before
    result["server_cpu_ms_per_cycle"] = 1000 * cpu / max(result["cycles"], 1)
    result["worker_cpu_ms_per_cycle"] = 1000 * worker_cpu / max(result["cycles"], 1)
    return result


def run() -> dict[str, Any]:
    clients_list = env_list("BENCH_OBS_CLIENTS", [1, 8], [1])
    repeats = env_int("BENCH_OBS_REPEATS", 5, 2)
    seconds = float(env_int("BENCH_LOCK_SECONDS", 5, 2))
    work = OUT / "observability"
    rows = []
    for clients in clients_list:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
        for _ in range(repeats):
            for name in CONFIGS:  # alternated: bare, observed, bare, observed, ...
                runs[name].append(_run(name, work, clients, seconds))
        row: dict[str, Any] = {"clients": clients}
        for name, results in runs.items():
            row[name] = {
                "cycles_per_s": median([r["cycles_per_s"] for r in results]),
                "p50_ms": median([r["p50_ms"] for r in results]),
                "p99_ms": median([r["p99_ms"] for r in results]),
                "cpu_ms_per_cycle": median([r["server_cpu_ms_per_cycle"] for r in results]),
                "worker_cpu_ms_per_cycle": median([r["worker_cpu_ms_per_cycle"] for r in results]),
                "total_cpu_ms_per_cycle": median(
                    [r["server_cpu_ms_per_cycle"] + r["worker_cpu_ms_per_cycle"] for r in results]
                ),
                "errors": sum(r["error_count"] for r in results),
                "runs": results,
            }
        for name in ("metrics-logs", "observed", "every-event"):
            row[name]["ratio"] = row[name]["cycles_per_s"] / row["bare"]["cycles_per_s"]
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
        rows.append(row)
    return {
        "params": {"clients": clients_list, "repeats": repeats, "seconds_per_run": seconds},
        "rows": rows,
    }


if __name__ == "__main__":
    from harness import save

    save("observability", run())

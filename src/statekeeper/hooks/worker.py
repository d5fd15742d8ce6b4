"""The delivery worker: a process of its own that delivers the outbox for ``serve``.

A delivery costs CPU: the POST, the lease and attempt bookkeeping, and for
``state.written`` the resource diff of two versions of the state. In the
server's process that work took the GIL from the event loop and the request
threads; in a process of its own the operating system runs it beside them (on
another core when there is one), and the request path only writes the outbox
rows and nudges the worker.

The two processes talk over the worker's standard streams:

- **stdin**, from ``serve``: the server's settings (pickled, once), then one
  byte per nudge ("rows were committed, look now"). When ``serve`` exits, by
  any means, SIGKILL included, the kernel closes the pipe; the worker reads the
  end of file, stops its sender and exits: it never outlives its server.
- **stdout**, to ``serve``: one JSON line whenever what the server reports for
  the worker changes: failed attempts so far, the entries waiting as its last
  look found them, and a fingerprint of the subscriptions (on S3 the server
  re-reads them when it changes: ``hooks add`` reaches a running server).
  Whatever else the worker prints goes to stderr, the server's log.

A worker that dies is started again by ``serve`` (its leases run out and the
new one claims the rows: at least once holds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from io import BufferedReader

    from statekeeper.hooks.service import Webhooks
    from statekeeper.settings import Settings

__all__ = ["WorkerProcess", "main"]

log = logging.getLogger("statekeeper.hooks")

#: Seconds before a worker that died is started again; doubled while it keeps dying
#: young (its start fails), up to a minute.
_RESTART = 1.0
_RESTART_MAX = 60.0
_YOUNG = 30.0
#: Seconds between the worker's looks at what it reports to serve (failures: at once).
_REPORT_EVERY = 1.0
#: Seconds the worker's main thread lets nudges gather in the pipe after one woke it.
_COALESCE = 0.05
#: The directory holding the statekeeper package: the worker runs the server's code.
_ROOT = str(Path(__file__).resolve().parents[2])


class WorkerProcess:
    """``serve``'s handle on its delivery worker: start, nudge, read reports, stop."""

    def __init__(
        self, settings: Settings, on_subscriptions: Callable[[], None], stop_timeout: float
    ) -> None:
        self.settings = settings
        self.on_subscriptions = on_subscriptions
        self.stop_timeout = stop_timeout
        #: Failed attempts, by this worker and the ones it replaced.
        self.failures = 0
        #: Entries waiting, as the worker's last look found them.
        self.backlog = 0
        self._failures_before = 0
        self._fingerprint = ""
        self._lock = threading.Lock()
        self._closing = False
        self._closed = threading.Event()
        self._proc = self._spawn()
        self._reader = threading.Thread(
            target=self._read, name="statekeeper-hooks-reports", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, path]))}
        proc = subprocess.Popen(
            [sys.executable, "-m", "statekeeper.hooks.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdin is not None
        try:
            # The settings hold the store's credentials (and a config file's inline hook
            # secrets): a pipe, never the command line.
            proc.stdin.write(pickle.dumps(self.settings))
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died at once: the reader sees it exit and starts another
        # A nudge never waits: a full pipe already holds more nudges than needed.
        os.set_blocking(proc.stdin.fileno(), False)
        return proc

    def wake(self) -> None:
        """Nudge the worker: rows were committed (on the request path: one write(2))."""
        with self._lock:  # the pipe is never swapped or closed under a nudge
            stdin = self._proc.stdin
            if stdin is None or stdin.closed:
                return
            try:
                os.write(stdin.fileno(), b"!")
            except (BlockingIOError, BrokenPipeError):
                pass  # nudges enough are pending, or the worker died and is being replaced

    def _read(self) -> None:
        delay = _RESTART
        while True:
            proc = self._proc
            assert proc.stdout is not None
            started = time.monotonic()
            self._reports(proc.stdout)
            code = proc.wait()
            proc.stdout.close()
            if self._closing:
                return
            # One that dies young (its start fails) is started again less and less often.
            young = time.monotonic() - started < _YOUNG
            delay = min(_RESTART_MAX, delay * 2) if young else _RESTART
            log.error(
                "the webhook delivery worker exited (%s); starting another in %g s", code, delay
            )
            if self._closed.wait(delay):
                return
            with self._lock:
                if self._closing:
                    return
                self._failures_before = self.failures
                self._proc = self._spawn()
                if proc.stdin is not None:
                    proc.stdin.close()

    def _reports(self, stream: IO[bytes]) -> None:
        from statekeeper.errors import StatekeeperError

        for line in stream:
            try:
                report = json.loads(line)
            except ValueError:
                continue  # cut short by the worker's death
            self.failures = self._failures_before + int(report["failures"])
            self.backlog = int(report["backlog"])
            if report["subscriptions"] != self._fingerprint:
                try:
                    self.on_subscriptions()
                except StatekeeperError as exc:
                    log.error("the webhook subscriptions cannot be read: %s", exc.message)
                    continue  # read again at the next report that differs
                self._fingerprint = report["subscriptions"]

    def close(self) -> None:
        """Stop the worker: the end of its stdin stops it; killed if it lingers."""
        with self._lock:
            self._closing = True
            self._closed.set()
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        try:
            self._proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(5)


def main() -> int:
    """The worker process: read the settings, deliver until stdin ends."""
    # Ctrl-C reaches the whole process group: serve stops first and then closes our pipe,
    # so the worker finishes the attempt in hand instead of dying with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin = open(0, "rb", closefd=False)  # noqa: SIM115 (the process's own stdin)
    settings: Settings = pickle.load(stdin)
    if settings.hooks_worker_nice:
        # Delivery is background work: on cores the requests keep busy, the scheduler
        # gives them the CPU and the deliveries wait (at least once holds; they are late).
        # Before any thread starts: on Linux the priority is a thread's, and the sender's
        # thread inherits it from this one.
        os.nice(settings.hooks_worker_nice)
    reports = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever is printed goes to the server's log, not into the reports

    import logging.config

    # What the deliveries use is loaded at the start, not by the first delivery: the
    # resource diff (with pydantic's views) and the HTTP client.
    import statekeeper.hooks.resources
    import statekeeper.hooks.transport  # noqa: F401
    from statekeeper.app import build_webhooks
    from statekeeper.errors import StatekeeperError
    from statekeeper.storage.encrypting import encrypting
    from statekeeper.storage.registry import open_locks, open_store
    from statekeeper.telemetry.logs import log_config

    logging.config.dictConfig(log_config(settings.log_format, settings.log_level))
    with ExitStack() as opened:
        try:
            raw = open_store(settings.store_url, given_as=settings.store_given_as)
            store = encrypting(raw, settings.master_key)
            opened.callback(store.close)
            table = open_locks(settings.locks_url, store, given_as=settings.locks_given_as)
            opened.callback(table.close)
            hooks = build_webhooks(settings, store, table, os.environ)
        except StatekeeperError as exc:
            # Said once per attempt, without a traceback; serve starts another later.
            log.error("the webhook delivery worker cannot start: %s", exc.message)
            return 1
        opened.callback(hooks.close)
        _deliver(hooks, stdin, reports)
    return 0


def _deliver(hooks: Webhooks, stdin: BufferedReader, reports: IO[str]) -> None:
    """Deliver on the sender's thread, woken by each nudge, until stdin ends."""
    last: dict[str, object] = {}
    looked = [-float("inf")]

    def report(failures: int) -> None:
        # A new failure is told at once; the rest (the backlog, which the server reads
        # from the database on SQLite, and the subscriptions) once a second at most: a
        # report costs a query or two here and a JSON line read in the server's process.
        if failures == last.get("failures") and time.monotonic() - looked[0] < _REPORT_EVERY:
            return
        looked[0] = time.monotonic()
        subs = [s.to_json(with_secret=True) for s in hooks.all()]
        now = {
            "failures": failures,
            "backlog": hooks.backlog(),
            "subscriptions": hashlib.sha256(json.dumps(subs).encode()).hexdigest(),
        }
        if now != last:
            last.update(now)
            try:
                reports.write(json.dumps(now) + "\n")
            except BrokenPipeError:
                pass  # the server is gone: stdin ends next, and the worker with it

    sender = hooks.deliver(report)
    while stdin.read1(4096):
        sender.wake()
        # The nudges of a burst (a cycle's events, several clients' cycles) are then read
        # at once, not each by a wake of this thread: the sender lingers longer than this
        # before it claims anyway.
        time.sleep(_COALESCE)


if __name__ == "__main__":
    sys.exit(main())

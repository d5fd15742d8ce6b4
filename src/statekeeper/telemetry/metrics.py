"""Prometheus metrics: what the server did, from the three places that see it.

- The event stream (:meth:`Metrics.observe_event`, a subscriber like the audit
  trail): locks taken, refused, waited for, forced, expired and reaped; writes
  accepted and refused by reason; every operation by action and outcome.
- The storage boundary (:class:`~statekeeper.storage.metered.MeteredStore`
  reports to :meth:`Metrics.storage_call`): latency and errors of each store
  and lock-table call, by driver and operation; sizes of the states stored.
- The HTTP edge (``telemetry/access.py``): requests by route template, method
  and status, and their latency.

Names carry the ``statekeeper_`` prefix and their unit. No label takes a
state name unless the name matches a glob of ``metrics_states``: with 100,000
states the number of series stays what it is with one. Each process has its
own registry; each replica exposes its own figures (sum the counters across
replicas; take the max of the lock gauges, which every replica reads from the
shared lock table).
"""

from __future__ import annotations

import gc
import platform
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from statekeeper import __version__
from statekeeper.errors import BadRequest, ConfigError, InvalidStateName, StatekeeperError
from statekeeper.events import Action, Event
from statekeeper.state.globs import parse_glob
from statekeeper.state.holds import holders
from statekeeper.storage.base import LockTable
from statekeeper.telemetry.histogram import Count, CountFamily, LatencyHistogram, Timer
from statekeeper.terraform.names import StateName
from statekeeper.times import utcnow

__all__ = ["CONTENT_TYPE", "Metrics", "refusal_reason"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The *_created series double the output and tell a scraper nothing it needs.
disable_created_metrics()  # type: ignore[no-untyped-call]

_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_STORAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_WAIT_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: 1 KiB to 1 GiB, by factors of 4.
_SIZE_BUCKETS = tuple(1024 * 4**k for k in range(11))

_WRITES = {Action.WRITE, Action.PUSH, Action.ROLLBACK}
_LOCK_COUNTERS = {
    Action.FORCE_UNLOCK: "force_unlocks",
    Action.EXPIRE: "expiries",
    Action.REAP: "reaps",
}
_REFUSAL = {
    "checksum_mismatch": "content_md5",
    "locked": "lock",
    "lock_mismatch": "lock",
    "lock_not_found": "lock",
    "invalid_state": "validation",
    "invalid_state_name": "validation",
    "bad_request": "validation",
    "payload_too_large": "validation",
    "write_race": "race",
    "forbidden": "permission",
    "unauthenticated": "permission",
}
#: A lock ID refused longer ago than this is forgotten (its wait is not measured).
_WAIT_MEMORY = 3600.0
_WAIT_ENTRIES = 10_000


def refusal_reason(outcome: str, detail: str | None) -> str:
    """Why a write was refused, as a label: lineage, serial, content_md5, lock,
    validation, race, permission or error."""
    if outcome == "state_conflict":
        return "lineage" if detail and "lineage" in detail.split(";")[0] else "serial"
    return _REFUSAL.get(outcome, "error")


class _Children(dict[tuple[str, ...], Any]):
    """A labelled metric's children, each looked up once: ``.labels()`` validates
    the values and takes a lock on every call, and events, requests and storage
    calls observe on every request's path. A dict, so that finding a child is a
    subscript, not a call. The label sets are bounded (actions, outcomes, routes,
    drivers and operations are fixed sets; states are labelled only where
    ``metrics_states`` allows)."""

    def __init__(self, metric: MetricWrapperBase | CountFamily) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, labels: tuple[str, ...]) -> Any:
        # str(): an Action is a StrEnum; its label is its value.
        child = self[labels] = self.metric.labels(*map(str, labels))
        return child


class _StateLabels:
    """The ``state`` label: the name where it matches an allow-listed glob, else ""."""

    def __init__(self, globs: str | None) -> None:
        try:
            self.globs = [parse_glob(g) for g in (globs or "").split(",") if g.strip()]
        except BadRequest as exc:
            raise ConfigError(f"metrics_states: {exc.message}") from exc
        self.of: Callable[[str | None], str] = lru_cache(maxsize=4096)(self._match)

    def _match(self, name: str | None) -> str:
        if name is None or not self.globs:
            return ""
        try:
            state = StateName(name)
        except InvalidStateName:
            return ""
        return name if any(g.covers(state) for g in self.globs) else ""


class _LockGauges(Collector):
    """Locks held and the age of the oldest, read from the lock table at most every
    ``every`` seconds (on DynamoDB a read is a Scan: scrapes must not multiply it)."""

    def __init__(self, table: LockTable, every: float) -> None:
        self.table = table
        self.every = every
        self._guard = threading.Lock()
        self._read_at = -float("inf")
        self._figures: tuple[int, float] | None = None

    def _read(self) -> tuple[int, float] | None:
        with self._guard:
            if time.monotonic() - self._read_at >= self.every:
                self._read_at = time.monotonic()
                try:
                    locks = [lock for _, lock in holders(self.table.scan())]
                except StatekeeperError:
                    self._figures = None  # the storage metrics count the failure
                else:
                    now = utcnow()
                    ages = [(now - s).total_seconds() for s in (lk.since for lk in locks) if s]
                    self._figures = (len(locks), max(ages, default=0.0))
            return self._figures

    def collect(self) -> Iterator[Metric]:
        figures = self._read()
        if figures is None:
            return
        held, oldest = figures
        yield GaugeMetricFamily("statekeeper_locks_held", "State locks held now.", value=held)
        yield GaugeMetricFamily(
            "statekeeper_lock_oldest_age_seconds",
            "Age of the oldest lock held (0 when none is).",
            value=oldest,
        )


class _QueueGauges(Collector):
    """Depth and failures of the queues behind the stream (audit trail, webhooks)."""

    def __init__(self) -> None:
        self.queues: dict[str, tuple[Callable[[], int], Callable[[], int]]] = {}

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "statekeeper_queue_depth",
            "Events waiting to be written or delivered.",
            labels=["queue"],
        )
        failed = CounterMetricFamily(
            "statekeeper_queue_failures",
            "Events that could not be written or delivered.",
            labels=["queue"],
        )
        for name, (backlog, failures) in self.queues.items():
            depth.add_metric([name], backlog())
            failed.add_metric([name], failures())
        yield depth
        yield failed


class Metrics:
    """One process's metrics, in a registry of its own."""

    def __init__(self, state_globs: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self.states = _StateLabels(state_globs)
        r = self.registry
        ProcessCollector(registry=r)
        Gauge(
            "statekeeper_build_info",
            "statekeeper's version and Python's (always 1).",
            ["version", "python"],
            registry=r,
        ).labels(__version__, platform.python_version()).set(1)
        Gauge(
            "statekeeper_gc_frozen_objects",
            "Objects of start-up that Python's cyclic garbage collector no longer examines.",
            registry=r,
        ).set_function(gc.get_freeze_count)
        self.http_requests = CountFamily(
            "statekeeper_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_seconds = LatencyHistogram(
            "statekeeper_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer.",
            ["route", "method"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        #: Requests being answered: counted by the access middleware, on the event
        #: loop's thread only (so a plain int), and read at each scrape.
        self.in_flight = 0
        Gauge(
            "statekeeper_http_requests_in_flight", "HTTP requests being answered now.", registry=r
        ).set_function(lambda: self.in_flight)
        self.events = CountFamily(
            "statekeeper_events",
            "Operations recorded on the event stream, by action and outcome (ok or error code).",
            ["action", "outcome"],
            registry=r,
        )
        self.lock_acquisitions = CountFamily(
            "statekeeper_lock_acquisitions", "Locks taken.", ["state"], registry=r
        )
        self.lock_conflicts = CountFamily(
            "statekeeper_lock_conflicts",
            "LOCK requests refused because another run holds the lock (HTTP 423).",
            ["state"],
            registry=r,
        )
        self.lock_wait = Histogram(
            "statekeeper_lock_wait_seconds",
            "Time from a lock ID's first refusal to its acquisition (-lock-timeout waits).",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.lock_removals = {
            kind: Counter(f"statekeeper_lock_{kind}", text, ["state"], registry=r)
            for kind, text in (
                ("force_unlocks", "Locks removed by force-unlock (Terraform's or an operator's)."),
                ("expiries", "Locks removed because they outlived their time limit."),
                ("reaps", "Stale locks removed by a reap."),
            )
        }
        self.writes = CountFamily(
            "statekeeper_state_writes",
            "State writes accepted: created (a new version) or unchanged (the bytes were current).",
            ["state", "result"],
            registry=r,
        )
        self.refusals = CountFamily(
            "statekeeper_state_write_refusals",
            "State writes refused, by reason: lineage, serial, content_md5, lock, validation, "
            "race, permission, error.",
            ["state", "reason"],
            registry=r,
        )
        self.state_bytes = Histogram(
            "statekeeper_state_size_bytes",
            "Sizes of the state versions stored (as stored: encrypted ones with their envelope).",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.storage_seconds = LatencyHistogram(
            "statekeeper_storage_operation_duration_seconds",
            "Time of each store and lock-table call, by driver and operation.",
            ["driver", "operation"],
            buckets=_STORAGE_BUCKETS,
            registry=r,
        )
        self.storage_errors = Counter(
            "statekeeper_storage_operation_errors",
            "Store and lock-table calls that failed, by driver, operation and error code.",
            ["driver", "operation", "error"],
            registry=r,
        )
        self.queues = _QueueGauges()
        r.register(self.queues)
        self._events = _Children(self.events)
        self._acquisitions = _Children(self.lock_acquisitions)
        self._conflicts = _Children(self.lock_conflicts)
        self._writes = _Children(self.writes)
        self._refusals = _Children(self.refusals)
        self._removals = {kind: _Children(c) for kind, c in self.lock_removals.items()}
        self._storage_errors = _Children(self.storage_errors)
        self._http_children: dict[tuple[str, str, int], tuple[Count, Timer]] = {}
        self._waiting: OrderedDict[str, float] = OrderedDict()
        self._waiting_guard = threading.Lock()

    # Sources

    def watch_locks(self, table: LockTable, every: float = 30.0) -> None:
        """Report the locks held in ``table`` (read at most every ``every`` seconds)."""
        self.registry.register(_LockGauges(table, every))

    def watch_queue(
        self, name: str, backlog: Callable[[], int], failures: Callable[[], int]
    ) -> None:
        """Report a queue's depth and failures, read at each scrape."""
        self.queues.queues[name] = (backlog, failures)

    def observe_event(self, event: Event) -> None:
        """The event-stream subscriber."""
        action = event.action
        self._events[action, event.outcome].inc()
        if action is Action.LOCK:
            self._lock(event, self.states.of(event.state))
        elif action in _WRITES:
            state = self.states.of(event.state)
            if event.outcome == "ok":
                unchanged = bool(event.detail and event.detail.startswith("unchanged"))
                self._writes[state, "unchanged" if unchanged else "created"].inc()
            else:
                reason = refusal_reason(event.outcome, event.detail)
                # A caller refused the write may name any state under an allow-listed glob,
                # and each name would be a series of its own: its refusals go unlabelled.
                self._refusals["" if reason == "permission" else state, reason].inc()
        elif action in _LOCK_COUNTERS and event.outcome == "ok":
            self._removals[_LOCK_COUNTERS[action]][(self.states.of(event.state),)].inc()

    def _lock(self, event: Event, state: str) -> None:
        now = time.monotonic()
        if event.outcome == "ok":
            self._acquisitions[(state,)].inc()
            # Read without the guard: a lock ID's refusal is observed before its grant.
            if event.lock_id and self._waiting:
                with self._waiting_guard:
                    first = self._waiting.pop(event.lock_id, None)
                if first is not None:
                    self.lock_wait.observe(now - first)
        elif event.outcome == "locked":
            self._conflicts[(state,)].inc()
            if event.lock_id:
                with self._waiting_guard:
                    self._waiting.setdefault(event.lock_id, now)
                    while self._waiting and (
                        len(self._waiting) > _WAIT_ENTRIES
                        or now - next(iter(self._waiting.values())) > _WAIT_MEMORY
                    ):
                        self._waiting.popitem(last=False)

    def storage_timer(self, driver: str, operation: str) -> Callable[[float], None]:
        """The storage boundary's timer of one operation (see ``storage/metered.py``)."""
        return self.storage_seconds.labels(driver, operation).observe

    def storage_call(self, driver: str, operation: str, seconds: float, error: str | None) -> None:
        """One store or lock-table call, and its error code if it failed."""
        self.storage_seconds.labels(driver, operation).observe(seconds)
        if error is not None:
            self._storage_errors[driver, operation, error].inc()

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """The access middleware's observer: one request answered."""
        key = (route, method, status)
        children = self._http_children.get(key)
        if children is None:
            children = self._http_children[key] = (
                self.http_requests.labels(route, method, str(status)),
                self.http_seconds.labels(route, method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def state_stored(self, size: int) -> None:
        self.state_bytes.observe(size)

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

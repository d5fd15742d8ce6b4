"""A labelled latency histogram, and a labelled counter, that cost a fraction of
prometheus_client's to observe.

prometheus_client's ``Histogram`` takes a lock for the sum and another for the
bucket on every observation, after a check that the metric may be observed and
a walk through the bounds: about a microsecond. The server observes one for
every request and every store call (some twenty a lock cycle), so the two
hottest histograms, HTTP and storage latency, are this one instead: an
observation is one append to a queue, sorted into its bucket later, with
others. What a scrape sees is the same family, sample for sample (``_bucket``
with ``le``, ``_count``, ``_sum``): the text format does not say which class
counted. The counters the server counts on every request and every event
(:class:`CountFamily`) are counted the same way.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["Count", "CountFamily", "LatencyHistogram", "Timer"]

_Child = TypeVar("_Child")


def _le(bound: float) -> str:
    """A bucket's ``le`` as prometheus_client writes it (``1.0``, ``0.005``)."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


class Timer:
    """One label set's counts: ``counts[i]`` observations in bucket ``i`` alone
    (made cumulative at a scrape), the last bucket ``+Inf``.

    An observation is appended to ``_pending`` and nothing else: ``deque.append``
    is one C call under the GIL, so threads observing at once lose nothing and
    take no lock (a lock, a bisect and two sums a call, on a request's path and in
    its store calls, cost more inside the busy server than their instructions
    suggest). :meth:`_fold` sorts the pending values into buckets, under the lock
    only folds take, popping them one by one (``popleft`` is as atomic as
    ``append``, so a value appended during a fold is folded now or next time):
    at a scrape, and by the observer once ``FOLD_AT`` are pending, which bounds
    the queue when nothing scrapes.
    """

    FOLD_AT = 256

    __slots__ = ("_bounds", "_guard", "_pending", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self._guard = threading.Lock()
        self._pending: deque[float] = deque()
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        pending = self._pending
        pending.append(value)
        if len(pending) >= self.FOLD_AT:
            self._fold()

    def _fold(self) -> None:
        with self._guard:
            pending, bounds, counts = self._pending, self._bounds, self.counts
            total = self.total
            while pending:
                value = pending.popleft()
                # bisect_left: a value equal to a bound is in that bound's bucket (le = "≤").
                counts[bisect.bisect_left(bounds, value)] += 1
                total += value
            self.total = total

    def read(self) -> tuple[list[int], float]:
        self._fold()
        with self._guard:
            return list(self.counts), self.total


class _Family(Collector, Generic[_Child]):
    """A labelled family: a child per label set, made on first use by ``make``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        make: Callable[[], _Child],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._make = make
        self._children: dict[tuple[str, ...], _Child] = {}
        self._guard = threading.Lock()
        registry.register(self)

    def labels(self, *values: str) -> _Child:
        """The child of one label set (made on first use, then the same one)."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, not {values}")
            with self._guard:
                child = self._children.setdefault(values, self._make())
        return child

    def _each(self) -> list[tuple[tuple[str, ...], _Child]]:
        with self._guard:
            return list(self._children.items())


class LatencyHistogram(_Family[Timer]):
    """A histogram family with labels; :meth:`labels` gives a child to observe."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self._les = [*map(_le, self.bounds), "+Inf"]
        super().__init__(name, documentation, labelnames, registry, lambda: Timer(self.bounds))

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> list[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._each():
            counts, total = child.read()
            cumulative, buckets = 0, []
            for le, count in zip(self._les, counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(list(values), buckets, total)
        return [family]


class Count(Timer):
    """One label set's count: :meth:`inc` is a :class:`Timer`'s observation of the
    amount (one ``deque.append``, no lock); the count is the observations' sum."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(())

    def inc(self, amount: float = 1.0) -> None:
        # observe's body, not a call to it: a call is a third of an increment's cost.
        pending = self._pending
        pending.append(amount)
        if len(pending) >= self.FOLD_AT:
            self._fold()


class CountFamily(_Family[Count]):
    """A counter family with labels (``NAME_total`` samples, as prometheus_client's
    ``Counter`` writes them); :meth:`labels` gives a :class:`Count` to increment."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry, Count)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._each():
            family.add_metric(list(values), child.read()[1])
        return [family]

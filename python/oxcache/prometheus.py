"""A Prometheus collector for cached endpoints (`pip install "fastapi-oxcache[prometheus]"`,
which brings `prometheus-client`).

    from oxcache.prometheus import PrometheusCollector
    metrics = PrometheusCollector()            # registered in prometheus_client's REGISTRY
    store = Cache(url=..., observers=[metrics])

Expose the registry as usual (`prometheus_client.make_asgi_app()` mounted on the app, or
`start_http_server`). Metrics, with the labels `endpoint` (`module.function`) and `outcome`
(`hit`, `stale`, `miss`, `bypass`, `error`):

- `oxcache_requests_total{endpoint, outcome, reason}`: requests (`reason` is empty when
  there is none, else a bypass's `credentials`, a miss's `status`, ...).
- `oxcache_request_duration_seconds{endpoint, outcome}`: a histogram of how long oxcache
  took to answer.
- `oxcache_storage_errors_total{store}`: failed calls to a store's backend.

A request costs a lock and a few dictionary updates; the metric families are built only
when Prometheus scrapes.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import REGISTRY, CollectorRegistry
from prometheus_client.utils import floatToGoString

from oxcache.observe import DURATION_BUCKETS, CacheEvent, Observer

__all__ = ["DEFAULT_BUCKETS", "PrometheusCollector"]

#: Histogram buckets (seconds): `oxcache.observe.DURATION_BUCKETS`.
DEFAULT_BUCKETS = DURATION_BUCKETS


class _Histogram:
    """The observations of one label set: a count per bucket (not cumulative) and a sum."""

    __slots__ = ("counts", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.total = 0.0


class PrometheusCollector(Observer):
    """An `Observer` that is also a Prometheus collector (see the module docstring).

    Args:
        registry: The `CollectorRegistry` to register in (prometheus_client's default
            `REGISTRY`); None registers nowhere (call `registry.register(collector)`).
        namespace: The metric names' prefix.
        buckets: The duration histogram's upper bounds, in seconds, increasing.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        namespace: str = "oxcache",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        bounds = tuple(float(b) for b in buckets if b != float("inf"))
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError("buckets must be increasing upper bounds, in seconds")
        self.namespace = namespace
        self.bounds = bounds
        self._lock = threading.Lock()  # requests update, scrapes (maybe another thread) read
        self._requests: dict[tuple[str, str, str], int] = {}
        self._durations: dict[tuple[str, str], _Histogram] = {}
        self._storage_errors: dict[str, int] = {}
        if registry is not None:
            registry.register(self)

    # -- Observer -------------------------------------------------------------------------

    def request(self, event: CacheEvent) -> None:
        """Count the request and its duration."""
        labels = (event.endpoint, event.outcome)
        counted = (event.endpoint, event.outcome, event.reason or "")
        slot = bisect.bisect_left(self.bounds, event.seconds)
        with self._lock:
            self._requests[counted] = self._requests.get(counted, 0) + 1
            histogram = self._durations.get(labels)
            if histogram is None:
                histogram = self._durations[labels] = _Histogram(len(self.bounds) + 1)
            histogram.counts[slot] += 1
            histogram.total += event.seconds

    def storage_error(self, store: str, error: BaseException) -> None:
        """Count the failure."""
        with self._lock:
            self._storage_errors[store] = self._storage_errors.get(store, 0) + 1

    # -- Collector ------------------------------------------------------------------------

    def _families(self) -> tuple[CounterMetricFamily, HistogramMetricFamily, CounterMetricFamily]:
        ns = self.namespace
        return (
            CounterMetricFamily(
                f"{ns}_requests",
                "Requests of cached endpoints, by outcome and reason",
                labels=("endpoint", "outcome", "reason"),
            ),
            HistogramMetricFamily(
                f"{ns}_request_duration_seconds",
                "How long oxcache took to answer a request of a cached endpoint",
                labels=("endpoint", "outcome"),
            ),
            CounterMetricFamily(
                f"{ns}_storage_errors",
                "Failed calls to a store's backend",
                labels=("store",),
            ),
        )

    def describe(self) -> Iterator[Metric]:
        """The metric families, empty (what the registry checks names with)."""
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        """The metric families, with everything counted so far."""
        with self._lock:
            requests = list(self._requests.items())
            durations = [(k, list(h.counts), h.total) for k, h in self._durations.items()]
            storage_errors = list(self._storage_errors.items())
        counter, histogram, errors = self._families()
        for labels, count in sorted(requests):
            counter.add_metric(labels, count)
        for (endpoint, outcome), counts, total in sorted(durations, key=_first):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
            histogram.add_metric((endpoint, outcome), buckets, total)
        for store, count in sorted(storage_errors):
            errors.add_metric((store,), count)
        yield counter
        yield histogram
        yield errors


def _first(item: tuple[Any, ...]) -> Any:
    return item[0]

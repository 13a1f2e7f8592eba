"""OpenTelemetry metrics and spans for cached endpoints, through the OpenTelemetry API
(`opentelemetry-api`, which FastAPI 0.142 and later installs; `pip install
"fastapi-oxcache[opentelemetry]"` otherwise). Without an SDK configured by the application
every call is a no-op; with one, its exporters send them wherever they go.

    from oxcache.otel import OpenTelemetryObserver
    store = Cache(url=..., observers=[OpenTelemetryObserver()])

Instruments (meter `oxcache`), each with the attributes `oxcache.endpoint` and
`oxcache.outcome` (`hit`, `stale`, `miss`, `bypass`, `error`):

- `oxcache.requests` (counter, `{request}`): one per request, with `oxcache.reason` when
  there is one (a bypass's `credentials`, a miss's `status`, ...).
- `oxcache.request.duration` (histogram, seconds): how long oxcache took to answer.
- `oxcache.storage.errors` (counter, `{error}`): failed backend calls, by `oxcache.store`
  and `error.type`.

Spans (tracer `oxcache`): one per request, `oxcache <outcome>`, child of the span current
when the request reached the endpoint (FastAPI's server span when the app is instrumented),
covering the time oxcache took, with the same attributes; an `error` span has status ERROR.
A storage failure is an `oxcache.storage_error` event on the current span.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.trace import Status, StatusCode

from oxcache import __version__
from oxcache.observe import DURATION_BUCKETS, ERROR, CacheEvent, Observer

__all__ = ["DURATION_BUCKETS", "OpenTelemetryObserver"]


class OpenTelemetryObserver(Observer):
    """Reports every request of a store's cached endpoints as OpenTelemetry metrics and a
    span (see the module docstring).

    Args:
        meter_provider: Where the instruments come from; the global one by default.
        tracer_provider: Where spans come from; the global one by default.
        spans: False records metrics only (a span per request costs tens of microseconds
            with the SDK: docs/observability.md).
    """

    def __init__(
        self,
        *,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        spans: bool = True,
    ) -> None:
        meter = metrics.get_meter("oxcache", __version__, meter_provider=meter_provider)
        self.requests = meter.create_counter(
            "oxcache.requests",
            unit="{request}",
            description="Requests of cached endpoints, by endpoint, outcome and reason",
        )
        try:
            self.duration = meter.create_histogram(
                "oxcache.request.duration",
                unit="s",
                description="How long oxcache took to answer a request of a cached endpoint",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            )
        except TypeError:  # an opentelemetry-api before bucket advice
            self.duration = meter.create_histogram(
                "oxcache.request.duration",
                unit="s",
                description="How long oxcache took to answer a request of a cached endpoint",
            )
        self.storage_errors = meter.create_counter(
            "oxcache.storage.errors",
            unit="{error}",
            description="Failed calls to a store's backend",
        )
        self.tracer = (
            trace.get_tracer("oxcache", __version__, tracer_provider=tracer_provider)
            if spans
            else None
        )

    def request(self, event: CacheEvent) -> None:
        """Count the request, record its duration and, with spans, its span."""
        attributes: dict[str, Any] = {
            "oxcache.endpoint": event.endpoint,
            "oxcache.outcome": event.outcome,
        }
        self.duration.record(event.seconds, attributes)
        if event.reason is not None:
            attributes["oxcache.reason"] = event.reason
        self.requests.add(1, attributes)
        if self.tracer is not None:
            end = time.time_ns()
            span = self.tracer.start_span(
                "oxcache " + event.outcome,
                start_time=end - int(event.seconds * 1e9),
                attributes=attributes,
            )
            if event.outcome == ERROR:
                span.set_status(Status(StatusCode.ERROR, event.reason))
            span.end(end_time=end)

    def storage_error(self, store: str, error: BaseException) -> None:
        """Count the failure, and note it on the current span."""
        attributes = {"oxcache.store": store, "error.type": type(error).__name__}
        self.storage_errors.add(1, attributes)
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event("oxcache.storage_error", {**attributes, "exception.message": str(error)})

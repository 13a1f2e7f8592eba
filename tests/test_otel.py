"""`oxcache.otel.OpenTelemetryObserver` with the real OpenTelemetry SDK: an in-memory metric
reader and span exporter read back what a store's requests and storage failures produced,
on the memory store and Redis, through `APIRoute` and `CachedRoute`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from starlette.types import ASGIApp, Receive, Scope, Send

from oxcache import Cache, CachedRoute, cache
from oxcache.otel import DURATION_BUCKETS, OpenTelemetryObserver
from tests.conftest import free_port

MakeStore = Callable[..., Cache]
ENDPOINT = f"{__name__}.item"


class Telemetry:
    """An SDK meter provider and tracer provider of this test's own (the global ones are
    left alone), read back in memory."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.exporter))

    def observer(self, **options: Any) -> OpenTelemetryObserver:
        return OpenTelemetryObserver(
            meter_provider=self.meters, tracer_provider=self.tracers, **options
        )

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def counts(self, name: str) -> dict[tuple[tuple[str, Any], ...], int]:
        return {tuple(sorted(p.attributes.items())): p.value for p in self.points(name)}


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    found = Telemetry()
    yield found
    found.meters.shutdown()
    found.tracers.shutdown()


class ServerSpan:
    """What FastAPI's instrumentation does, reduced: a span current for the whole request."""

    def __init__(self, app: ASGIApp, tracers: TracerProvider) -> None:
        self.app = app
        self.tracer = tracers.get_tracer("test-server")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.tracer.start_as_current_span("GET " + scope["path"]):
            await self.app(scope, receive, send)


def item_app(store: Cache, route_class: Any = None) -> FastAPI:
    app = FastAPI(lifespan=store.lifespan)
    if route_class is not None:
        app.router.route_class = route_class

    @app.get("/items/{id}")
    @cache(expire=60, store=store)
    async def item(id: int) -> dict[str, int]:
        if id < 0:
            raise RuntimeError("negative")
        return {"id": id}

    return app


@pytest.mark.parametrize("backend_kind", ["memory", "redis"])
@pytest.mark.parametrize("route_class", [None, CachedRoute], ids=["APIRoute", "CachedRoute"])
def test_requests_become_counters_a_duration_histogram_and_child_spans(
    make_store: MakeStore, route_class: Any, telemetry: Telemetry
) -> None:
    store = make_store(observers=[telemetry.observer()])
    app = item_app(store, route_class)
    app.add_middleware(ServerSpan, tracers=telemetry.tracers)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.get("/items/1")
        client.get("/items/1")
        client.get("/items/1")
        client.get("/items/1", headers={"Authorization": "Bearer t"})
        assert client.get("/items/-1").status_code == 500

    base = (("oxcache.endpoint", ENDPOINT),)
    assert telemetry.counts("oxcache.requests") == {
        (*base, ("oxcache.outcome", "miss")): 1,
        (*base, ("oxcache.outcome", "hit")): 2,
        (*base, ("oxcache.outcome", "bypass"), ("oxcache.reason", "credentials")): 1,
        (*base, ("oxcache.outcome", "error"), ("oxcache.reason", "RuntimeError")): 1,
    }
    durations = {
        dict(p.attributes)["oxcache.outcome"]: p
        for p in telemetry.points("oxcache.request.duration")
    }
    assert {name: p.count for name, p in durations.items()} == {
        "miss": 1,
        "hit": 2,
        "bypass": 1,
        "error": 1,
    }
    assert tuple(durations["hit"].explicit_bounds) == DURATION_BUCKETS
    assert durations["miss"].sum >= 0

    spans = telemetry.exporter.get_finished_spans()
    ours = [s for s in spans if s.instrumentation_scope.name == "oxcache"]
    servers = {s.context.span_id: s for s in spans if s.name.startswith("GET ")}
    assert [s.name for s in ours] == [
        "oxcache miss",
        "oxcache hit",
        "oxcache hit",
        "oxcache bypass",
        "oxcache error",
    ]
    for span in ours:
        # A child of the request's server span, within its time.
        assert span.parent is not None and span.parent.span_id in servers
        server = servers[span.parent.span_id]
        assert span.context.trace_id == server.context.trace_id
        assert server.start_time <= span.start_time <= span.end_time <= server.end_time
        assert span.attributes["oxcache.endpoint"] == ENDPOINT
    assert ours[3].attributes["oxcache.reason"] == "credentials"
    assert ours[4].status.status_code is StatusCode.ERROR
    assert ours[0].status.status_code is StatusCode.UNSET


def test_spans_can_be_turned_off(telemetry: Telemetry) -> None:
    store = Cache(observers=[telemetry.observer(spans=False)])
    with TestClient(item_app(store)) as client:
        client.get("/items/2")
    assert telemetry.exporter.get_finished_spans() == ()
    assert sum(telemetry.counts("oxcache.requests").values()) == 1


def test_storage_failures_are_counted_and_noted_on_the_current_span(
    telemetry: Telemetry,
) -> None:
    store = Cache(
        f"redis://127.0.0.1:{free_port()}/0",
        observers=[telemetry.observer()],
        retry_after=0,
    )
    app = item_app(store)
    app.add_middleware(ServerSpan, tracers=telemetry.tracers)
    with TestClient(app) as client:
        assert client.get("/items/3").json() == {"id": 3}
    errors = telemetry.points("oxcache.storage.errors")
    assert errors and all(p.attributes["oxcache.store"] == store.health.name for p in errors)
    assert all(p.attributes["error.type"] for p in errors)
    server = next(s for s in telemetry.exporter.get_finished_spans() if s.name == "GET /items/3")
    assert [e.name for e in server.events][:1] == ["oxcache.storage_error"]
    assert server.events[0].attributes["oxcache.store"] == store.health.name


def test_without_an_sdk_the_observer_costs_nothing_but_works() -> None:
    """The API alone (no SDK configured: the global providers are no-ops) never fails."""
    observer = OpenTelemetryObserver()
    store = Cache(observers=[observer])
    with TestClient(item_app(store)) as client:
        assert [client.get("/items/4").headers["x-fastapi-cache"] for _ in range(2)] == [
            "Miss",
            "Hit",
        ]
    assert not trace.get_current_span().is_recording()

"""`oxcache.prometheus.PrometheusCollector` with the real prometheus_client: a registry of
the test's own is read back, in its exposition format too, after requests on the memory
store and Redis, through `APIRoute` and `CachedRoute`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from oxcache import Cache, CachedRoute, cache
from oxcache.observe import CacheEvent
from oxcache.prometheus import DEFAULT_BUCKETS, PrometheusCollector
from tests.conftest import free_port

MakeStore = Callable[..., Cache]
ENDPOINT = f"{__name__}.item"


def item_app(store: Cache, route_class: Any = None) -> FastAPI:
    app = FastAPI(lifespan=store.lifespan)
    if route_class is not None:
        app.router.route_class = route_class

    @app.get("/items/{id}")
    @cache(expire=60, store=store)
    async def item(id: int) -> dict[str, int]:
        return {"id": id}

    return app


@pytest.mark.parametrize("backend_kind", ["memory", "redis"])
@pytest.mark.parametrize("route_class", [None, CachedRoute], ids=["APIRoute", "CachedRoute"])
def test_requests_are_counted_by_endpoint_outcome_and_reason_with_a_histogram(
    make_store: MakeStore, route_class: Any
) -> None:
    registry = CollectorRegistry()
    store = make_store(observers=[PrometheusCollector(registry)])
    with TestClient(item_app(store, route_class)) as client:
        for _ in range(3):
            client.get("/items/1")
        client.get("/items/1", headers={"Cache-Control": "no-store"})

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"endpoint": ENDPOINT, **labels})

    assert value("oxcache_requests_total", outcome="miss", reason="") == 1
    assert value("oxcache_requests_total", outcome="hit", reason="") == 2
    assert value("oxcache_requests_total", outcome="bypass", reason="no-store") == 1
    assert value("oxcache_request_duration_seconds_count", outcome="hit") == 2
    assert value("oxcache_request_duration_seconds_bucket", outcome="hit", le="+Inf") == 2
    assert value("oxcache_request_duration_seconds_bucket", outcome="hit", le="10.0") == 2
    assert (value("oxcache_request_duration_seconds_sum", outcome="miss") or 0) > 0

    # The exposition format Prometheus scrapes parses back to the same families.
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert families["oxcache_requests"].type == "counter"
    assert families["oxcache_request_duration_seconds"].type == "histogram"
    buckets = [
        s.labels["le"]
        for s in families["oxcache_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["outcome"] == "miss"
    ]
    assert len(buckets) == len(DEFAULT_BUCKETS) + 1 and buckets[-1] == "+Inf"


def test_buckets_are_cumulative_upper_bounds() -> None:
    registry = CollectorRegistry()
    collector = PrometheusCollector(registry, buckets=(0.001, 0.1, 1.0))
    for seconds in (0.0005, 0.001, 0.05, 0.5, 3.0):
        collector.request(CacheEvent("app.f", "miss", None, seconds))
    got = {
        le: registry.get_sample_value(
            "oxcache_request_duration_seconds_bucket",
            {"endpoint": "app.f", "outcome": "miss", "le": le},
        )
        for le in ("0.001", "0.1", "1.0", "+Inf")
    }
    assert got == {"0.001": 2, "0.1": 3, "1.0": 4, "+Inf": 5}
    assert registry.get_sample_value(
        "oxcache_request_duration_seconds_sum", {"endpoint": "app.f", "outcome": "miss"}
    ) == pytest.approx(3.5515)


def test_storage_failures_are_counted_per_store() -> None:
    registry = CollectorRegistry()
    store = Cache(
        f"redis://127.0.0.1:{free_port()}/0",
        observers=[PrometheusCollector(registry)],
        retry_after=0,
    )
    with TestClient(item_app(store)) as client:
        assert client.get("/items/2").json() == {"id": 2}
    errors = registry.get_sample_value("oxcache_storage_errors_total", {"store": store.health.name})
    assert errors is not None and errors >= 1


def test_a_namespace_and_a_second_collector_do_not_clash() -> None:
    registry = CollectorRegistry()
    PrometheusCollector(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusCollector(registry)  # the registry refuses two of the same names
    other = PrometheusCollector(registry, namespace="api_cache")
    other.request(CacheEvent("app.f", "hit", None, 0.0002))
    assert (
        registry.get_sample_value(
            "api_cache_requests_total", {"endpoint": "app.f", "outcome": "hit", "reason": ""}
        )
        == 1
    )


def test_unregistered_collector_can_be_registered_later_and_scraped_from_another_thread() -> None:
    collector = PrometheusCollector(None)
    registry = CollectorRegistry()
    registry.register(collector)
    scraped: list[bytes] = []

    def scrape() -> None:
        for _ in range(20):
            scraped.append(generate_latest(registry))

    thread = threading.Thread(target=scrape)
    thread.start()
    for i in range(2000):
        collector.request(CacheEvent(f"app.f{i % 7}", "hit", None, 0.0001))
    thread.join(timeout=30)
    assert not thread.is_alive() and len(scraped) == 20
    total = sum(
        registry.get_sample_value(
            "oxcache_requests_total", {"endpoint": f"app.f{i}", "outcome": "hit", "reason": ""}
        )
        or 0
        for i in range(7)
    )
    assert total == 2000


@pytest.mark.parametrize("buckets", [(), (1.0, 0.5), (0.1, 0.1)])
def test_buckets_must_be_increasing(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="increasing"):
        PrometheusCollector(None, buckets=buckets)

"""Resilience: a Redis that fails as a whole (killed, stuck, down at startup, restarted)
costs no error and at most a timeout, the outage is logged once and caching resumes by
itself (health.py's circuit breaker), on_error="raise" surfaces it, and an invalidation the
backend did not take is replayed before anything is served (invalidation.py). Every loop
is bounded in count and time; servers run on loopback."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Sequence

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from oxcache import Cache, CacheUnavailable, MemoryBackend, cache
from tests.apps import client_for, item_app, per_user_app
from tests.conftest import RedisServer, free_port


def test_redis_killed_and_restarted_during_2000_requests(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A killed Redis refuses connections at once, so the outage is seen without a timeout;
    # a generous one keeps a busy machine from tripping the breaker before the kill.
    store = Cache(own_redis.url, prefix="kill", timeout=2.0)
    app, _ = item_app(store, named=True)
    statuses: list[int] = []
    resumed_after: float | None = None
    with caplog.at_level(logging.INFO, "oxcache"), TestClient(app) as client:
        restarted_at = 0.0
        for i in range(2000):
            if i == 500:
                assert own_redis.proc is not None
                own_redis.proc.kill()  # SIGKILL: no goodbye to the clients
                own_redis.proc.wait(timeout=10)
            if i == 1500:
                own_redis.start()  # the same port, empty
                restarted_at = time.monotonic()
            response = client.get(f"/item/{i % 20}")
            statuses.append(response.status_code)
            assert response.json() == {"id": i % 20, "name": f"item {i % 20}"}
            if (
                i > 1500
                and resumed_after is None
                and response.headers.get("x-fastapi-cache") == "Hit"
            ):
                resumed_after = time.monotonic() - restarted_at
    assert statuses == [200] * 2000
    assert resumed_after is not None and resumed_after < 1.0, resumed_after
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("CONNECT_FAIL") for m in messages) == 1  # logged once per outage
    assert sum("caching resumed" in m for m in messages) == 1  # and its end once
    assert store.stats()["errors"] >= 1


def test_redis_that_never_answers_costs_at_most_the_timeout(own_redis: RedisServer) -> None:
    store = Cache(own_redis.url, prefix="stuck", timeout=0.05)
    app, _ = item_app(store, named=True)
    latencies: list[float] = []
    with TestClient(app) as client:
        assert client.get("/item/1").status_code == 200
        assert client.get("/item/1").headers["x-fastapi-cache"] == "Hit"
        assert own_redis.proc is not None
        os.kill(own_redis.proc.pid, signal.SIGSTOP)  # accepts connections, never answers
        try:
            for i in range(60):
                started = time.perf_counter()
                response = client.get(f"/item/{i % 3}")
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200 and response.json()["id"] == i % 3
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        time.sleep(store.retry_after)
        client.get("/item/2")
        assert client.get("/item/2").headers["x-fastapi-cache"] == "Hit"  # resumed
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    # A generous bound (the timeout plus scheduling slack on a busy CI machine); without
    # the timeout a request would wait for this Redis forever.
    assert p99 < store.backend.timeout + 0.3, latencies  # type: ignore[attr-defined]


def test_redis_down_at_startup_then_up(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    store = Cache(f"redis://127.0.0.1:{port}/0", prefix="late", retry_after=0.1)
    app, calls = item_app(store, named=True)
    with caplog.at_level(logging.INFO, "oxcache"), TestClient(app) as client:
        for _ in range(3):
            assert client.get("/item/1").json() == {"id": 1, "name": "item 1"}
        assert len(calls) == 3
        server = RedisServer.__new__(RedisServer)
        server.__init__()  # type: ignore[misc]
        try:
            server.stop()
            server.port = port
            server.start()
            time.sleep(0.15)
            client.get("/item/1")
            assert client.get("/item/1").headers["x-fastapi-cache"] == "Hit"
        finally:
            server.stop()
    assert any(r.getMessage().startswith("CONNECT_FAIL") for r in caplog.records)


def test_on_error_raise_surfaces_the_outage() -> None:
    store = Cache(f"redis://127.0.0.1:{free_port()}/0", on_error="raise")
    app, _ = item_app(store, named=True)
    with pytest.raises(CacheUnavailable), TestClient(app):
        pass  # at startup
    bare = FastAPI()  # no lifespan: the first request meets the outage

    @bare.get("/x")
    @cache(expire=60, store=store)
    async def x() -> int:
        return 1

    with TestClient(bare) as client, pytest.raises(CacheUnavailable):
        client.get("/x")


class FlakyBackend(MemoryBackend):
    """A memory backend whose storage calls fail while `down` is set (fault injection)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def check(self) -> None:
        if self.down:
            raise ConnectionError("storage unreachable")

    async def get(self, key: str) -> bytes | None:
        self.check()
        return await super().get(key)

    async def invalidate(
        self, indexes: Sequence[str], keys: Sequence[str] = (), generations: Sequence[str] = ()
    ) -> int:
        self.check()
        return await super().invalidate(indexes, keys, generations)


def test_failed_invalidation_is_replayed_before_anything_is_served() -> None:
    backend = FlakyBackend()
    store = Cache(backend=backend, retry_after=0)
    calls: Counter[str] = Counter()
    app = per_user_app(store, calls)
    with client_for(app, store) as client:
        client.get("/me/prefs", headers={"X-User": "alice"})
        backend.down = True
        assert client.portal.call(store.invalidate_user, "alice") == 0  # queued
        backend.down = False
        again = client.get("/me/prefs", headers={"X-User": "alice"})
    assert again.headers["x-fastapi-cache"] == "Miss" and calls["alice"] == 2

"""Resilience: Redis killed, stuck or restarted; garbage values; single flight; stale
entries (RFC 5861). Every loop is bounded in count and time; servers run on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

import anyio
import httpx
import pytest
import redis
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from oxcache import Cache, CacheUnavailable, ConfigError, cache
from oxcache.backends.memory import MemoryBackend
from tests.apps import MakeStore, item_app, stale_app
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


@pytest.mark.parametrize(
    "garbage",
    [b"not ours", b"OXC\x07" + b"\x00" * 60, b"OXC\x01" + b"\xff" * 40, b"\x00", b'{"a": 1}'],
)
def test_foreign_or_corrupt_values_are_misses_then_hits(
    make_store: MakeStore, garbage: bytes
) -> None:
    store = make_store()
    app, calls = item_app(store, named=True)
    key = store.key_for(app.routes[-1].endpoint, id=3)  # type: ignore[attr-defined]
    with TestClient(app) as client:
        client.portal.call(store.backend.set, key, garbage, 60_000)
        first = client.get("/item/3")
        second = client.get("/item/3")
    assert first.status_code == 200 and first.headers["x-fastapi-cache"] == "Miss"
    assert second.headers["x-fastapi-cache"] == "Hit" and second.json() == first.json()
    assert calls == [3]


def _concurrent(app: FastAPI, store: Cache, n: int, path: str) -> list[httpx.Response]:
    async def scenario() -> list[httpx.Response]:
        async with store:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return list(await asyncio.gather(*(client.get(path) for _ in range(n))))

    return anyio.run(scenario)


def slow_app(store: Cache, fail: list[bool] | None = None) -> tuple[FastAPI, list[int]]:
    app = FastAPI()
    calls: list[int] = []

    @app.get("/cold")
    @cache(expire=60, store=store)
    async def cold() -> dict[str, int]:
        calls.append(1)
        await asyncio.sleep(0.05)  # long enough for every request to arrive meanwhile
        if fail and fail[0]:
            raise HTTPException(status_code=503, detail="busy")
        return {"value": 42}

    return app, calls


def test_single_flight_200_concurrent_misses_run_the_endpoint_once(
    make_store: MakeStore,
) -> None:
    store = make_store()
    app, calls = slow_app(store)
    responses = _concurrent(app, store, 200, "/cold")
    assert [r.status_code for r in responses] == [200] * 200
    assert all(r.json() == {"value": 42} for r in responses)
    assert len({r.headers["etag"] for r in responses}) == 1
    assert len(calls) == 1
    stats = store.stats()
    # Requests that arrive after the leader stored its entry are plain hits; the others
    # waited for the leader's run. Either way none of them ran the endpoint.
    assert stats["misses"] == 1 and stats["coalesced"] >= 1
    assert stats["hits"] == 199


class _RacingReads(MemoryBackend):
    """A memory backend whose second read answers "absent" only after the first request's
    run has stored its entry: a read that raced the write."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.stored = asyncio.Event()

    async def get(self, key: str) -> bytes | None:
        self.reads += 1
        if self.reads != 2:
            return await super().get(key)
        absent = await super().get(key)
        await asyncio.wait_for(self.stored.wait(), timeout=10)
        return absent

    async def set(self, key: str, value: bytes, ttl_ms: int, indexes: Any = ()) -> None:
        await super().set(key, value, ttl_ms, indexes)
        self.stored.set()


def test_single_flight_a_miss_whose_read_raced_the_write_does_not_run_again() -> None:
    backend = _RacingReads()
    store = Cache(backend=backend, prefix="race")
    app, calls = slow_app(store)
    responses = _concurrent(app, store, 2, "/cold")
    assert [r.json() for r in responses] == [{"value": 42}] * 2
    assert sorted(r.headers["x-fastapi-cache"] for r in responses) == ["Hit", "Miss"]
    assert len(calls) == 1  # the late reader found the flight's entry instead of running


def test_single_flight_waiters_run_themselves_when_the_leader_fails(
    make_store: MakeStore,
) -> None:
    store = make_store()
    app, calls = slow_app(store, fail=[True])
    responses = _concurrent(app, store, 20, "/cold")
    assert [r.status_code for r in responses] == [503] * 20  # as the uncached route answers
    assert len(calls) == 20


def test_redis_lock_spreads_single_flight_across_workers(redis_url: str) -> None:
    """Two stores stand for two workers: one endpoint run between them."""
    prefix = "lock-" + os.urandom(4).hex()
    workers = [Cache(redis_url, prefix=prefix, lock_timeout=2, timeout=1.0) for _ in range(2)]
    calls: list[int] = []
    apps = []
    for store in workers:
        app = FastAPI()

        @app.get("/cold")
        @cache(expire=60, store=store)
        async def cold() -> dict[str, int]:
            calls.append(1)
            await asyncio.sleep(0.1)
            return {"value": 7}

        apps.append(app)

    async def scenario() -> list[httpx.Response]:
        async with workers[0], workers[1]:
            clients = [
                httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t")
                for a in apps
            ]
            try:
                return list(await asyncio.gather(*(clients[i % 2].get("/cold") for i in range(40))))
            finally:
                for c in clients:
                    await c.aclose()

    responses = anyio.run(scenario)
    assert all(r.status_code == 200 and r.json() == {"value": 7} for r in responses)
    assert len(calls) == 1
    redis.Redis.from_url(redis_url).delete(workers[0].lock_name(f"{prefix}:x"))


def test_a_dead_lock_holder_costs_one_lock_timeout_not_a_deadlock(
    redis_url: str, redis_client: redis.Redis
) -> None:
    store = Cache(redis_url, prefix="deadlock-" + os.urandom(4).hex(), lock_timeout=0.3)
    app, calls = item_app(store, named=True)
    key = store.key_for(app.routes[-1].endpoint, id=5)  # type: ignore[attr-defined]
    redis_client.set(store.lock_name(key), b"a worker that died", px=5000)
    with TestClient(app) as client:
        started = time.monotonic()
        response = client.get("/item/5")
        waited = time.monotonic() - started
    assert response.status_code == 200 and response.json()["id"] == 5
    assert calls == [5]
    assert waited < 5  # it did not wait for the dead holder's lock to expire


def test_stale_while_revalidate_runs_one_refresh_at_a_time(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    runs: list[int] = []
    release = asyncio.Event()  # the refresh is held until every stale request is answered
    answered_before_refresh = [0]

    @app.get("/slow")
    @cache(expire=1, store=store, stale_while_revalidate=30)
    async def slow() -> dict[str, int]:
        runs.append(1)
        if len(runs) > 1:
            await asyncio.wait_for(release.wait(), timeout=10)
        return {"n": len(runs)}

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        async with store:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await client.get("/slow")
                await asyncio.sleep(1.1)
                requests = [asyncio.ensure_future(client.get("/slow")) for _ in range(20)]
                # The request that started the refresh runs it as its background task, so
                # the transport holds it until the refresh ends; the other 19 must not wait.
                for _ in range(1000):  # bounded: at most 10 s
                    if sum(r.done() for r in requests) >= 19:
                        break
                    await asyncio.sleep(0.01)
                answered_before_refresh[0] = sum(r.done() for r in requests)
                release.set()
                stale = list(await asyncio.gather(*requests))
                for _ in range(200):  # bounded: the refresh stores its entry
                    fresh = await client.get("/slow")
                    if fresh.json() == {"n": 2}:
                        break
                    await asyncio.sleep(0.01)
                return stale, fresh

    responses, fresh = anyio.run(scenario)
    assert answered_before_refresh[0] == 19  # none waited for the refresh...
    assert all(r.json() == {"n": 1} for r in responses)  # ...and all got the stale entry
    assert fresh.json() == {"n": 2} and fresh.headers["x-fastapi-cache"] == "Hit"
    assert len(runs) == 2  # one background refresh for twenty stale serves


def test_stale_if_error_serves_stale_on_5xx_and_exceptions_only(make_store: MakeStore) -> None:
    store = make_store()
    app, state = stale_app(store, stale_if_error=30)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/data").json() == {"version": 1}
        time.sleep(1.1)
        for failure in ("raise", "503"):
            state["fail"] = failure
            response = client.get("/data")
            assert response.status_code == 200 and response.json() == {"version": 1}
            assert "stale-if-error=30" in response.headers["cache-control"]
        state["fail"] = "404"
        assert client.get("/data").status_code == 404  # an answer, not an error
        state["fail"], state["version"] = None, 3
        assert client.get("/data").json() == {"version": 3}
    assert store.stats()["stale"] == 2


def test_without_stale_options_an_expired_entry_is_a_miss(make_store: MakeStore) -> None:
    store = make_store()
    app, state = stale_app(store)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.get("/data")
        time.sleep(1.1)
        state["fail"] = "raise"
        assert client.get("/data").status_code == 500


def test_stats_count_what_happened(make_store: MakeStore) -> None:
    store = make_store()
    app, _ = item_app(store, named=True)
    with TestClient(app) as client:
        client.get("/item/1")
        client.get("/item/1")
        tag = client.get("/item/1").headers["etag"]
        client.get("/item/1", headers={"If-None-Match": tag})
        client.get("/item/1", headers={"Cache-Control": "no-cache"})
    stats = store.stats()
    assert stats["misses"] == 1 and stats["hits"] == 3 and stats["bypasses"] == 1
    assert stats["bytes_written"] > 0 and stats["bytes_read"] >= 2 * stats["bytes_written"]
    assert stats["errors"] == 0


def test_early_recompute_must_be_a_non_negative_number() -> None:
    with pytest.raises(ConfigError):
        cache(expire=60, early_recompute=-1)(lambda: None)

"""fill.py: a miss. What is stored and what never is (expire=0, errors, non-2xx, cookies,
`Cache-Control: private`, streams), the 304 a miss may answer, one endpoint run for all
concurrent misses of a key (single flight; across workers with lock_timeout), the stale copy
served when the endpoint fails (RFC 5861 stale-if-error), and one background refresh at a
time. On memory, Redis and Redis Cluster (parametrized through make_store)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.testclient import TestClient

from oxcache import Cache, cache
from oxcache.backends.memory import MemoryBackend
from oxcache.entries import Entries
from tests.apps import MakeStore, client_for, item_app, stale_app

# -- what is stored, and what never is ---------------------------------------------------------


def test_expire_zero_means_do_not_store(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    calls = []

    @app.get("/z")
    @cache(expire=0, store=store)
    async def z() -> int:
        calls.append(1)
        return 1

    with client_for(app, store) as client:
        for _ in range(2):
            response = client.get("/z")
            assert response.status_code == 200
            assert "cache-control" not in response.headers
            assert "x-fastapi-cache" not in response.headers
    assert len(calls) == 2


def test_exceptions_non_2xx_and_cookies_are_not_cached(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    calls: dict[str, int] = {}

    def count(name: str) -> None:
        calls[name] = calls.get(name, 0) + 1

    @app.get("/raises")
    @cache(store=store)
    async def raises() -> None:
        count("raises")
        raise HTTPException(status_code=404, detail="nope")

    @app.get("/notfound")
    @cache(store=store)
    async def notfound() -> JSONResponse:
        count("notfound")
        return JSONResponse({"error": "missing"}, status_code=404)

    @app.get("/cookie")
    @cache(store=store)
    async def cookie(response: Response) -> dict[str, int]:
        count("cookie")
        response.set_cookie("session", "abc")
        return {"n": 1}

    @app.get("/private")
    @cache(store=store)
    async def private() -> JSONResponse:
        count("private")
        return JSONResponse({"n": 1}, headers={"Cache-Control": "private"})

    with client_for(app, store) as client:
        for _ in range(2):
            assert client.get("/raises").status_code == 404
            response = client.get("/notfound")
            assert response.status_code == 404 and response.json() == {"error": "missing"}
            assert client.get("/cookie").headers["set-cookie"].startswith("session=abc")
            assert client.get("/private").status_code == 200
    assert calls == {"raises": 2, "notfound": 2, "cookie": 2, "private": 2}


def test_json_response_404_is_never_replayed_as_200(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    runs: list[int] = []

    @app.get("/missing")
    @cache(expire=60, store=store)
    async def missing() -> JSONResponse:
        runs.append(1)
        return JSONResponse({"detail": "nope"}, status_code=404)

    with client_for(app, store) as client:
        responses = [client.get("/missing") for _ in range(3)]
    assert [r.status_code for r in responses] == [404, 404, 404]
    assert all(r.json() == {"detail": "nope"} for r in responses)
    assert len(runs) == 3


def test_streaming_and_file_responses_are_never_cached_and_say_so_once(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    store = make_store()
    app = FastAPI()
    path = tmp_path / "f.txt"
    path.write_text("file body")

    @app.get("/stream")
    @cache(expire=60, store=store)
    async def stream() -> StreamingResponse:
        return StreamingResponse(iter([b"a", b"b"]), media_type="text/plain")

    @app.get("/file")
    @cache(expire=60, store=store)
    async def file() -> FileResponse:
        return FileResponse(path)

    with caplog.at_level(logging.WARNING, "oxcache"), client_for(app, store) as client:
        for _ in range(3):
            assert client.get("/stream").content == b"ab"
            response = client.get("/file")
            assert response.content == b"file body"
            assert "x-fastapi-cache" not in response.headers
    messages = [r.getMessage() for r in caplog.records if "never cached" in r.getMessage()]
    assert len(messages) == 2  # once per endpoint


def test_unserializable_body_fails_like_the_uncached_route_and_logs(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/bad")
    @cache(store=store)
    async def bad() -> Any:
        return {"x": object()}

    @app.get("/bad-plain")
    async def bad_plain() -> Any:
        return {"x": object()}

    caplog.set_level(logging.INFO, logger="oxcache")
    with client_for(app, store) as client:
        with pytest.raises(Exception) as cached_error:
            client.get("/bad")
        with pytest.raises(Exception) as plain_error:
            client.get("/bad-plain")
    assert type(cached_error.value) is type(plain_error.value)
    assert "FAILED_TO_CACHE_KEY" in caplog.text


def test_if_none_match_on_a_miss_gives_304(make_store: MakeStore) -> None:
    """A client may hold a tag from another worker's entry (the seed ignored it on misses)."""
    store = make_store()
    app, _ = item_app(store)
    with client_for(app, store) as client:
        tag = client.get("/item/1").headers["etag"]
    other = make_store(prefix=store.prefix + "-other")
    app2, _ = item_app(other)
    with client_for(app2, other) as client:
        response = client.get("/item/1", headers={"If-None-Match": tag})
    assert response.status_code == 304
    assert response.headers["x-fastapi-cache"] == "Miss"


# -- single flight: one run for concurrent misses, in a process and across workers -------------


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


def test_a_run_that_lands_while_a_miss_takes_its_lease_is_not_run_again(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Request B misses while A's run is in progress, and A stores its entry and ends while
    B is still taking its lease (a wide window on a loaded machine): B answers with A's
    entry instead of running the endpoint a second time."""
    store = make_store()
    runs: list[int] = []
    hold = asyncio.Event()
    app = FastAPI()

    @app.get("/once")
    @cache(expire=60, store=store)
    async def once() -> dict[str, int]:
        runs.append(1)
        await hold.wait()
        return {"value": len(runs)}

    gate = asyncio.Event()
    gated: list[str] = []
    lease = Entries.lease

    async def held_lease(self: Entries, key: str, *args: Any) -> Any:
        found = await lease(self, key, *args)
        if runs:  # B's lease (A's was taken before its run began)
            gated.append(key)
            await gate.wait()
        return found

    monkeypatch.setattr(Entries, "lease", held_lease)

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with store:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                a = asyncio.ensure_future(client.get("/once"))
                for _ in range(1000):
                    if runs:
                        break
                    await asyncio.sleep(0.005)
                b = asyncio.ensure_future(client.get("/once"))
                for _ in range(1000):
                    if gated:
                        break
                    await asyncio.sleep(0.005)
                assert gated, "B never took its lease"
                hold.set()
                first = await a  # A stored its entry and ended its run
                gate.set()
                return first, await b

    first, second = anyio.run(scenario)
    assert first.json() == second.json() == {"value": 1}
    assert runs == [1]
    assert second.headers["x-fastapi-cache"] == "Hit"


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

    async def set(
        self, key: str, value: bytes, ttl_ms: int, indexes: Any = (), expect: Any = None
    ) -> bool:
        done = await super().set(key, value, ttl_ms, indexes, expect)
        self.stored.set()
        return done


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


# -- stale-if-error and background refreshes ---------------------------------------------------


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

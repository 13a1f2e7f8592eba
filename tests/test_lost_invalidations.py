"""An invalidation Redis did not take (paused for writes, stopped, down) is queued and
retried in the background until it lands, whether or not the worker that made it serves
requests; the caller can tell (`Invalidated.landed`, `wait_invalidations`); the worker
serves nothing from the cache meanwhile, and other workers get fresh data as soon as it
lands."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI

from oxcache import Cache, Invalidated, cache
from tests.conftest import RedisServer


class Site:
    """One worker: a store and a tagged endpoint over shared data."""

    def __init__(self, url: str, data: dict[str, int], timeout: float) -> None:
        self.store = Cache(url, prefix="lost", timeout=timeout, retry_after=0.05)
        app = FastAPI()

        @app.get("/v")
        @cache(expire=600, store=self.store, tags=["things"])
        async def things() -> dict[str, int]:
            return {"v": data["v"]}

        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    async def get(self) -> tuple[int, str]:
        response = await self.http.get("/v")
        return response.json()["v"], response.headers["x-fastapi-cache"]


async def two_workers(
    url: str, scenario: Callable[[Site, Site, dict[str, int]], Awaitable[Any]]
) -> Any:
    data = {"v": 1}
    # A invalidates with a short timeout; B only reads, with a patient one.
    a, b = Site(url, data, timeout=0.2), Site(url, data, timeout=2.0)
    async with a.store, b.store, a.http, b.http:
        assert await b.get() == (1, "Miss")
        assert await b.get() == (1, "Hit")
        return await scenario(a, b, data)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))  # type: ignore[arg-type]


def test_an_invalidation_redis_paused_for_writes_lands_without_any_request(
    own_redis: RedisServer,
) -> None:
    raw = redis.Redis(port=own_redis.port)

    async def scenario(a: Site, b: Site, data: dict[str, int]) -> list[Any]:
        raw.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
        data["v"] = 2
        result = await a.store.invalidate_tag("things")  # times out: queued
        queued = (isinstance(result, Invalidated), result, result.landed)
        pending = a.store.stats()["pending_invalidations"]
        # Worker A serves no request from now on: the retry runs on its own.
        landed = await a.store.wait_invalidations(timeout=30)
        return [queued, pending, landed, a.store.stats()["pending_invalidations"], await b.get()]

    try:
        assert run(two_workers(own_redis.url, scenario)) == [
            (True, 0, False),
            1,
            True,
            0,
            (2, "Miss"),
        ]
    finally:
        raw.execute_command("CLIENT", "UNPAUSE")
        raw.close()


def test_an_invalidation_a_stopped_redis_missed_lands_once_it_answers(
    own_redis: RedisServer,
) -> None:
    assert own_redis.proc is not None
    pid = own_redis.proc.pid

    async def scenario(a: Site, b: Site, data: dict[str, int]) -> list[Any]:
        os.kill(pid, signal.SIGSTOP)
        try:
            data["v"] = 2
            result = await a.store.invalidate_tag("things")
            # Meanwhile the worker that invalidated serves nothing from the cache.
            during = await a.get()
            assert not await a.store.wait_invalidations(timeout=0.3)
        finally:
            os.kill(pid, signal.SIGCONT)
        landed = await a.store.wait_invalidations(timeout=30)
        return [result.landed, during, landed, await b.get()]

    assert run(two_workers(own_redis.url, scenario)) == [False, (2, "Miss"), True, (2, "Miss")]


def test_an_invalidation_that_landed_says_so() -> None:
    async def scenario() -> list[Any]:
        store = Cache()
        async with store:
            result = await store.invalidate_tag("nothing")
            return [type(result), result, result.landed, await store.wait_invalidations(0)]

    assert run(scenario()) == [Invalidated, 0, True, True]


def test_a_queued_invalidation_is_retried_until_redis_answers_even_if_it_stays_down() -> None:
    """A Redis that never comes back: the retry keeps going (bounded here by the test),
    `wait_invalidations` says it has not landed, and closing the store stops the retry."""

    async def scenario() -> list[Any]:
        store = Cache("redis://127.0.0.1:9/0", timeout=0.05, retry_after=0.01)
        async with store:
            result = await store.invalidate_tag("t")
            landed = await store.wait_invalidations(timeout=0.5)
            return [result.landed, landed, store.stats()["pending_invalidations"]]

    assert run(scenario()) == [False, False, 1]


@pytest.mark.parametrize("how", ["tag", "clear"])
def test_the_worker_that_queued_an_invalidation_serves_fresh_data_meanwhile(
    own_redis: RedisServer, how: str
) -> None:
    raw = redis.Redis(port=own_redis.port)

    async def scenario(a: Site, b: Site, data: dict[str, int]) -> list[Any]:
        assert await a.get() == (1, "Hit")
        raw.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
        data["v"] = 2
        result = await (a.store.invalidate_tag("things") if how == "tag" else a.store.clear())
        during = await a.get()
        await a.store.wait_invalidations(timeout=30)
        return [result.landed, during[0], await a.get(), await a.get()]

    try:
        assert run(two_workers(own_redis.url, scenario)) == [False, 2, (2, "Miss"), (2, "Hit")]
    finally:
        raw.execute_command("CLIENT", "UNPAUSE")
        raw.close()

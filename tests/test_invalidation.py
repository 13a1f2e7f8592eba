"""The stale-set race (memcache's leases, NSDI 2013): after `invalidate*()` returns, no
request that starts later gets data read before the call. A miss in flight may answer the
requests that waited for it, but never stores its result; a request that starts later
never joins it; and the same across workers, with or without the cross-worker lock. Each
test holds the first run of the endpoint on an event, so every interleaving is exact."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi import Depends, FastAPI, Header

from oxcache import Cache, NearCache, cache, cached
from oxcache.flight import Flights
from tests.conftest import sync_client


def user_id(x_user: str = Header(default="alice")) -> str:
    return x_user


class Data:
    """The application's data (a version), and an endpoint run that can be held: the
    first run reads the version, then waits for `release` before it answers."""

    def __init__(self) -> None:
        self.version = 1
        self.runs = 0
        self.held = asyncio.Event()  # set once the held run has read its data
        self.release = asyncio.Event()

    async def read(self) -> int:
        self.runs += 1
        version = self.version
        if self.runs == 1:
            self.held.set()
            await self.release.wait()
        return version


KINDS = ["plain", "per_user", "tagged"]


def make_app(store: Cache, data: Data, kind: str) -> tuple[FastAPI, Any]:
    app = FastAPI()
    if kind == "plain":

        @app.get("/v")
        @cache(expire=60, store=store)
        async def plain() -> dict[str, int]:
            return {"v": await data.read()}

        return app, plain
    if kind == "per_user":

        @app.get("/v")
        @cache(expire=60, store=store, per_user=user_id)
        async def mine(user: str = Depends(user_id)) -> dict[str, int]:
            return {"v": await data.read()}

        return app, mine

    @app.get("/v")
    @cache(expire=60, store=store, tags=["things"])
    async def tagged() -> dict[str, int]:
        return {"v": await data.read()}

    return app, tagged


def invalidation(kind: str, how: str, store: Cache, endpoint: Any) -> Awaitable[Any]:
    if how == "endpoint":
        return store.invalidate(endpoint)
    if how == "clear":
        return store.clear()
    if how == "delete":
        return store.delete([store.key_for(endpoint, "http://t")])
    if kind == "per_user":
        return store.invalidate_user("alice")
    return store.invalidate_tag("things")


def hows(kind: str) -> list[str]:
    own = {"per_user": ["user"], "tagged": ["tag"], "plain": ["delete"]}[kind]
    return ["endpoint", "clear", *own]


CASES = [(kind, how) for kind in KINDS for how in hows(kind)]


@pytest.fixture(params=["memory", "redis", "cluster", "near"])
def store_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Cache]]:
    """Stores on one backend, sharing one prefix: several of them stand for workers."""
    kind = str(request.param)
    prefix = "race-" + uuid.uuid4().hex[:10]
    url = (
        None
        if kind == "memory"
        else request.getfixturevalue("cluster_url" if kind == "cluster" else "redis_url")
    )
    shared: dict[str, Any] = {}

    def make(**options: Any) -> Cache:
        if url is None:
            # One memory backend shared by the "workers": the same process, two stores.
            if "backend" not in shared:
                shared["backend"] = Cache().backend
            return Cache(backend=shared["backend"], prefix=prefix, **options)
        if kind == "near":
            options.setdefault("near", NearCache())
        return Cache(url, prefix=prefix, timeout=2.0, **options)

    yield make
    if url is not None:
        client = sync_client(url)
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
        client.close()


async def started(stores: list[Cache]) -> None:
    for store in stores:
        await store.__aenter__()
        if store.near is not None:
            assert await store.near.wait_ready(10.0)


async def stopped(stores: list[Cache]) -> None:
    for store in stores:
        await store.__aexit__(None, None, None)


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.mark.parametrize(("kind", "how"), CASES)
def test_a_miss_in_flight_never_stores_what_it_read_before_an_invalidation(
    store_factory: Callable[..., Cache], kind: str, how: str
) -> None:
    store = store_factory()
    data = Data()
    app, endpoint = make_app(store, data, kind)

    async def scenario() -> list[Any]:
        await started([store])
        try:
            async with client(app) as http:
                first = asyncio.ensure_future(http.get("/v"))
                await data.held.wait()  # the miss has read version 1
                data.version = 2
                await invalidation(kind, how, store, endpoint)
                data.release.set()  # ...and now tries to store it
                answers = [(await first).json()]
                for _ in range(2):
                    answers.append((await http.get("/v")).json())
                return answers
        finally:
            await stopped([store])

    assert run(scenario) == [{"v": 1}, {"v": 2}, {"v": 2}]
    assert data.runs == 2  # the second request ran, the third was a hit


@pytest.mark.parametrize(("kind", "how"), CASES)
def test_a_request_after_an_invalidation_never_joins_an_older_miss(
    store_factory: Callable[..., Cache], kind: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_factory()
    data = Data()
    app, endpoint = make_app(store, data, kind)
    joins: list[asyncio.Future[Any]] = []
    running = Flights.running

    def spied(self: Flights, key: str, basis: Any = None) -> asyncio.Future[Any] | None:
        found = running(self, key, basis)
        if found is not None:
            joins.append(found)
        return found

    monkeypatch.setattr(Flights, "running", spied)

    async def scenario() -> tuple[Any, Any, Any, Any]:
        await started([store])
        try:
            async with client(app) as http:
                first = asyncio.ensure_future(http.get("/v"))
                await data.held.wait()
                joined = asyncio.ensure_future(http.get("/v"))  # before: shares the run
                for _ in range(1000):  # until it waits for the held run (at most 10 s)
                    if joins:
                        break
                    await asyncio.sleep(0.01)
                assert joins, "the second request never joined the held run"
                data.version = 2
                await invalidation(kind, how, store, endpoint)
                # After: must not wait for the held run (which waits for us).
                later = await asyncio.wait_for(http.get("/v"), 5)
                data.release.set()
                return (await first).json(), (await joined).json(), later.json(), data.runs
        finally:
            await stopped([store])

    first, joined, later, runs = run(scenario)
    assert later == {"v": 2}
    assert first == {"v": 1} and joined == {"v": 1}  # the held run answers its own waiters
    assert runs == 2


@pytest.mark.parametrize("lock", [0.0, 5.0], ids=["no-lock", "lock_timeout"])
def test_across_workers_nothing_read_before_an_invalidation_comes_back(
    store_factory: Callable[..., Cache], lock: float
) -> None:
    """Worker A's miss reads version 1 and is held; worker B invalidates; then B's and A's
    later requests get version 2: A's run never stores, and B never waits for it (with
    `lock_timeout`, B does not wait for A's entry behind A's lock)."""
    a, b = store_factory(lock_timeout=lock), store_factory(lock_timeout=lock)
    data = Data()
    app_a, endpoint = make_app(a, data, "tagged")
    app_b, _ = make_app(b, data, "tagged")

    async def scenario() -> list[Any]:
        await started([a, b])
        try:
            async with client(app_a) as http_a, client(app_b) as http_b:
                held = asyncio.ensure_future(http_a.get("/v"))
                await data.held.wait()
                data.version = 2
                await b.invalidate(endpoint)
                later_b = (await asyncio.wait_for(http_b.get("/v"), 3)).json()
                data.release.set()
                answers = [(await held).json(), later_b]
                answers.append((await http_a.get("/v")).json())
                answers.append((await http_b.get("/v")).json())
                return answers
        finally:
            await stopped([a, b])

    assert run(scenario) == [{"v": 1}, {"v": 2}, {"v": 2}, {"v": 2}]


def test_a_cached_function_in_flight_never_stores_what_it_read_before_an_invalidation(
    store_factory: Callable[..., Cache],
) -> None:
    store = store_factory()
    data = Data()

    @cached(60, store=store, tags=["data"])
    async def load(id: int) -> int:
        return await data.read()

    async def scenario() -> list[int]:
        await started([store])
        try:
            first = asyncio.ensure_future(load(1))
            await data.held.wait()
            data.version = 2
            await store.invalidate_tag("data")
            data.release.set()
            return [await first, await load(1), await load(1)]
        finally:
            await stopped([store])

    assert run(scenario) == [1, 2, 2]
    assert data.runs == 2


def test_a_lease_under_the_key_is_a_miss_never_an_error(redis_url: str) -> None:
    """What a miss in progress leaves under the key reads as a miss everywhere (another
    worker, a conditional request), and is replaced by the entry."""
    store = Cache(redis_url, prefix="lease-" + uuid.uuid4().hex[:8], timeout=2.0)
    data = Data()
    app, endpoint = make_app(store, data, "plain")
    raw = redis.Redis.from_url(redis_url)

    async def scenario() -> list[Any]:
        await started([store])
        try:
            async with client(app) as http:
                first = asyncio.ensure_future(http.get("/v"))
                await data.held.wait()
                leased = raw.get(store.key_for(endpoint, "http://t"))
                assert leased is not None and leased.startswith(b"OXL\x01")
                other = asyncio.ensure_future(http.get("/v", headers={"if-none-match": '"x"'}))
                await asyncio.sleep(0.05)
                data.release.set()
                answers = [(await other).status_code, (await first).json(), data.runs]
                answers.append((await http.get("/v")).headers["x-fastapi-cache"])
                return answers
        finally:
            await stopped([store])
            for key in raw.scan_iter(match=f"{store.prefix}:*"):
                raw.delete(key)
            raw.close()

    # The other request came after the lease and shared the run (same lease, nothing
    # invalidated); the entry replaced the lease.
    assert run(scenario) == [200, {"v": 1}, 1, "Hit"]

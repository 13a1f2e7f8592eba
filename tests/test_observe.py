"""Observers (`oxcache.observe`): every request of a cached endpoint is reported once, with
its outcome, reason and duration, on the memory store and Redis, through `APIRoute` and
`CachedRoute`; storage failures are reported per store; an observer that fails never fails
a request; and a store nobody observes never enters the observing path."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

import oxcache.observe
from oxcache import Cache, CachedRoute, cache
from oxcache.observe import CacheEvent, Observer, Observers, active
from tests.apps import stale_app
from tests.conftest import free_port

MakeStore = Callable[..., Cache]
ROUTES = pytest.mark.parametrize(
    "route_class", [None, CachedRoute], ids=["APIRoute", "CachedRoute"]
)
BACKENDS = pytest.mark.parametrize("backend_kind", ["memory", "redis"])
HERE = __name__  # the module part of the endpoints' names


class Recorder(Observer):
    """Keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[CacheEvent] = []
        self.storage_errors: list[tuple[str, BaseException]] = []

    def request(self, event: CacheEvent) -> None:
        self.events.append(event)

    def storage_error(self, store: str, error: BaseException) -> None:
        self.storage_errors.append((store, error))

    def seen(self) -> list[tuple[str, str, str | None]]:
        return [(e.endpoint.rpartition(".")[2], e.outcome, e.reason) for e in self.events]


class Opaque:
    """An argument with no stable key (its `str()` is a memory address)."""


def opaque() -> Opaque:
    return Opaque()


def user_object() -> object:
    return object()  # not a str, int or UUID: the per-user endpoint cannot key it


def outcome_app(store: Cache, route_class: Any = None) -> FastAPI:
    app = FastAPI(lifespan=store.lifespan)
    if route_class is not None:
        app.router.route_class = route_class

    @app.get("/items/{id}")
    @cache(expire=60, store=store)
    async def item(id: int) -> dict[str, int]:
        await asyncio.sleep(0.01)
        return {"id": id}

    @app.get("/teapot")
    @cache(expire=60, store=store)
    async def teapot() -> JSONResponse:
        return JSONResponse({"short": "stout"}, status_code=418)

    @app.get("/private")
    @cache(expire=60, store=store)
    async def own_no_store() -> JSONResponse:
        return JSONResponse({"n": 3}, headers={"Cache-Control": "no-store"})

    @app.get("/never")
    @cache(expire=0, store=store)
    async def never() -> dict[str, int]:
        return {"n": 4}

    @app.get("/missing")
    @cache(expire=60, store=store)
    async def missing() -> dict[str, int]:
        raise HTTPException(status_code=404)

    @app.get("/broken")
    @cache(expire=60, store=store)
    async def broken() -> dict[str, int]:
        raise RuntimeError("database down")

    @app.get("/opaque")
    @cache(expire=60, store=store)
    async def unkeyable(thing: Opaque = Depends(opaque)) -> dict[str, int]:
        return {"n": 1}

    @app.get("/mine")
    @cache(expire=60, store=store, per_user=user_object)
    async def mine() -> dict[str, int]:
        return {"n": 2}

    return app


@BACKENDS
@ROUTES
def test_each_request_is_reported_once_with_its_outcome_and_reason(
    make_store: MakeStore, route_class: Any
) -> None:
    recorder = Recorder()
    store = make_store(observers=[recorder])
    app = outcome_app(store, route_class)
    with TestClient(app, raise_server_exceptions=False) as client:
        etag = client.get("/items/1").headers["etag"]
        client.get("/items/1")
        assert client.get("/items/1", headers={"If-None-Match": etag}).status_code == 304
        client.get("/items/1", headers={"Cache-Control": "no-cache"})
        client.get("/items/1", headers={"Cache-Control": "no-store"})
        client.get("/items/1", headers={"Authorization": "Bearer x"})
        assert client.get("/teapot").status_code == 418
        client.get("/private")
        client.get("/never")
        assert client.get("/missing").status_code == 404
        assert client.get("/broken").status_code == 500
        client.get("/opaque")
        client.get("/mine")
        client.get("/items/2")
    assert recorder.seen() == [
        ("item", "miss", None),
        ("item", "hit", None),
        ("item", "hit", "not-modified"),
        ("item", "bypass", "no-cache"),
        ("item", "bypass", "no-store"),
        ("item", "bypass", "credentials"),
        ("teapot", "miss", "status"),
        ("own_no_store", "miss", "no-store"),
        ("never", "bypass", "expire"),
        ("missing", "miss", "status"),
        ("broken", "error", "RuntimeError"),
        ("unkeyable", "bypass", "key"),
        ("mine", "bypass", "user"),
        ("item", "miss", None),
    ]
    assert {e.endpoint for e in recorder.events} >= {f"{HERE}.item", f"{HERE}.teapot"}
    # The miss ran the endpoint, which sleeps 10 ms: a lower bound, never a flaky one.
    assert recorder.events[0].seconds >= 0.01
    assert all(e.seconds >= 0 for e in recorder.events)
    assert recorder.storage_errors == []
    stats = store.stats()
    assert stats["hits"] == 2 and stats["bypasses"] == 6


@BACKENDS
def test_stale_while_revalidate_is_reported_as_stale_and_its_refresh_not_at_all(
    make_store: MakeStore,
) -> None:
    recorder = Recorder()
    store = make_store(observers=[recorder])
    app, state = stale_app(store, stale_while_revalidate=30)
    with TestClient(app) as client:
        client.get("/data")
        time.sleep(1.1)  # the entry (fresh for 1 s) is stale now
        assert client.get("/data").json() == {"version": 1}  # served stale, refreshed after
        client.get("/data")
    assert state["runs"] == 2  # the refresh ran, in the background
    assert recorder.seen() == [
        ("data", "miss", None),
        ("data", "stale", "stale-while-revalidate"),
        ("data", "hit", None),
    ]


@BACKENDS
def test_stale_if_error_is_reported_as_stale_not_as_an_error(make_store: MakeStore) -> None:
    recorder = Recorder()
    store = make_store(observers=[recorder])
    app, state = stale_app(store, stale_if_error=30)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.get("/data")
        time.sleep(1.1)
        state["fail"] = "raise"
        assert client.get("/data").json() == {"version": 1}
        state["fail"] = "503"
        assert client.get("/data").json() == {"version": 1}
    assert recorder.seen()[1:] == [
        ("data", "stale", "stale-if-error"),
        ("data", "stale", "stale-if-error"),
    ]


def test_requests_that_wait_for_a_concurrent_miss_are_coalesced_hits() -> None:
    recorder = Recorder()
    store = Cache(observers=[recorder])
    app = FastAPI()
    release = asyncio.Event()

    @app.get("/cold")
    @cache(expire=60, store=store)
    async def cold() -> dict[str, int]:
        await release.wait()
        return {"value": 42}

    async def scenario() -> None:
        async with store:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                requests = [asyncio.ensure_future(client.get("/cold")) for _ in range(5)]
                for _ in range(500):  # until the first request runs the endpoint
                    await asyncio.sleep(0.01)
                    if store.counters.misses == 1:
                        break
                await asyncio.sleep(0.05)  # the others join its run meanwhile
                release.set()
                await asyncio.gather(*requests)

    anyio.run(scenario)
    outcomes = sorted((e.outcome, e.reason) for e in recorder.events)
    assert outcomes.count(("miss", None)) == 1
    assert len(outcomes) == 5
    assert set(outcomes) <= {("miss", None), ("hit", "coalesced"), ("hit", None)}
    assert ("hit", "coalesced") in outcomes


def test_storage_failures_are_reported_per_store_and_the_requests_still_served() -> None:
    recorder = Recorder()
    store = Cache(f"redis://127.0.0.1:{free_port()}/0", observers=[recorder], retry_after=0)
    app = outcome_app(store)
    with TestClient(app) as client:
        assert [client.get("/items/3").json() for _ in range(2)] == [{"id": 3}] * 2
    assert recorder.storage_errors, "a dead Redis must be reported"
    names = {name for name, _ in recorder.storage_errors}
    assert names == {store.health.name} and "Redis at redis://127.0.0.1" in store.health.name
    assert all(isinstance(error, Exception) for _, error in recorder.storage_errors)
    # Reads that fail are misses, and so are the requests.
    assert [e.outcome for e in recorder.events] == ["miss", "miss"]


def test_an_observer_that_raises_is_logged_once_and_never_fails_a_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Observer):
        def request(self, event: CacheEvent) -> None:
            raise ValueError("metrics backend down")

    recorder = Recorder()
    store = Cache(observers=[Broken(), recorder])
    app = outcome_app(store)
    with caplog.at_level(logging.WARNING, "oxcache"), TestClient(app) as client:
        assert [client.get("/items/4").status_code for _ in range(3)] == [200] * 3
    assert [e.outcome for e in recorder.events] == ["miss", "hit", "hit"]
    failures = [r for r in caplog.records if "observer" in r.getMessage()]
    assert len(failures) == 1 and "metrics backend down" in failures[0].getMessage()


def test_observers_can_be_added_and_removed_while_the_store_serves() -> None:
    store = Cache()
    app = outcome_app(store)
    recorder = Recorder()
    with TestClient(app) as client:
        client.get("/items/5")
        store.observers.append(recorder)
        client.get("/items/5")
        store.observers.remove(recorder)
        client.get("/items/5")
    assert recorder.seen() == [("item", "hit", None)]


def test_observers_is_a_list_that_starts_empty() -> None:
    store = Cache()
    assert isinstance(store.observers, Observers) and list(store.observers) == []
    assert not store.observers


@ROUTES
def test_a_store_nobody_observes_never_enters_the_observing_path(
    route_class: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hit path's only cost of observers is one truth test: nothing is timed, no
    context variable set, no event made."""

    async def forbidden(*args: Any) -> Any:
        raise AssertionError("observe.run() called for a store without observers")

    monkeypatch.setattr(oxcache.observe, "run", forbidden)
    store = Cache()
    app = outcome_app(store, route_class)
    with TestClient(app) as client:
        assert [client.get("/items/6").headers["x-fastapi-cache"] for _ in range(3)] == [
            "Miss",
            "Hit",
            "Hit",
        ]
    assert not active()


def test_a_disabled_store_reports_nothing() -> None:
    recorder = Recorder()
    store = Cache(observers=[recorder], enabled=False)
    with TestClient(outcome_app(store)) as client:
        client.get("/items/7")
    assert recorder.events == []


def test_the_observability_pages_own_counter_counts_as_it_says() -> None:
    """docs/observability.md's `OutcomeCounter`, run as written."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "observability.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "# observers.py" in b)
    module = types.ModuleType("observers")
    exec(compile(code, "docs/observability.md", "exec"), module.__dict__)
    store, counter = module.store, module.counter
    with TestClient(outcome_app(store)) as client:
        for _ in range(3):
            client.get("/items/8")
    assert counter.requests == {(f"{HERE}.item", "miss"): 1, (f"{HERE}.item", "hit"): 2}
    assert not counter.failures


@ROUTES
def test_a_request_a_guard_refuses_is_not_reported(route_class: Any) -> None:
    """A route dependency's 401 is FastAPI's answer, before the cache takes part (with
    `CachedRoute` the guard runs inside its early answer)."""

    def guard(x_key: str | None = Header(default=None)) -> None:
        if x_key != "ok":
            raise HTTPException(status_code=401)

    recorder = Recorder()
    store = Cache(observers=[recorder])
    app = FastAPI(lifespan=store.lifespan)
    if route_class is not None:
        app.router.route_class = route_class

    @app.get("/guarded", dependencies=[Depends(guard)])
    @cache(expire=60, store=store)
    async def guarded() -> dict[str, int]:
        return {"n": 1}

    with TestClient(app) as client:
        assert client.get("/guarded").status_code == 401
        assert client.get("/guarded", headers={"X-Key": "ok"}).status_code == 200
        assert client.get("/guarded").status_code == 401
        assert client.get("/guarded", headers={"X-Key": "ok"}).status_code == 200
    assert recorder.seen() == [("guarded", "miss", None), ("guarded", "hit", None)]

"""The off switch: `Cache(enabled=False)` and `with store.disabled():` make endpoints and
`@cached` functions run on every call as if undecorated, while invalidations still delete."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from oxcache import Cache, CachedRoute, cache, cached
from tests.conftest import free_port

MakeStore = Callable[..., Cache]


def counting_app(store: Cache, route_class: Any = None) -> tuple[FastAPI, list[int], Any]:
    app = FastAPI(lifespan=store.lifespan)
    if route_class is not None:
        app.router.route_class = route_class
    runs: list[int] = []

    @app.get("/items/{id}")
    @cache(expire=60, store=store, tags=["items"])
    async def item(id: int) -> dict[str, int]:
        runs.append(id)
        return {"id": id, "run": len(runs)}

    return app, runs, item


@pytest.mark.parametrize("route_class", [None, CachedRoute], ids=["route", "CachedRoute"])
def test_a_store_made_disabled_runs_every_request_and_stores_nothing(
    route_class: Any,
) -> None:
    store = Cache(enabled=False)
    app, runs, _ = counting_app(store, route_class)
    with TestClient(app) as client:
        responses = [client.get("/items/1") for _ in range(3)]
    assert [r.json()["run"] for r in responses] == [1, 2, 3]
    assert all("x-fastapi-cache" not in r.headers and "etag" not in r.headers for r in responses)
    assert runs == [1, 1, 1]
    assert all(value == 0 for value in store.stats().values())
    assert len(store.backend) == 0  # type: ignore[arg-type]


def test_a_disabled_redis_store_never_touches_redis(caplog: pytest.LogCaptureFixture) -> None:
    """Development without Redis: no CONNECT_FAIL, no error, every request served."""
    store = Cache(f"redis://127.0.0.1:{free_port()}/0", enabled=False)
    app, runs, _ = counting_app(store)
    with caplog.at_level(logging.INFO, "oxcache"), TestClient(app) as client:
        assert [client.get("/items/2").status_code for _ in range(2)] == [200, 200]
    assert runs == [2, 2]
    messages = [r.getMessage() for r in caplog.records if r.name == "oxcache"]
    assert not any("CONNECT" in m for m in messages), messages
    assert any(m.startswith("CACHE_DISABLED") for m in messages)
    assert store.stats()["errors"] == 0


@pytest.mark.parametrize("route_class", [None, CachedRoute], ids=["route", "CachedRoute"])
def test_disabled_block_runs_uncached_and_caching_resumes_after_it(
    make_store: MakeStore, route_class: Any
) -> None:
    store = make_store()
    app, runs, _ = counting_app(store, route_class)
    with TestClient(app) as client:
        assert client.get("/items/1").headers["x-fastapi-cache"] == "Miss"
        assert client.get("/items/1").headers["x-fastapi-cache"] == "Hit"
        with store.disabled():
            inside = [client.get("/items/1") for _ in range(2)]
            with store.disabled():  # nested: still off, and back to off after
                pass
            assert store.enabled is False
        after = client.get("/items/1")
    assert [r.json()["run"] for r in inside] == [2, 3]
    assert all("x-fastapi-cache" not in r.headers for r in inside)
    assert store.enabled is True
    # The entry written before the block is served again: the block stored nothing.
    assert after.headers["x-fastapi-cache"] == "Hit" and after.json()["run"] == 1
    assert runs == [1, 1, 1]


def test_invalidations_while_disabled_still_delete(make_store: MakeStore) -> None:
    """Data changed while caching was off must not come back stale when it is on again."""
    store = make_store()
    app, runs, _ = counting_app(store)
    with TestClient(app) as client:
        client.get("/items/1")
        with store.disabled():
            assert client.portal.call(store.invalidate_tag, "items") == 1
        after = client.get("/items/1")
    assert after.headers["x-fastapi-cache"] == "Miss"
    assert runs == [1, 1]


def test_cached_functions_follow_the_switch() -> None:
    store = Cache()
    calls: list[int] = []

    @cached(expire=60, store=store)
    async def load(n: int) -> dict[str, int]:
        calls.append(n)
        return {"n": n}

    async def main() -> None:
        await load(1)
        await load(1)  # a hit
        with store.disabled():
            assert await load(1) == {"n": 1}
            assert await load(7) == {"n": 7}
        await load(7)  # not stored while off: a miss now

    anyio.run(main)
    assert calls == [1, 1, 7, 7]
    assert store.stats()["hits"] == 1


def test_a_sync_cached_function_follows_the_switch() -> None:
    store = Cache(enabled=False)
    calls: list[int] = []

    @cached(expire=60, store=store)
    def load(n: int) -> dict[str, int]:
        calls.append(n)
        return {"n": n}

    app = FastAPI()

    @app.get("/n/{n}")
    def n(n: int) -> dict[str, int]:  # the threadpool, where sync @cached functions cache
        return load(n)

    with TestClient(app) as client:
        client.get("/n/1")
        client.get("/n/1")
        store.enabled = True
        client.get("/n/1")
        client.get("/n/1")
    assert calls == [1, 1, 1]

"""functions.py: `@cached`, plain async and sync functions (not endpoints) cached through the
same stores, keys and invalidation as `@cache`, returning the same Python objects; outside
any event loop a sync one runs uncached. On memory, Redis and Redis Cluster (parametrized
through make_store)."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import FastAPI

from oxcache import Cache, cache, cached
from tests.apps import Item, MakeStore, Point, client_for


def test_plain_functions_are_cached_with_the_same_keys_and_invalidation(
    make_store: MakeStore,
) -> None:
    """#32, #61, #66: cache plain async and sync functions, returning the same objects."""
    store = make_store()
    calls: list[str] = []

    @cached(expire=60, store=store, tags=["items"])
    async def load_item(id: int) -> Item:
        calls.append(f"async {id}")
        return Item(id=id, name=f"item {id}")

    @cache.function(expire=60, store=store)  # type: ignore[attr-defined]
    def load_point(x: int) -> Point:
        calls.append(f"sync {x}")
        return Point(x, 0.5)

    app = FastAPI()

    @app.get("/item/{id}")
    async def item(id: int) -> dict[str, Any]:
        value = await load_item(id)
        return {"type": type(value).__name__, "value": value.model_dump()}

    @app.get("/point/{x}")
    def point(x: int) -> dict[str, Any]:  # a def endpoint: runs in the threadpool
        value = load_point(x)
        return {"type": type(value).__name__, "x": value.x}

    with client_for(app, store) as client:
        for _ in range(2):
            assert client.get("/item/1").json() == {
                "type": "Item",
                "value": {"id": 1, "name": "item 1"},
            }
            assert client.get("/point/3").json() == {"type": "Point", "x": 3}
        assert calls == ["async 1", "sync 3"]
        assert (
            store.key_for(load_item, id=1) == f"{store.prefix}:tests.test_functions.load_item(id=1)"
        )
        assert client.portal.call(lambda: store.invalidate(load_item, id=1)) == 1
        client.get("/item/1")
        assert client.portal.call(store.invalidate_tag, "items") == 1
        client.get("/item/1")
    assert calls == ["async 1", "sync 3", "async 1", "async 1"]


def test_sync_cached_function_outside_any_event_loop_runs_uncached() -> None:
    runs: list[int] = []

    @cached(expire=60, store=Cache())
    def compute(x: int) -> int:
        runs.append(x)
        return x * 2

    assert compute(2) == 4 and compute(2) == 4
    assert runs == [2, 2]
    assert anyio.run(anyio.to_thread.run_sync, compute, 3) == 6

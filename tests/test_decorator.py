"""decorator.py and endpoint.py: `@cache` itself. Bare, with arguments, the shortcuts and a
partial as the seed documents; the wrapper FastAPI calls (the body is right whether or not
the endpoint takes Request and Response, sync endpoints run in the threadpool, a direct
call behaves like the undecorated function); and `@cache` written above `@app.get`, which
is found at startup. What happens to a request is in test_serve.py (hits) and test_fill.py
(misses)."""

from __future__ import annotations

import logging
import threading
from functools import partial, update_wrapper
from typing import Any, Callable

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

from oxcache import (
    cache,
    cache_one_day,
    cache_one_hour,
    cache_one_minute,
    cache_one_month,
    cache_one_week,
    cache_one_year,
)
from tests.apps import MakeStore, client_for

# -- forms of the decorator --------------------------------------------------------------------


def test_bare_decorator_without_parentheses_uses_the_default_memory_store() -> None:
    import anyio

    from oxcache import default_store

    anyio.run(default_store().clear)
    app = FastAPI()
    calls = []

    @app.get("/bare")
    @cache
    async def bare() -> dict[str, int]:
        calls.append(1)
        return {"n": 1}

    with TestClient(app) as client:
        client.get("/bare")
        assert client.get("/bare").headers["x-fastapi-cache"] == "Hit"
    assert len(calls) == 1


def test_default_expiry_is_one_year(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/immutable_data")
    @cache(store=store)
    async def get_immutable_data() -> dict[str, Any]:
        return {"success": True}

    with client_for(app, store) as client:
        assert client.get("/immutable_data").headers["cache-control"] == "max-age=31536000"


@pytest.mark.parametrize(
    ("decorator", "seconds"),
    [
        (cache_one_minute, 60),
        (cache_one_hour, 3600),
        (cache_one_day, 86400),
        (cache_one_week, 604800),
        (cache_one_month, 2592000),
        (cache_one_year, 31536000),
    ],
)
def test_shortcuts(make_store: MakeStore, decorator: Callable[..., Any], seconds: int) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/s")
    @decorator(store=store)
    def s(response: Response) -> dict[str, bool]:
        return {"success": True}

    with client_for(app, store) as client:
        assert client.get("/s").headers["cache-control"] == f"max-age={seconds}"
        assert client.get("/s").headers["x-fastapi-cache"] == "Hit"


def test_partial_with_update_wrapper_as_the_seed_documents(make_store: MakeStore) -> None:
    store = make_store()
    cache_two_hours = partial(cache, expire=3600 * 2)
    update_wrapper(cache_two_hours, cache)
    app = FastAPI()

    @app.get("/cache_two_hours")
    @cache_two_hours(store=store)
    def partial_cache_two_hours(response: Response) -> dict[str, bool]:
        return {"success": True}

    with client_for(app, store) as client:
        assert client.get("/cache_two_hours").headers["cache-control"] == "max-age=7200"


# -- the wrapper FastAPI calls (endpoint.py) ---------------------------------------------------


@pytest.mark.parametrize("with_params", [True, False])
def test_body_without_request_or_response_params(make_store: MakeStore, with_params: bool) -> None:
    """The seed sent empty bodies when the endpoint had no `response` parameter (its #70)."""
    store = make_store()
    app = FastAPI()

    if with_params:

        @app.get("/x")
        @cache(store=store)
        async def x(request: Request, response: Response) -> dict[str, int]:
            return {"a": 1}
    else:

        @app.get("/x")
        @cache(store=store)
        async def x() -> dict[str, int]:  # type: ignore[misc]
            return {"a": 1}

    with client_for(app, store) as client:
        for expected in ("Miss", "Hit"):
            response = client.get("/x")
            assert response.headers["x-fastapi-cache"] == expected
            assert response.content == b'{"a":1}'
            assert response.headers["content-length"] == "7"


def test_sync_endpoints_run_in_the_threadpool_concurrently(make_store: MakeStore) -> None:
    """Four requests meet at a barrier inside the endpoint: only possible if they run at once,
    off the event loop (the seed ran them on the loop, one after another)."""
    store = make_store()
    app = FastAPI()
    barrier = threading.Barrier(4, timeout=10)
    threads: set[int] = set()

    @app.get("/sync/{n}")
    @cache(store=store)
    def sync(n: int) -> dict[str, int]:
        threads.add(threading.get_ident())
        barrier.wait()
        return {"n": n}

    import anyio

    async def main() -> list[int]:
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            results: list[int] = []

            async def one(n: int) -> None:
                response = await client.get(f"/sync/{n}")
                results.append(response.json()["n"])

            async with anyio.create_task_group() as group:
                for n in range(4):
                    group.start_soon(one, n)
            return sorted(results)

    assert anyio.run(main) == [0, 1, 2, 3]
    assert threading.get_ident() not in threads
    assert len(threads) == 4


def test_decorated_function_called_directly_behaves_like_the_original() -> None:
    @cache(expire=10)
    def plain(x: int) -> int:
        return x * 2

    import anyio

    assert anyio.run(plain, 4) == 8  # type: ignore[arg-type]


# -- @cache above the route decorator ----------------------------------------------------------


def test_decorator_above_the_route_is_detected_at_startup(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """#33, #77: `@cache` above `@app.get` silently caches nothing in every peer."""
    store = make_store()
    app = FastAPI()

    @cache(expire=60, store=store)
    @app.get("/wrong")
    async def wrong_order() -> dict[str, int]:
        return {"a": 1}

    @app.get("/right")
    @cache(expire=60, store=store)
    async def right_order() -> dict[str, int]:
        return {"a": 1}

    with caplog.at_level(logging.WARNING, "oxcache"), client_for(app, store):
        pass
    messages = [r.getMessage() for r in caplog.records if "never cached" in r.getMessage()]
    assert len(messages) == 1 and "wrong_order" in messages[0] and "below" in messages[0]

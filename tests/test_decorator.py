"""@cache: fastapi-redis-cache parity and HTTP caching, on Redis and in memory (parametrized)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from functools import partial, update_wrapper
from typing import Annotated, Any, Callable, Optional

import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, Request, Response
from fastapi.testclient import TestClient

from oxcache import (
    Cache,
    ConfigError,
    cache,
    cache_one_day,
    cache_one_hour,
    cache_one_minute,
    cache_one_month,
    cache_one_week,
    cache_one_year,
)
from tests.apps import MakeStore, client_for, item_app


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


@pytest.mark.parametrize("expire", [45, timedelta(seconds=45)])
def test_expire_int_or_timedelta(make_store: MakeStore, expire: Any) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/e")
    @cache(expire=expire, store=store)
    async def e() -> int:
        return 1

    with client_for(app, store) as client:
        assert client.get("/e").headers["cache-control"] == "max-age=45"


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


@pytest.mark.parametrize("bad", [-1, timedelta(seconds=-5), "60", 1.5, True])
def test_invalid_expire_is_refused_at_decoration(bad: Any) -> None:
    with pytest.raises(ConfigError):
        cache(expire=bad)


# -- conditional requests ----------------------------------------------------------------------


# -- request directives ------------------------------------------------------------------------


# -- methods -----------------------------------------------------------------------------------


# -- what is not cached ------------------------------------------------------------------------


# -- bodies identical to the undecorated route ---------------------------------------------------


# -- keys ----------------------------------------------------------------------------------------


class Session:
    """Stands in for sqlalchemy.orm.Session: its str() holds a memory address."""


def get_session() -> Session:
    return Session()


class SubSession(Session):
    pass


def test_seed_key_format_and_ignore_arg_types(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(prefix="myapi-cache", ignore_arg_types=[Session])
    app = FastAPI()

    @app.get("/get_user")
    @cache(expire=3600, store=store)
    def get_user(id: int, db: Session = Depends(get_session)) -> dict[str, int]:
        return {"id": id}

    caplog.set_level(logging.INFO, logger="oxcache")
    with client_for(app, store) as client:
        client.get("/get_user", params={"id": 1})
        assert client.get("/get_user", params={"id": 1}).headers["x-fastapi-cache"] == "Hit"
    key = f"myapi-cache:{__name__}.get_user(id=1)"
    assert store.key_for(get_user, id=1) == key
    assert f"KEY_ADDED_TO_CACHE: key={key}" in caplog.text
    assert f"KEY_FOUND_IN_CACHE: key={key}" in caplog.text


@pytest.mark.parametrize(
    "annotation",
    [Session, Optional[Session], Annotated[Session, Depends(get_session)], SubSession],
)
def test_ignore_arg_types_through_optional_annotated_and_subclasses(
    make_store: MakeStore, annotation: Any
) -> None:
    store = make_store(ignore_arg_types=[Session])
    app = FastAPI()

    if typing_is_annotated(annotation):

        def endpoint(id: int, db: Session) -> dict[str, int]:
            return {"id": id}
    else:

        def endpoint(id: int, db: Session = Depends(get_session)) -> dict[str, int]:
            return {"id": id}

    endpoint.__annotations__["db"] = annotation  # this module's annotations are strings
    cached = cache(store=store)(endpoint)
    app.get("/u")(cached)
    with client_for(app, store) as client:
        client.get("/u", params={"id": 5})
        assert client.get("/u", params={"id": 5}).headers["x-fastapi-cache"] == "Hit"
    assert store.key_for(cached, id=5, db=None).endswith(".endpoint(id=5)")


def typing_is_annotated(annotation: Any) -> bool:
    return getattr(annotation, "__metadata__", None) is not None


def test_unannotated_ignored_dependency_is_left_out_by_its_value(make_store: MakeStore) -> None:
    store = make_store(ignore_arg_types=[Session])
    app = FastAPI()

    @app.get("/v")
    @cache(store=store)
    def v(id: int, db=Depends(get_session)) -> dict[str, int]:  # type: ignore[no-untyped-def]
        return {"id": id}

    with client_for(app, store) as client:
        client.get("/v", params={"id": 1})
        assert client.get("/v", params={"id": 1}).headers["x-fastapi-cache"] == "Hit"


def test_dependency_with_memory_address_is_served_uncached_with_a_clear_warning(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()  # Session is NOT in ignore_arg_types
    app = FastAPI()
    calls = []

    @app.get("/leaky")
    @cache(store=store)
    def leaky(id: int, db: Session = Depends(get_session)) -> dict[str, int]:
        calls.append(id)
        return {"id": id}

    with client_for(app, store) as client:
        first, second = (
            client.get("/leaky", params={"id": 1}),
            client.get("/leaky", params={"id": 1}),
        )
    assert first.status_code == second.status_code == 200
    assert "x-fastapi-cache" not in second.headers
    assert calls == [1, 1]
    assert "'db'" in caplog.text and "ignore_arg_types" in caplog.text


class GameDate:
    def __init__(self, game_date: str) -> None:
        self.value = game_date

    def __str__(self) -> str:
        return self.value


def test_custom_dependency_with_str_is_keyed_by_it(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    calls = []

    @app.get("/scoreboard")
    @cache(store=store)
    def scoreboard(game_date: GameDate = Depends()) -> dict[str, str]:
        calls.append(game_date.value)
        return {"date": game_date.value}

    with client_for(app, store) as client:
        for day in ("20190509", "20190510", "20190509", "20190510"):
            assert client.get("/scoreboard", params={"game_date": day}).json() == {"date": day}
    assert calls == ["20190509", "20190510"]


def test_injective_keys_never_serve_another_arguments_data(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/q")
    @cache(store=store)
    async def q(a: str, b: Optional[str] = None) -> dict[str, Any]:
        return {"a": a, "b": b}

    with client_for(app, store) as client:
        one = client.get("/q", params={"a": "1,b=2", "b": "3"}).json()
        two = client.get("/q", params={"a": "1", "b": "2,b=3"}).json()
        none = client.get("/q", params={"a": "x"}).json()
        literal = client.get("/q", params={"a": "x", "b": "None"}).json()
    assert one == {"a": "1,b=2", "b": "3"}
    assert two == {"a": "1", "b": "2,b=3"}
    assert none == {"a": "x", "b": None}
    assert literal == {"a": "x", "b": "None"}


def test_background_tasks_and_request_params_stay_out_of_the_key(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    ran = []

    @app.get("/bg")
    @cache(store=store)
    async def bg(tasks: BackgroundTasks, req: Request, id: int = 1) -> dict[str, int]:
        tasks.add_task(ran.append, id)
        return {"id": id}

    with client_for(app, store) as client:
        client.get("/bg")
        assert client.get("/bg").headers["x-fastapi-cache"] == "Hit"
        renamed = client.get("/bg", headers={"Cache-Control": "no-cache"})
    assert "x-fastapi-cache" not in renamed.headers  # request found by type, not by name
    assert ran == [1, 1]
    assert store.key_for(bg, id=1).endswith(".bg(id=1)")


def test_string_annotations_from_future_import(make_store: MakeStore) -> None:
    import sys
    import textwrap
    import types

    source = textwrap.dedent(
        """
        from __future__ import annotations
        from fastapi import Request, Response
        from oxcache import cache

        def build(store):
            @cache(store=store)
            async def fut(id: int, request: Request, response: Response) -> dict:
                return {"id": id}
            return fut
        """
    )
    module = types.ModuleType("future_endpoints")
    sys.modules["future_endpoints"] = module
    exec(compile(source, "future_endpoints.py", "exec"), module.__dict__)
    store = make_store()
    app = FastAPI()
    fut = module.build(store)
    app.get("/fut")(fut)
    with client_for(app, store) as client:
        client.get("/fut", params={"id": 3})
        assert client.get("/fut", params={"id": 3}).headers["x-fastapi-cache"] == "Hit"
        assert (
            "x-fastapi-cache"
            not in client.get(
                "/fut", params={"id": 3}, headers={"Cache-Control": "no-store"}
            ).headers
        )
    assert store.key_for(fut, id=3).endswith("future_endpoints.fut(id=3)")


# -- sync endpoints ------------------------------------------------------------------------------


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


# -- store behaviour -----------------------------------------------------------------------------


def test_two_memory_stores_never_share_entries() -> None:
    first, second = Cache(), Cache()
    app = FastAPI()

    @app.get("/a")
    @cache(store=first)
    async def a() -> int:
        return 1

    @app.get("/b")
    @cache(store=second)
    async def b() -> int:
        return 2

    with client_for(app, first) as client:
        client.get("/a")
    assert len(first.backend) == 1  # type: ignore[arg-type]
    assert len(second.backend) == 0  # type: ignore[arg-type]


def test_corrupted_value_is_a_miss_then_overwritten(make_store: MakeStore) -> None:
    store = make_store()
    app, calls = item_app(store)
    key = store.key_for(_find(app, "/item/{id}"), id=9)
    with client_for(app, store) as client:
        for garbage in (b"not ours", b"OXC\x07" + b"\x00" * 60, b""):
            # On the app's event loop: redis.asyncio connections belong to one loop.
            client.portal.call(store.backend.set, key, garbage, 60_000)
            assert client.get("/item/9").headers["x-fastapi-cache"] == "Miss"
            assert client.get("/item/9").headers["x-fastapi-cache"] == "Hit"
    assert calls == [9, 9, 9]


def _find(app: FastAPI, path: str) -> Any:
    for route in app.routes:
        if getattr(route, "path", None) == path:
            return route.endpoint  # type: ignore[attr-defined]
    raise LookupError(path)


def test_invalidate_and_clear(make_store: MakeStore) -> None:
    store = make_store()
    app, _ = item_app(store)
    endpoint = _find(app, "/item/{id}")
    with client_for(app, store) as client:
        client.get("/item/1")
        client.get("/item/2")
        assert client.portal.call(partial(store.invalidate, endpoint, id=1)) == 1
        assert client.get("/item/1").headers["x-fastapi-cache"] == "Miss"
        assert client.get("/item/2").headers["x-fastapi-cache"] == "Hit"
        assert client.portal.call(store.clear) == 2
        assert client.get("/item/2").headers["x-fastapi-cache"] == "Miss"

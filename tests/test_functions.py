"""functions.py: `@cached`, plain async and sync functions (not endpoints) cached through the
same stores, keys and invalidation as `@cache`, returning the same Python objects; outside
any event loop a sync one runs uncached. On memory, Redis and Redis Cluster (parametrized
through make_store). A hit returns what the miss returned, or the value is not cached at
all, with a warning once saying why and what to do."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from oxcache import Cache, ConfigError, cache, cached
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


class Thing:
    """A plain class: pydantic cannot build a schema for it (an ORM model is the same)."""

    def __init__(self, n: int) -> None:
        self.n = n


class Model(BaseModel):
    a: int


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "oxcache" and r.levelno == logging.WARNING
    ]


def twice(func: Any, *args: Any) -> tuple[Any, Any]:
    async def main() -> tuple[Any, Any]:
        return await func(*args), await func(*args)

    return anyio.run(main)


def test_a_return_annotation_pydantic_cannot_handle_runs_uncached_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    with caplog.at_level(logging.WARNING, "oxcache"):

        @cached(expire=60, store=Cache())
        async def load(n: int) -> Thing:  # used to raise PydanticSchemaGenerationError here
            calls.append(n)
            return Thing(n)

        first, second = twice(load, 1)
    assert isinstance(first, Thing) and isinstance(second, Thing) and second.n == 1
    assert calls == [1, 1]
    [warning] = warnings_of(caplog)
    assert "test_functions.load runs uncached" in warning and "Thing" in warning


def test_a_sync_function_with_such_an_annotation_runs_uncached_too() -> None:
    calls: list[int] = []

    @cached(expire=60, store=Cache())
    def load(n: int) -> Thing:
        calls.append(n)
        return Thing(n)

    assert load(2).n == 2 and load(2).n == 2
    assert calls == [2, 2]


def test_a_generator_function_is_refused_at_decoration() -> None:
    with pytest.raises(ConfigError, match=r"generator function.*Return a list"):

        @cached(expire=60)
        def numbers() -> Iterator[int]:
            yield 1

    with pytest.raises(ConfigError, match="generator function"):

        @cached(expire=60)
        async def stream() -> Any:
            yield 1


@pytest.mark.parametrize("annotated", [True, False])
def test_an_iterator_result_is_handed_back_unconsumed_and_uncached(
    annotated: bool, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    async def gen(n: int) -> Iterator[int]:
        calls.append(n)
        return (i for i in range(n))

    if not annotated:
        del gen.__annotations__["return"]
    with caplog.at_level(logging.WARNING, "oxcache"):
        load = cached(expire=60, store=Cache())(gen)
        first, second = twice(load, 3)
    assert list(first) == [0, 1, 2]  # the miss used to hand back an exhausted generator
    assert list(second) == [0, 1, 2]
    assert calls == [3, 3]
    [warning] = warnings_of(caplog)
    if annotated:  # pydantic has no schema for Iterator: warned once, at decoration
        assert "runs uncached" in warning and "Iterator[int]" in warning
    else:
        assert "returned a generator" in warning and "Return a list" in warning


@pytest.mark.parametrize(
    "value",
    [
        Model(a=1),
        Point(1, 0.5),
        (1, 2),
        {1, 2},
        datetime.date(2024, 1, 2),
        {"when": datetime.date(2024, 1, 2)},
        {1: "int keys come back as strings"},
        [Model(a=1)],
    ],
    ids=["model", "dataclass", "tuple", "set", "date", "nested-date", "int-keys", "list-model"],
)
def test_without_an_annotation_a_value_json_would_change_is_returned_uncached(
    value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    @cached(expire=60, store=Cache())
    async def load(n: int):  # type: ignore[no-untyped-def]  # no annotation, on purpose
        calls.append(n)
        return value

    with caplog.at_level(logging.WARNING, "oxcache"):
        first, second = twice(load, 1)
        third = anyio.run(load, 1)
    # A hit used to return a dict for a model (a list for a tuple, a str for a date).
    assert first == value and second == value and third == value
    assert type(second) is type(value)
    assert calls == [1, 1, 1]
    [warning] = warnings_of(caplog)  # once, not per call
    assert "without a return annotation" in warning
    assert f"-> {type(value).__name__}" in warning


def test_without_an_annotation_json_shaped_values_are_cached() -> None:
    calls: list[int] = []
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": []}}

    @cached(expire=60, store=Cache())
    async def load(n: int):  # type: ignore[no-untyped-def]
        calls.append(n)
        return value

    first, second = twice(load, 1)
    assert first == second == value
    assert calls == [1]


def test_an_annotated_model_comes_back_as_the_model_on_a_hit() -> None:
    calls: list[int] = []

    @cached(expire=60, store=Cache())
    async def load(n: int) -> Model:
        calls.append(n)
        return Model(a=n)

    first, second = twice(load, 4)
    assert first == second == Model(a=4) and type(second) is Model
    assert calls == [4]


def test_a_value_pydantic_cannot_serialize_is_returned_uncached_and_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    marker = Thing(0)

    @cached(expire=60, store=Cache())
    async def load(n: int) -> dict[str, Any]:
        calls.append(n)
        return {"thing": marker}

    with caplog.at_level(logging.INFO, "oxcache"):
        first, second = twice(load, 1)
    assert first["thing"] is marker and second["thing"] is marker
    assert calls == [1, 1]
    [warning] = warnings_of(caplog)
    assert warning.startswith("FAILED_TO_CACHE_KEY") and "cannot serialize" in warning
    infos = [r for r in caplog.records if r.levelno == logging.INFO and "FAILED" in r.msg]
    assert len(infos) == 1  # the second failure, at INFO level

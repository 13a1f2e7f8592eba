"""Shared reads (coalesce.py, entries.py): concurrent reads of one key on one event loop await
one backend read and one decode; a read that starts after an invalidation or a write of the
key returned never joins one that started before it; a cancelled read does not fail the
reads that joined it. On memory and Redis (the backend's read is held at a gate, so every
read is concurrent whatever the backend's speed)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from oxcache import Cache, cache
from oxcache._core import encode_entry
from tests.apps import MakeStore


@pytest.fixture(params=["memory", "redis"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Gate:
    """Wraps the store's backend reads (a GET, or an entry with its generations: issue 17):
    counts them and holds each until released."""

    def __init__(self, store: Cache) -> None:
        self.calls = 0
        self.open = asyncio.Event()
        self.original: Callable[[str], Awaitable[bytes | None]] = store.backend.get
        self.original_read: Callable[..., Awaitable[Any]] = store.backend.read
        store.backend.get = self.get  # type: ignore[method-assign]
        store.backend.read = self.read  # type: ignore[method-assign]
        # Held at the gate, the memory backend's reads wait like a network's: the store
        # must share them as it shares Redis reads (its own in-process reads it does not).
        store.entries.local = False

    async def get(self, key: str) -> bytes | None:
        self.calls += 1
        await self.open.wait()
        return await self.original(key)

    async def read(self, key: str, generations: Any, head: int = 0) -> Any:
        self.calls += 1
        await self.open.wait()
        return await self.original_read(key, generations, head)


async def settle(until: Callable[[], bool]) -> None:
    """Let the other tasks run until `until()` (bounded: 1,000 turns of the loop)."""
    for _ in range(1000):
        if until():
            return
        await asyncio.sleep(0)
    raise AssertionError("the reads never got there")


def entry(body: bytes) -> bytes:
    return encode_entry(200, [], body, 0, 2**62)


def test_concurrent_reads_of_a_key_share_one_read_and_one_entry(make_store: MakeStore) -> None:
    store = make_store()

    async def scenario() -> None:
        async with store:
            await store.write("k", entry(b"hot"), 60_000)
            gate = Gate(store)
            reads = [asyncio.ensure_future(store.read("k")) for _ in range(50)]
            await settle(lambda: store.entries.shared.joined == 49)
            gate.open.set()
            found = await asyncio.gather(*reads)
            assert gate.calls == 1
            assert all(e is found[0] for e in found) and found[0].body == b"hot"
            # Done: the next read is a read of its own.
            assert (await store.read("k")).body == b"hot"
            assert gate.calls == 2

    anyio.run(scenario)


def test_different_keys_are_not_shared(make_store: MakeStore) -> None:
    store = make_store()

    async def scenario() -> None:
        async with store:
            for k in ("a", "b"):
                await store.write(k, entry(k.encode()), 60_000)
            gate = Gate(store)
            reads = [asyncio.ensure_future(store.read(k)) for k in ("a", "b", "a", "b")]
            await settle(lambda: gate.calls == 2 and store.entries.shared.joined == 2)
            gate.open.set()
            assert [e.body for e in await asyncio.gather(*reads)] == [b"a", b"b", b"a", b"b"]

    anyio.run(scenario)


@pytest.mark.parametrize("change", ["delete", "invalidate_tag", "clear", "write"])
def test_a_read_after_an_invalidation_or_write_never_joins_one_from_before(
    make_store: MakeStore, change: str
) -> None:
    store = make_store()
    tag = store.tag_index("t")
    key = store.keyspace.start + "k"  # under the prefix, which clear() deletes

    async def scenario() -> None:
        async with store:
            await store.write(key, entry(b"old"), 60_000, [tag])
            gate = Gate(store)
            before = asyncio.ensure_future(store.read(key))
            await settle(lambda: gate.calls == 1)
            if change == "delete":
                await store.delete([key])
            elif change == "invalidate_tag":
                await store.invalidate_tag("t")
            elif change == "clear":
                await store.clear()
            else:
                await store.write(key, entry(b"new"), 60_000)
            after = asyncio.ensure_future(store.read(key))
            await settle(lambda: gate.calls == 2)
            gate.open.set()
            await before
            found = await after
            assert store.entries.shared.joined == 0
            assert (found.body if found is not None else None) == (
                b"new" if change == "write" else None
            )

    anyio.run(scenario)


def test_a_cancelled_read_leaves_the_reads_that_joined_it_to_read(make_store: MakeStore) -> None:
    store = make_store()

    async def scenario() -> None:
        async with store:
            await store.write("k", entry(b"v"), 60_000)
            gate = Gate(store)
            first = asyncio.ensure_future(store.read("k"))
            await settle(lambda: gate.calls == 1)
            joined = asyncio.ensure_future(store.read("k"))
            await settle(lambda: store.entries.shared.joined == 1)
            first.cancel()
            await settle(lambda: gate.calls == 2)  # the joined read reads on its own
            gate.open.set()
            assert (await joined).body == b"v"
            with pytest.raises(asyncio.CancelledError):
                await first

    anyio.run(scenario)


def test_a_failed_read_fails_the_reads_that_joined_it(make_store: MakeStore) -> None:
    store = make_store()

    async def scenario() -> None:
        async with store:
            calls = [0]
            release = asyncio.Event()

            async def failing(key: str) -> Any:
                calls[0] += 1
                await release.wait()
                raise RuntimeError("decode bug")

            shared = store.entries.shared
            reads = [asyncio.ensure_future(shared.read("k", failing)) for _ in range(3)]
            await settle(lambda: shared.joined == 2)
            release.set()
            results = await asyncio.gather(*reads, return_exceptions=True)
            assert calls == [1] and all(isinstance(r, RuntimeError) for r in results)

    anyio.run(scenario)


def test_concurrent_hits_over_http_share_the_read(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    runs: list[int] = []

    @app.get("/hot")
    @cache(expire=60, store=store)
    async def hot() -> dict[str, Any]:
        runs.append(1)
        return {"big": "x" * 1000}

    async def scenario() -> list[httpx.Response]:
        async with store:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                assert (await client.get("/hot")).headers["x-fastapi-cache"] == "Miss"
                gate = Gate(store)
                requests = [asyncio.ensure_future(client.get("/hot")) for _ in range(20)]
                await settle(lambda: store.entries.shared.joined == 19)
                gate.open.set()
                responses = list(await asyncio.gather(*requests))
                assert gate.calls == 1
                return responses

    responses = anyio.run(scenario)
    assert runs == [1]
    assert {r.headers["x-fastapi-cache"] for r in responses} == {"Hit"}
    assert {r.text for r in responses} == {'{"big":"' + "x" * 1000 + '"}'}

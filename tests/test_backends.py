"""The backends on their own: bounds, expiry, prefix-scoped clearing, on memory and real Redis."""

from __future__ import annotations

import time

import anyio
import pytest
import redis

from oxcache import Cache, MemoryBackend, RedisBackend


def run(func, *args):  # type: ignore[no-untyped-def]
    return anyio.run(func, *args)


def test_memory_backend_evicts_least_recently_used_by_count() -> None:
    backend = MemoryBackend(max_entries=3)

    async def scenario() -> list[bytes | None]:
        for key in "abc":
            await backend.set(key, key.encode(), 60_000)
        await backend.get("a")  # a becomes most recently used
        await backend.set("d", b"d", 60_000)
        return [await backend.get(k) for k in "abcd"]

    assert run(scenario) == [b"a", None, b"c", b"d"]
    assert len(backend) == 3


def test_memory_backend_is_bounded_by_bytes() -> None:
    backend = MemoryBackend(max_bytes=100)

    async def scenario() -> None:
        for i in range(50):
            await backend.set(f"k{i}", bytes(30), 60_000)
            assert backend.size_bytes <= 100
        await backend.set("huge", bytes(101), 60_000)  # can never fit: not stored

    run(scenario)
    assert backend.size_bytes <= 100 and len(backend) == 3
    assert run(backend.get, "huge") is None


def test_memory_backend_honours_ttl() -> None:
    backend = MemoryBackend()
    run(backend.set, "k", b"v", 50)
    assert run(backend.get, "k") == b"v"
    time.sleep(0.08)
    assert run(backend.get, "k") is None
    assert len(backend) == 0


def test_memory_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryBackend(max_entries=0)


def test_redis_backend_round_trip_head_and_ttl(redis_url: str) -> None:
    backend = RedisBackend(redis_url)

    async def scenario() -> tuple[object, ...]:
        await backend.set("oxtest:k", b"0123456789", 5_000)
        whole = await backend.get("oxtest:k")
        head = await backend.get_head("oxtest:k", 4)
        missing = await backend.get_head("oxtest:nope", 4)
        ttl = await backend.client.pttl("oxtest:k")
        await backend.delete(["oxtest:k"])
        await backend.close()
        return whole, head, missing, ttl

    whole, head, missing, ttl = run(scenario)
    assert (whole, head, missing) == (b"0123456789", b"0123", None)
    assert 0 < ttl <= 5_000  # type: ignore[operator]


def test_clear_deletes_only_keys_under_the_prefix(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.set("foreign:key", b"keep me")
    redis_client.set("pre*fix-lookalike:x", b"keep me too")
    store = Cache(redis_url, prefix="pre*fix")

    async def scenario() -> int:
        for i in range(1200):  # more than one SCAN batch and one UNLINK batch
            await store.backend.set(f"pre*fix:{i}", b"v", 60_000)
        deleted = await store.clear()
        await store.close()
        return deleted

    assert run(scenario) == 1200
    assert redis_client.get("foreign:key") == b"keep me"
    assert redis_client.get("pre*fix-lookalike:x") == b"keep me too"
    assert not list(redis_client.scan_iter(match="pre\\*fix:*"))
    redis_client.delete("foreign:key", "pre*fix-lookalike:x")


def test_a_client_passed_in_is_never_closed(redis_url: str) -> None:
    import redis.asyncio as aioredis

    async def scenario() -> bool:
        client = aioredis.Redis.from_url(redis_url)
        async with Cache(client=client):
            pass
        ok = bool(await client.ping())  # still usable
        await client.aclose()
        return ok

    assert run(scenario)


def test_redis_url_password_is_redacted_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    from tests.conftest import free_port

    store = Cache(f"redis://user:s3cret@127.0.0.1:{free_port()}/0", timeout=0.05)
    caplog.set_level("INFO", logger="oxcache")
    assert run(store.connect) is False
    assert "s3cret" not in caplog.text and "***" in caplog.text

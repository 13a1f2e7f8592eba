"""Redis backend on `redis.asyncio`: one pool, one round trip per hit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from oxcache.backends.base import Backend

_GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "*?[]\\"})


class RedisBackend(Backend):
    """Entries as plain Redis strings with a millisecond TTL (`SET key value PX ttl`).

    Pass `url` (any redis-py URL: `redis://`, `rediss://`, `unix://`, with password and
    database) to let the backend create and own its client, or `client` to use one you made;
    a client passed in is never closed by oxcache. `timeout` bounds every command and
    connection attempt, so a dead or stuck Redis costs a request at most that long.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        timeout: float = 0.1,
        max_connections: int = 64,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("RedisBackend needs exactly one of url= or client=")
        if client is None:
            assert url is not None
            client = aioredis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                max_connections=max_connections,
                decode_responses=False,
                retry_on_timeout=False,
            )
            self.owns_connection = True
        else:
            self.owns_connection = False
        self.client: Any = client
        self.timeout = timeout

    async def get(self, key: str) -> bytes | None:
        value = await self.client.get(key)
        return bytes(value) if value is not None else None

    async def get_head(self, key: str, size: int) -> bytes | None:
        # GETRANGE on a missing key gives b"", which no entry can be.
        value = await self.client.getrange(key, 0, size - 1)
        return bytes(value) if value else None

    async def set(self, key: str, value: bytes, ttl_ms: int) -> None:
        await self.client.set(key, value, px=max(int(ttl_ms), 1))

    async def delete(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        return int(await self.client.unlink(*keys))

    async def clear(self, prefix: str) -> int:
        pattern = prefix.translate(_GLOB_SPECIALS) + "*"
        deleted = 0
        batch: list[bytes] = []
        async for key in self.client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(await self.client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(await self.client.unlink(*batch))
        return deleted

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        if self.owns_connection:
            await self.client.aclose()

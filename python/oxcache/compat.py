"""fastapi-redis-cache compatibility: `FastApiRedisCache().init(...)` as that library documents."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from oxcache.lifecycle import set_default
from oxcache.store import Cache

__all__ = ["FastApiRedisCache"]


class FastApiRedisCache:
    """Configures the default store the way fastapi-redis-cache's class of the same name does.

    Call `init` from a startup handler (or at import time). An unreachable `host_url` logs
    CONNECT_FAIL and never raises; requests are then served uncached until Redis answers,
    and caching resumes by itself (fastapi-redis-cache disabled it for good).

    Keys keep the seed's documented format, `myapi-cache:api.get_user(id=1)`: the store is
    made with `per_host=False`, so the host and scheme of a request are not in its key.
    `init(..., per_host=True)` puts them in, as every `Cache` does by default.
    """

    store: Cache | None = None

    def init(
        self,
        host_url: str,
        prefix: str | None = None,
        response_header: str | None = None,
        ignore_arg_types: Iterable[type[Any]] | None = None,
        *,
        per_host: bool = False,
    ) -> None:
        """Create the Redis-backed default store. Arguments as in fastapi-redis-cache;
        `per_host=True` keys each request's host and scheme too (see `Cache`)."""
        previous = FastApiRedisCache.store
        store = Cache(
            host_url,
            prefix=prefix,
            response_header=response_header,
            ignore_arg_types=ignore_arg_types,
            per_host=per_host,
        )
        FastApiRedisCache.store = store
        set_default(store)
        _schedule(store.connect())
        if previous is not None:
            _schedule(previous.close())

    @property
    def connected(self) -> bool:
        """Whether the configured store's backend answered its last request."""
        store = FastApiRedisCache.store
        return store is not None and store.health.healthy


_background: set[asyncio.Task[Any]] = set()


def _schedule(coro: Any) -> None:
    """Run `coro` on the running loop if there is one (`init` is synchronous, as the seed's)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        coro.close()
        return
    task = loop.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)

"""A store's life: checking the backend at startup, becoming the default store of `@cache`
endpoints that name none while it is entered, the FastAPI lifespan, closing, and the switch
that turns caching off."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, TypeVar

from oxcache.backends.base import Backend
from oxcache.backends.redis import RedisBackend
from oxcache.health import Health
from oxcache.invalidation import Invalidations
from oxcache.keys import KeySpace
from oxcache.logs import LOGGER_NAME
from oxcache.near import NearCache
from oxcache.registry import warn_misplaced

__all__ = ["Lifecycle", "current_default", "set_default"]

logger = logging.getLogger(LOGGER_NAME)

_S = TypeVar("_S", bound="Lifecycle")

_default_store: Any = None


def set_default(store: Any) -> Any:
    """Make `store` the default store of `@cache` endpoints that name none (None: back to
    the process-wide in-memory store); returns the previous default."""
    global _default_store
    previous = _default_store
    _default_store = store
    return previous


def current_default() -> Any:
    """The store configured by `FastApiRedisCache().init(...)` or last entered, if any."""
    return _default_store


class Lifecycle:
    """How a `Cache` starts and stops (`Cache` is one): `async with store:` or
    `FastAPI(lifespan=store.lifespan)` checks the backend, starts the near cache's listener
    and makes the store the default until it exits; `disabled()` turns caching off."""

    backend: Backend
    near: NearCache | None
    health: Health
    invalidations: Invalidations
    keyspace: KeySpace
    #: Whether requests and `@cached` calls use the cache (see `disabled()`).
    enabled: bool
    _previous_default: Any = None

    async def connect(self) -> bool:
        """Check the backend once, logging CONNECT_BEGIN and then CONNECT_SUCCESS or
        CONNECT_FAIL. Never raises: an unreachable Redis means uncached responses until it
        answers, not a failed startup."""
        logger.info("CONNECT_BEGIN: Attempting to connect to %s...", self.health.name)
        try:
            await self.backend.ping()
        except Exception as exc:
            self.health.failed(exc)
            return False
        self.health.connected()
        logger.info("CONNECT_SUCCESS: %s is connected.", self.health.name)
        return True

    async def close(self) -> None:
        """Release the backend's connections (never a client that was passed in), and stop
        retrying queued invalidations."""
        self.invalidations.stop()
        if self.near is not None:
            await self.near.stop()
        if self.backend.owns_connection:
            await self.backend.close()

    async def __aenter__(self: _S) -> _S:
        if self.enabled:
            await self.connect()
        else:
            logger.info("CACHE_DISABLED: caching is off for %s.", self.health.name)
        if self.near is not None:
            assert isinstance(self.backend, RedisBackend)
            self.near.start(self.backend, self.keyspace.start)
        self._previous_default = set_default(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if _default_store is self:
            set_default(self._previous_default)
        self._previous_default = None
        await self.close()

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Lifespan handler: `FastAPI(lifespan=store.lifespan)` connects on startup and
        closes on shutdown."""
        warn_misplaced(app, self.health.warn_once)
        async with self:
            yield

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Turn caching off for the block, then back: endpoints and `@cached` functions
        run on every call as if undecorated (no cache headers, nothing read, written or
        counted), for every request the store serves meanwhile. Invalidations still
        delete, so nothing stale comes back when caching is on again."""
        previous = self.enabled
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = previous

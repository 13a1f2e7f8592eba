"""Running invalidations so that they hold: an invalidation the backend did not take is
queued, and the queue is replayed before the store reads anything again, so old data never
comes back out after `invalidate*()` returned. With a near cache, the worker that
invalidates waits for Redis's notifications of what it deleted before returning."""

from __future__ import annotations

import logging

from oxcache.backends.base import Backend
from oxcache.errors import ConfigError
from oxcache.health import Health
from oxcache.near import NearCache

__all__ = ["Invalidations"]

logger = logging.getLogger("oxcache")

_MAX_PENDING = 1000

#: One queued invalidation: (indexes, keys), or None for "clear everything under the prefix".
Item = tuple[list[str], list[str]] | None


class Invalidations:
    """The invalidations of one store (`store.invalidations`), with the queue of those
    that failed."""

    __slots__ = ("backend", "finished", "health", "near", "pending", "prefix")

    def __init__(self, backend: Backend, health: Health, near: NearCache | None, prefix: str):
        self.backend = backend
        self.health = health
        self.near = near
        self.prefix = prefix
        #: Invalidations that failed while storage was unreachable, replayed before any read.
        self.pending: list[Item] = []
        #: Invalidations that finished (or failed and were queued): a read that started
        #: before one finished is never shared with a read that starts after it.
        self.finished = 0

    async def run(self, indexes: list[str], keys: list[str]) -> int:
        """Delete `keys` and every entry listed in `indexes`; how many entries existed."""
        try:
            return await self._run(indexes, keys)
        finally:
            self.finished += 1

    async def _run(self, indexes: list[str], keys: list[str]) -> int:
        if self.pending:
            await self.replay()
        try:
            deleted = await self.backend.invalidate(indexes, keys)
        except Exception as exc:
            self.health.failed(exc)
            self._queue((indexes, keys))
            return 0
        near = self.near
        if near is not None:
            for key in keys:
                near.discard(key)
            # Entries found through the indexes: wait for Redis's notifications of them.
            await near.sync(max(getattr(self.backend, "timeout", 0.0), 1.0))
        if not self.health.healthy:
            self.health.succeeded()
        return deleted

    async def clear(self) -> int:
        """Delete every key under the prefix; how many were deleted. Without a prefix on
        shared storage (Redis), `ConfigError`: other programs' keys would go too."""
        try:
            return await self._clear()
        finally:
            self.finished += 1

    async def _clear(self) -> int:
        if not self.prefix and self.backend.shared:
            raise ConfigError(
                f"clear() on {self.health.name} without a prefix would delete every key of "
                "the database, other applications' too: give the store a prefix "
                '(Cache(url=..., prefix="myapp")) so that clear() deletes only its keys, '
                "or use FLUSHDB if emptying the whole database is really what you want"
            )
        try:
            deleted = await self.backend.clear(self.prefix)
        except Exception as exc:
            self.health.failed(exc)
            self._queue(None)
            return 0
        if self.near is not None:
            self.near.flush()
        self.pending.clear()  # everything they would delete is gone
        return deleted

    async def replay(self) -> bool:
        """Replay queued invalidations; True when none are left."""
        while self.pending:
            item = self.pending[0]
            try:
                if item is None:
                    await self.backend.clear(self.prefix)
                else:
                    await self.backend.invalidate(*item)
            except Exception as exc:
                self.health.failed(exc)
                return False
            self.pending.pop(0)
        logger.info("INVALIDATIONS_REPLAYED: queued invalidations ran; caching resumed.")
        return True

    def _queue(self, item: Item) -> None:
        # None means "clear everything under the prefix"; it also stands in for a queue that
        # grew too long, since replaying a clear is safe: except without a prefix on shared
        # storage, where it would delete other programs' keys, so there the queue is folded
        # into one invalidation of every index and key it names.
        if item is None or None in self.pending:
            self.pending = [None]
        elif len(self.pending) < _MAX_PENDING:
            self.pending.append(item)
        elif self.prefix or not self.backend.shared:
            self.pending = [None]
        else:
            queued = [i for i in (*self.pending, item) if i is not None]
            indexes = dict.fromkeys(name for i in queued for name in i[0])
            keys = dict.fromkeys(name for i in queued for name in i[1])
            self.pending = [(list(indexes), list(keys))]
        if self.near is not None:
            self.near.flush()  # and not used while the queue is not empty (see `Cache.read`)
        logger.error(
            "FAILED_TO_INVALIDATE: %s did not answer; %d invalidation(s) will run before "
            "anything is served from the cache again.",
            self.health.name,
            len(self.pending),
        )

"""Running invalidations so that they hold: an invalidation deletes the generation tokens
of the indexes it names (every entry built under them is a miss from then on, wherever it
is, even where Redis evicted the index) and, through the indexes, the entries themselves
(which frees their memory and gives the count). One the backend did not take is queued:
the queue is replayed before the store reads anything again, so old data never comes back
out of this process after `invalidate*()` returned, and it is retried in the background
until it lands, whether or not the process serves requests. The caller can tell: the count
returned is an `Invalidated` whose `landed` is False, and `wait` says when it landed. With a
near cache, the worker that invalidates waits for Redis's notifications of what it deleted
before returning."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from oxcache.backends.base import Backend
from oxcache.errors import ConfigError
from oxcache.health import Health
from oxcache.keys import KeySpace
from oxcache.near import NearCache

__all__ = ["Invalidated", "Invalidations"]

logger = logging.getLogger("oxcache")

_MAX_PENDING = 1000
#: The background retry of queued invalidations: first after this long, then twice as long
#: each time, up to `_RETRY_MAX_S` (so one lands at most that long after Redis takes writes
#: again, plus one command's timeout).
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 0.25


class Invalidated(int):
    """What `invalidate*()`, `delete` and `clear` return: the number of entries (for
    `clear`, keys) deleted, as an int, and `landed`: False when storage could not be
    reached and the invalidation was queued. A queued invalidation is retried in the
    background until it lands (`await store.wait_invalidations()` waits for that); until
    then this process serves nothing from the cache."""

    landed: bool

    def __new__(cls, deleted: int, landed: bool = True) -> Invalidated:
        made = super().__new__(cls, deleted)
        made.landed = landed
        return made


#: One queued invalidation: (indexes, keys), or None for "clear everything under the prefix".
Item = tuple[list[str], list[str]] | None


class Invalidations:
    """The invalidations of one store (`store.invalidations`), with the queue of those
    that failed."""

    __slots__ = (
        "_retrying",
        "backend",
        "finished",
        "health",
        "keyspace",
        "near",
        "pending",
        "prefix",
    )

    def __init__(
        self, backend: Backend, health: Health, near: NearCache | None, keyspace: KeySpace
    ) -> None:
        self.backend = backend
        self.health = health
        self.near = near
        self.keyspace = keyspace
        self.prefix = keyspace.start
        #: Invalidations that failed while storage was unreachable, replayed before any read.
        self.pending: list[Item] = []
        #: Invalidations that finished (or failed and were queued): a read that started
        #: before one finished is never shared with a read that starts after it, and a
        #: request never joins a run of the endpoint that started before (see `Flights`).
        self.finished = 0
        self._retrying: asyncio.Task[None] | None = None

    async def run(self, indexes: list[str], keys: list[str]) -> Invalidated:
        """Delete `keys` and every entry listed in `indexes`; how many entries existed."""
        try:
            return await self._run(indexes, keys)
        finally:
            self.finished += 1

    async def _run(self, indexes: list[str], keys: list[str]) -> Invalidated:
        if self.pending:
            await self.replay()
        try:
            deleted = await self._invalidate((indexes, keys))
        except Exception as exc:
            self.health.failed(exc)
            self._queue((indexes, keys))
            return Invalidated(0, landed=False)
        near = self.near
        if near is not None:
            for key in keys:
                near.discard(key)
            # Entries found through the indexes: wait for Redis's notifications of them.
            await near.sync(max(getattr(self.backend, "timeout", 0.0), 1.0))
        if not self.health.healthy:
            self.health.succeeded()
        return Invalidated(deleted)

    async def clear(self) -> Invalidated:
        """Delete every key under the prefix; how many were deleted. Without a prefix on
        shared storage (Redis), `ConfigError`: other programs' keys would go too."""
        try:
            return await self._clear()
        finally:
            self.finished += 1

    async def _clear(self) -> Invalidated:
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
            return Invalidated(0, landed=False)
        if self.near is not None:
            self.near.flush()
        self.pending.clear()  # everything they would delete is gone
        return Invalidated(deleted)

    async def replay(self) -> bool:
        """Replay queued invalidations; True when none are left. Safe to run from several
        tasks at once (a request's read, the background retry): an item leaves the queue
        once, after it ran."""
        if not self.pending:
            return True
        while self.pending:
            item = self.pending[0]
            try:
                if item is None:
                    await self.backend.clear(self.prefix)
                else:
                    await self._invalidate(item)
            except Exception as exc:
                self.health.failed(exc)
                return False
            if self.pending and self.pending[0] is item:
                self.pending.pop(0)
        if self.near is not None:
            await self.near.sync(max(getattr(self.backend, "timeout", 0.0), 1.0))
        if not self.health.healthy:
            self.health.succeeded()
        logger.info("INVALIDATIONS_REPLAYED: queued invalidations ran; caching resumed.")
        return True

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until no invalidation is queued (every one landed); False when some are
        still queued after `timeout` seconds (None: as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def stop(self) -> None:
        """Stop the background retry (the store is closing; the queue stays)."""
        task, self._retrying = self._retrying, None
        if task is not None and not task.done():
            with contextlib.suppress(RuntimeError):  # its loop is closed already
                task.get_loop().call_soon_threadsafe(task.cancel)

    def _retry_later(self) -> None:
        """Make sure a background task retries the queue on the running loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop to run on: the next read replays the queue
        task = self._retrying
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._retrying = loop.create_task(self._retry())

    async def _retry(self) -> None:
        delay = _RETRY_FIRST_S
        while self.pending:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)
            with contextlib.suppress(Exception):  # `on_error="raise"`: nobody to raise to
                if await self.replay():
                    return

    async def _invalidate(self, item: tuple[list[str], list[str]]) -> int:
        indexes, keys = item
        return await self.backend.invalidate(indexes, keys, self.keyspace.generations(indexes))

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
            "FAILED_TO_INVALIDATE: %s did not answer; %d invalidation(s) queued, retried in "
            "the background; nothing is served from the cache until they land.",
            self.health.name,
            len(self.pending),
        )
        self._retry_later()

"""Concurrent reads of one key share one read: on a hot key, the requests that arrive while
its entry is being read from the backend await that read (one round trip, one decode, one
decoded `Entry` shared read-only) instead of sending their own.

A read never joins one that may return what an invalidation removed: only a read started
since the last invalidation finished (`Invalidations.finished`) or the last write of the key
is joined. So once `invalidate*()` or a write returned, every read that starts sees its
effect."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Callable, Generic, TypeVar

__all__ = ["SharedReads"]

T = TypeVar("T")


class _Read(Generic[T]):
    """One read in progress: its future, its loop, and the invalidations finished before
    it started."""

    __slots__ = ("finished", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, finished: int) -> None:
        self.loop = loop
        self.finished = finished
        self.future: asyncio.Future[T] = loop.create_future()


class SharedReads:
    """The reads in progress of one store (`store.entries.shared`), by key. `invalidations`
    counts the invalidations that finished (its `finished`)."""

    __slots__ = ("_running", "invalidations", "joined")

    def __init__(self, invalidations: Any) -> None:
        self.invalidations = invalidations
        self._running: dict[str, _Read[Any]] = {}
        #: Reads that awaited another's instead of their own (for tests and benches).
        self.joined = 0

    async def read(self, key: str, read: Callable[[str], Awaitable[T]]) -> T:
        """`read(key)`, or the result of the same read already in progress on this event
        loop (started after the last invalidation finished and the last write of `key`)."""
        loop = asyncio.get_running_loop()
        finished = self.invalidations.finished
        running = self._running.get(key)
        if running is not None and running.loop is loop and running.finished == finished:
            self.joined += 1
            future = running.future
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.cancelled():
                    raise  # this request was cancelled
            # The read it joined was cancelled (its client left): read on its own.
            return await read(key)
        mine: _Read[T] = _Read(loop, finished)
        self._running[key] = mine
        try:
            value = await read(key)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                mine.future.cancel()
            else:
                mine.future.set_exception(exc)
                mine.future.exception()  # retrieved: whoever joined gets it too
            raise
        finally:
            if self._running.get(key) is mine:
                del self._running[key]
        mine.future.set_result(value)
        return value

    def forget(self, key: str) -> None:
        """A write of `key` returned: reads that start from now on do not join one that
        started before it."""
        self._running.pop(key, None)

"""Single flight: the misses of one key in one process share one endpoint run (and, with
`lock_timeout`, one run in the whole deployment, behind a short Redis lock), a miss whose
read raced a run that just stored the key reads the entry instead of running again, and a
stale entry is refreshed by one background run at a time.

A request joins a run only when both took their lease under the same invalidations (the
same `basis`: what the key held, the generations' stamp, and how many invalidations this
process finished), so a request that starts after `invalidate*()` returned never gets the
answer of a run that read its data before."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from oxcache.backends.base import Backend
from oxcache.health import Health
from oxcache.keys import KeySpace

__all__ = ["Flights"]

_MAX_LANDED = 10_000  # keys remembered as landed before the memory starts over
_MAX_REFRESHING = 10_000
_REFRESH_GIVE_UP_S = 60.0


class Flights:
    """The runs in progress in this process, for one store (`store.flights`), and the
    cross-worker miss lock (`lock_ms` > 0)."""

    __slots__ = (
        "_inflight",
        "_landed",
        "_refreshing",
        "backend",
        "health",
        "keyspace",
        "lock_ms",
    )

    def __init__(self, backend: Backend, health: Health, keyspace: KeySpace, lock_ms: int) -> None:
        self.backend = backend
        self.health = health
        self.keyspace = keyspace
        self.lock_ms = lock_ms
        # key -> the future of the run computing it (its result: what was stored, or None)
        # and the basis it started under.
        self._inflight: dict[str, tuple[asyncio.Future[Any], Any]] = {}
        # key -> when a run last stored it (time.monotonic()).
        self._landed: dict[str, float] = {}
        # key -> when its background refresh started (time.monotonic()).
        self._refreshing: dict[str, float] = {}

    def landed_since(self, key: str, since: float) -> bool:
        """Whether a run stored `key` at or after `since` (a request's read time)."""
        landed = self._landed.get(key)
        return landed is not None and landed >= since

    def running(self, key: str, basis: Any = None) -> asyncio.Future[Any] | None:
        """The run of `key` in progress on this event loop that started under `basis`
        (what the request's own lease found), if any."""
        item = self._inflight.get(key)
        if item is None:
            return None
        flight, started_under = item
        if flight.get_loop() is asyncio.get_running_loop() and started_under == basis:
            return flight
        return None

    def start(self, key: str, basis: Any = None) -> asyncio.Future[Any]:
        """Record a run of `key` under `basis`; its future is resolved by `finish`. It
        replaces, for requests to come, a run that started under another basis."""
        flight = asyncio.get_running_loop().create_future()
        self._inflight[key] = (flight, basis)
        return flight

    def finish(self, key: str, flight: asyncio.Future[Any], stored: Any = None) -> None:
        """End the run `flight` of `key`: the requests waiting on it get `stored` (None:
        nothing was stored, they run the endpoint themselves)."""
        item = self._inflight.get(key)
        if item is not None and item[0] is flight:
            del self._inflight[key]
        if not flight.done():
            flight.set_result(stored)
        if stored is not None:
            if len(self._landed) >= _MAX_LANDED:
                self._landed.clear()
            self._landed[key] = time.monotonic()

    def begin_refresh(self, key: str) -> bool:
        """Claim the background refresh of `key`; False when one is running already. A
        claim that never ran (the client left before the background task) is given up
        after a minute rather than blocking refreshes forever."""
        started = self._refreshing.get(key)
        now = time.monotonic()
        if started is not None and started >= now - _REFRESH_GIVE_UP_S:
            return False
        if len(self._refreshing) > _MAX_REFRESHING:
            self._refreshing.clear()
        self._refreshing[key] = now
        return True

    def end_refresh(self, key: str) -> None:
        """The refresh of `key` is over."""
        self._refreshing.pop(key, None)

    async def acquire(self, key: str, token: bytes) -> bool:
        """Try to take the miss lock of `key`; True also when storage fails (run anyway)."""
        if not self.health.available():
            return True
        try:
            return await self.backend.acquire(self.keyspace.lock_name(key), token, self.lock_ms)
        except Exception as exc:
            self.health.failed(exc)
            return True

    async def holder(self, key: str) -> bytes | None:
        """The token holding the miss lock of `key` (None: free, or storage failed)."""
        if not self.health.available():
            return None
        try:
            return await self.backend.get(self.keyspace.lock_name(key))
        except Exception as exc:
            self.health.failed(exc)
            return None

    async def release(self, key: str, token: bytes) -> None:
        """Release the miss lock of `key` if this token still holds it."""
        if not self.health.available():
            return
        try:
            await self.backend.release(self.keyspace.lock_name(key), token)
        except Exception as exc:
            self.health.failed(exc)

"""How a `ClusterBackend`'s calls reach the cluster: only on a slot map redis-py has loaded
(reloaded in the background after a node failed, or did not answer in time), and at most
`max_connections` at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from oxcache.backends._bound import bounded

__all__ = ["SlotMap"]


class SlotMap:
    """The slot map of one `redis.asyncio.cluster.RedisCluster` client, as its calls use it."""

    def __init__(self, client: Any, timeout: float, max_connections: int) -> None:
        self.client = client
        self.timeout = timeout
        self.permits = asyncio.Semaphore(max_connections)
        self.reloading: asyncio.Task[Any] | None = None

    def ready(self) -> None:
        """Raise at once while redis-py has to reload the slot map (before the first command,
        and after a node failed), and reload it in the background.

        Reloading asks a node for the slot map and the command table and connects to every
        primary: several round trips, more than `timeout` allows a request. A request that
        found the map stale is served as a miss (the circuit opens for `retry_after`) while
        the reload runs, each of its socket operations bounded by the socket timeout
        (`backstop(timeout)`, about a second for the default 50 ms).
        """
        if not getattr(self.client, "_initialize", False):
            return
        if self.reloading is None or self.reloading.done():
            self.reloading = asyncio.ensure_future(self.client.initialize())
            self.reloading.add_done_callback(_retrieve)
        raise RedisConnectionError("Redis Cluster: reloading the slot map")

    def reload_later(self) -> None:
        """A node did not answer: have redis-py reload the slot map (in `ready`). redis-py
        asks for a reload itself on the errors it sees, but a command that `bounded`
        cancelled on a node that hangs (stopped, partitioned) never gets to see one: without
        this, every command would go on to the dead primary after its replica took over."""
        request = getattr(self.client, "_request_refresh", None)
        if request is not None:
            request()
        else:  # redis-py without it: the flag its own error paths set
            self.client._initialize = True

    @asynccontextmanager
    async def guarded(self, first_load: bool = False) -> AsyncIterator[None]:
        """Any cluster operation: on a loaded slot map (see `ready`), under a permit, and a
        failure to reach a node asks for a reload of the slot map. With `first_load` (an
        invalidation, called by the application rather than on a request), a client that
        never loaded the slot map (a store used without `async with`) loads it first."""
        if first_load and self.client.nodes_manager.default_node is None:
            await self.client.initialize()
        self.ready()
        async with self.permit():
            try:
                yield
            except (RedisConnectionError, RedisTimeoutError, OSError):
                self.reload_later()
                raise

    @asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        """One of the `max_connections` calls that may run at once (waiting at most
        `timeout` for it)."""
        if self.permits.locked():
            await bounded(self.permits.acquire(), self.timeout)
        else:
            await self.permits.acquire()
        try:
            yield
        finally:
            self.permits.release()


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a background reload's failure as seen; the next request tries again."""
    if not task.cancelled():
        task.exception()

"""How a `ClusterBackend`'s calls reach the cluster: only on a slot map redis-py has loaded
(reloaded in the background after a node failed, or stayed silent), and at most
`max_connections` at a time.

A node that refuses or drops a connection has the slot map reloaded at once (redis-py asks
for it on its own errors too). A node that is only late is not: under load a healthy node
misses the 50 ms `timeout` now and then, and a reload then (several round trips, a new
connection to every primary, and every call refused until it is done) turned each slow
answer into a second of misses and more load, more slow answers, more reloads (the fleet
bench served 78-86% of its requests uncached on a cluster, against 0-9% on one Redis). So a
timeout asks for a reload only once the node has been silent for `patience` (at least a
second, ten timeouts): it timed out, and no call has had an answer from it since. A node that
hangs (stopped, partitioned) gets there within about a second of calls, as a killed one does
at its first, and its calls then keep asking, so the reload after its replica is promoted
finds the new primary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
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
        #: How long a node may stay silent (timing out, answering nothing) before the slot
        #: map is reloaded on its account.
        self.patience = max(1.0, 10 * timeout)
        #: Nodes (by name) that timed out and have answered no call since: when they first
        #: did (`time.monotonic()`).
        self.silent: dict[str, float] = {}

    def ready(self) -> None:
        """Raise at once while redis-py has to reload the slot map (before the first command,
        and after a node failed or stayed silent), and reload it in the background.

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
    async def guarded(
        self, first_load: bool = False, keys: Sequence[str] | None = None
    ) -> AsyncIterator[None]:
        """Any cluster operation: on a loaded slot map (see `ready`), under a permit. A
        failure to reach a node asks for a reload of the slot map, and so does a timeout
        of a node silent for `patience` (see the module's docstring); `keys` are those the
        operation reads or writes, which name its nodes (None: unknown, any timeout asks).
        With `first_load` (an invalidation, called by the application rather than on a
        request), a client that never loaded the slot map (a store used without `async
        with`) loads it first."""
        if first_load and self.client.nodes_manager.default_node is None:
            await self.client.initialize()
        self.ready()
        async with self.permit():
            try:
                yield
                if self.silent and keys is not None:
                    self.answered(keys)
            except RedisTimeoutError:
                if self.timed_out(keys):
                    self.reload_later()
                raise
            except (RedisConnectionError, OSError):
                self.reload_later()
                raise

    def nodes(self, keys: Sequence[str]) -> set[str] | None:
        """The names of the primaries holding `keys` on the current slot map (None when
        it has no node for one of them)."""
        names = set()
        try:
            for key in keys:
                node = self.client.get_node_from_key(key)
                if node is None:
                    return None
                names.add(node.name)
        except (RedisError, RedisClusterException):  # a slot the map does not cover
            return None
        return names

    def answered(self, keys: Sequence[str]) -> None:
        """A call on `keys` had its answer: their nodes are not silent."""
        for name in self.nodes(keys) or ():
            self.silent.pop(name, None)

    def timed_out(self, keys: Sequence[str] | None) -> bool:
        """A call on `keys` timed out: whether one of its nodes has now been silent for
        `patience` (or the call's nodes are unknown), so the slot map should be reloaded."""
        names = None if keys is None else self.nodes(keys)
        if not names:
            return True
        now = time.monotonic()
        if len(self.silent) > 1000:  # node names of a topology long gone
            self.silent.clear()
        silent_since = [self.silent.setdefault(name, now) for name in names]
        return now - min(silent_since) >= self.patience

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

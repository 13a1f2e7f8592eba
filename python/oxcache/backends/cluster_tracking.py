"""Redis client-side caching on a Redis Cluster: one broadcast `Tracker` per primary, kept in
step with the cluster's topology. The near cache (`oxcache.near`) listens through it, made by
`ClusterBackend.track()`.

Redis tracks keys per node, and in broadcast mode a node announces every change of a key
under the prefix whatever slot it is in: so trackers on every primary hear every write,
delete, expiry and flush of the cluster, including those of a slot being migrated (MIGRATE
deletes on the source and restores on the target, both announced). What has to be followed
is the set of primaries: a replica promoted by a failover, a node that joins (it may import
slots at any time) or leaves. `CLUSTER SHARDS` is read from any node every `heartbeat`
seconds, and at once after a tracking connection is lost; every primary it lists that is not
failed gets a tracker, and the trackers of the others are stopped.

Until every one of those primaries is subscribed, the cluster counts as not subscribed:
`on_lost` runs as soon as any tracking connection drops, a new primary appears or an old one
goes (the near cache flushes its L1 and bypasses it), and `on_subscribed` only once all are
subscribed again (it flushes once more, and uses the L1 again). A change on any node thus
either reaches the L1 as one message on that node's connection, or the L1 is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Callable

from oxcache.backends.tracking import LoopTask, Tracker, connection_for

__all__ = ["ClusterTracker", "parse_shards"]

logger = logging.getLogger("oxcache")

#: A node's address as the cluster announces it: (host, port).
Address = tuple[str, int]

_POLL_MIN_S = 0.05


class _Node:
    """What a `Tracker` needs of a pool: how to make connections to one node, made like the
    cluster client's own (TLS, AUTH, timeouts of the URL)."""

    def __init__(self, template: Any, host: str, port: int) -> None:
        self.connection_class = template.connection_class
        self.connection_kwargs = {**template.connection_kwargs, "host": host, "port": port}


def parse_shards(reply: Any, asked: Address) -> set[Address]:
    """The primaries of a RESP2 `CLUSTER SHARDS` reply that are not failed, empty ones
    included (they may be importing slots). A node that announces no address is the node
    asked (`asked`), as redis-py reads `CLUSTER SLOTS`."""
    found: set[Address] = set()
    for shard in reply or ():
        fields = dict(zip(shard[::2], shard[1::2], strict=False))
        for node in fields.get(b"nodes") or ():
            info = dict(zip(node[::2], node[1::2], strict=False))
            # Redis and Valkey say "fail" (a node the cluster agreed is down).
            if info.get(b"role") != b"master" or info.get(b"health") in (b"fail", b"failed"):
                continue
            host = b""
            for name in (b"endpoint", b"ip"):
                value = info.get(name) or b""
                if value and value != b"?":
                    host = value
                    break
            port = info.get(b"port") or info.get(b"tls-port")
            if port is None:
                continue
            found.add((host.decode() if host else asked[0], int(port)))
    return found


class ClusterTracker(LoopTask):
    """Hears of every change any primary of a Redis Cluster makes to a key starting with
    `prefix`: a `Tracker` on each primary, following failovers, slot moves and nodes that
    join or leave. The same interface and callbacks as `Tracker` (`backends/tracking.py`),
    where "subscribed" means every primary is.

    Args:
        client: The `redis.asyncio.cluster.RedisCluster` whose nodes are asked for the
            topology, and whose connection options the tracking connections copy.
        prefix: Keys starting with this are tracked; empty tracks every key.
        timeout: Seconds to connect and to wait for each setup reply (at least 1 s to
            connect).
        heartbeat: Seconds of silence after which each tracker pings its node; also how
            often the topology is read again.
    """

    def __init__(
        self,
        client: Any,
        prefix: str,
        *,
        timeout: float,
        heartbeat: float,
        on_subscribed: Callable[[], None],
        on_changed: Callable[[list[str] | None], None],
        on_lost: Callable[[Exception | None], None],
    ) -> None:
        super().__init__()
        self.client = client
        self.prefix = prefix
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.on_subscribed = on_subscribed
        self.on_changed = on_changed
        self.on_lost = on_lost
        #: One tracker per primary of the last topology read; `subscribed` when every
        #: one is.
        self.trackers: dict[Address, Tracker] = {}
        #: How many times the set of primaries changed (the first read included).
        self.changes = 0
        self._known = False
        self._poke: asyncio.Event | None = None
        self._conn: Any = None
        self._asked: Address | None = None
        self._silent: set[Address] = set()  # nodes that did not answer the last time

    def __repr__(self) -> str:
        return (
            f"ClusterTracker(prefix={self.prefix!r}, primaries={sorted(self.trackers)}, "
            f"subscribed={self.subscribed})"
        )

    def _run(self) -> Coroutine[Any, Any, None]:
        return self._follow()

    def _on_new_loop(self) -> None:
        self._conn = None  # a connection of the old loop is of no use here
        self._poke = asyncio.Event()

    async def stop(self) -> None:
        """Stop every tracker and the topology reads; `on_lost(None)` runs."""
        await self._cancel()
        trackers, self.trackers = list(self.trackers.values()), {}
        self._known = False
        for tracker in trackers:
            await tracker.stop()
        await self._close()
        self._lost(None)

    async def sync(self, timeout: float) -> bool:
        """Wait until every announcement any primary sent before now has been passed to
        `on_changed` (a PING barrier on every tracking connection at once: a change is
        announced by the node that made it, which only the caller's routing knew). False
        when that cannot be shown for one of them within `timeout` seconds."""
        trackers = list(self.trackers.values())
        if not trackers:
            return True
        done = await asyncio.gather(*(tracker.sync(timeout) for tracker in trackers))
        return all(done)

    # -- the callbacks of each node's tracker ----------------------------------------------

    def _subscribed(self) -> None:
        if self.subscribed or not self._known or not self.trackers:
            return
        if all(tracker.subscribed for tracker in self.trackers.values()):
            self.subscribed = True
            self.on_subscribed()
            if self._event is not None:
                self._event.set()

    def _lost(self, error: Exception | None) -> None:
        self.subscribed = False
        if self._event is not None:
            self._event.clear()
        if self._poke is not None and error is not None:
            self._poke.set()  # a failover, perhaps: read the topology again now
        self.on_lost(error)

    # -- the topology -----------------------------------------------------------------------

    async def _follow(self) -> None:
        for tracker in self.trackers.values():
            tracker.start()  # after a restart on another loop
        assert self._poke is not None
        poke = self._poke
        while True:
            poke.clear()
            try:
                await self._apply(await self._read())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Keep the trackers there are: each says for itself when its node is gone.
                logger.debug("near cache: could not read the cluster topology (%s)", exc)
                if not self._known:
                    self.on_lost(exc)  # nothing tracked yet: the near cache says why
            await asyncio.sleep(_POLL_MIN_S)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(poke.wait(), self.heartbeat)

    async def _apply(self, primaries: set[Address]) -> None:
        """Track exactly `primaries`: any change empties the L1 (`on_lost`) until every one
        of them is subscribed."""
        if self._known and primaries == set(self.trackers):
            return
        template = self._template()
        self._known = True
        self.changes += 1
        gone = [self.trackers.pop(a) for a in list(self.trackers) if a not in primaries]
        new = [address for address in primaries if address not in self.trackers]
        logger.debug("near cache: cluster primaries now %s", sorted(primaries))
        self._lost(None)
        # Every new primary is in `trackers`, not subscribed, before anything is awaited: a
        # tracker that subscribes meanwhile cannot make the cluster look subscribed without it.
        for address in new:
            self.trackers[address] = Tracker(
                _Node(template, *address),
                self.prefix,
                timeout=self.timeout,
                heartbeat=self.heartbeat,
                on_subscribed=self._subscribed,
                on_changed=self.on_changed,
                on_lost=self._lost,
            )
        for address in new:
            self.trackers[address].start()
        for tracker in gone:
            await tracker.stop()
        self._subscribed()  # when only trackers went, the others are subscribed already

    def _template(self) -> Any:
        """A node of the client, whose connection options the new connections copy."""
        manager = self.client.nodes_manager
        for node in (*manager.startup_nodes.values(), *self.client.get_nodes()):
            return node
        raise ConnectionError("the cluster client knows no node")

    def _candidates(self) -> list[Address]:
        """Nodes to ask for the topology: the last one that answered first, then the
        primaries tracked, then every node the client knows; those that failed to answer
        last (a stopped node costs a whole wait)."""
        manager = self.client.nodes_manager
        found = [] if self._asked is None else [self._asked]
        found += list(self.trackers)
        for node in (*self.client.get_nodes(), *manager.startup_nodes.values()):
            found.append((node.host, int(node.port)))
        ordered = dict.fromkeys(found)
        return [a for a in ordered if a not in self._silent] + [
            a for a in ordered if a in self._silent
        ]

    async def _read(self) -> set[Address]:
        """The primaries, as the first node that answers says (`CLUSTER SHARDS`)."""
        error: Exception = ConnectionError("no node of the cluster to ask")
        for address in self._candidates():
            try:
                primaries = await asyncio.wait_for(
                    self._ask(address), max(self.timeout, self.heartbeat)
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
                self._silent.add(address)
                await self._close()
                continue
            self._silent.discard(address)
            remap = getattr(self.client.nodes_manager, "remap_host_port", None)
            if remap is not None:
                primaries = {(str(h), int(p)) for h, p in (remap(*a) for a in primaries)}
            if primaries:
                return primaries
        raise error

    async def _ask(self, address: Address) -> set[Address]:
        if self._conn is None or self._asked != address:
            await self._close()
            conn = connection_for(
                _Node(self._template(), *address), timeout=self.timeout, heartbeat=self.heartbeat
            )
            self._conn, self._asked = conn, address
            await conn.connect()
        await self._conn.send_command("CLUSTER", "SHARDS")
        return parse_shards(await self._conn.read_response(), address)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

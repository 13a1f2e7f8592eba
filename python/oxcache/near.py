"""The near cache: an in-process L1 of decoded entries in front of Redis, kept coherent
across workers by Redis's own client-side caching machinery.

A `NearCache` holds decoded entries keyed by their Redis key, bounded by entry count, by
bytes (the sum of the entries' encoded sizes) and by `max_ttl`, how long an entry may be
served without asking Redis again. It is only used while its listener is subscribed: one
dedicated connection runs `CLIENT TRACKING ON REDIRECT <itself> BCAST PREFIX <prefix:>` and
`SUBSCRIBE __redis__:invalidate`, so Redis announces every change of every key under the
prefix (writes, deletes, invalidation scripts, expiry, FLUSHDB), whoever made it. When that
connection drops, or stops answering its heartbeat, the L1 is flushed and bypassed until it
is subscribed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import OrderedDict
from typing import Any

from oxcache._core import Entry
from oxcache.errors import ConfigError

logger = logging.getLogger("oxcache")

_CHANNEL = b"__redis__:invalidate"
_MAX_READING = 4096
_RECONNECT_MIN_S = 0.05
_RECONNECT_MAX_S = 1.0


class NearCache:
    """An in-process L1 cache in front of a Redis store: `Cache(url=..., near=NearCache())`.

    A read answered by the L1 does no Redis I/O at all. Entries keep the absolute expiry of
    their envelope and are served at most `max_ttl` seconds after they were read from Redis.
    Every change Redis makes to a key under the store's prefix, by any worker or any other
    client, removes the key from every worker's L1 (Redis client tracking in broadcast mode):
    the coherence delay is one message on an open connection. The worker that invalidates
    waits for its own notifications before `invalidate*()` returns, so it never reads its
    own stale entry. While the tracking connection is down or not yet subscribed, the L1 is
    empty and every read goes to Redis.

    Args:
        max_entries: At most this many entries; the least recently used go first.
        max_bytes: At most this many bytes, counted as the entries' encoded sizes; an entry
            larger than this is never held.
        max_ttl: Seconds an entry may be served from the L1 before Redis is asked again,
            whatever the notifications say (the bound if a notification were ever lost).
        heartbeat: Seconds of silence after which the listener pings Redis; no answer within
            another `heartbeat` counts as a dropped connection (flush, bypass, reconnect).
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 32 * 1024 * 1024,
        max_ttl: float = 10.0,
        heartbeat: float = 1.0,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ConfigError("NearCache bounds max_entries and max_bytes must be positive")
        if not (0 < max_ttl < math.inf) or not (0 < heartbeat < math.inf):
            raise ConfigError("NearCache max_ttl and heartbeat must be positive seconds")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_ttl = float(max_ttl)
        self.heartbeat = float(heartbeat)
        # key -> (entry, encoded size, monotonic deadline: min(freshness end, read + max_ttl))
        self._data: OrderedDict[str, tuple[Entry, int, float]] = OrderedDict()
        # key -> the (generation, token) pairs a held entry was read under (entries of
        # indexed endpoints only), and generation -> the token last read from Redis: a
        # notification of a generation drops its token, and so every entry read under it.
        self._under: dict[str, tuple[tuple[str, bytes], ...]] = {}
        self._generations: dict[str, bytes] = {}
        self._bytes = 0
        # Reads from Redis in flight: key -> token. A notification for the key (or a flush)
        # removes the token, so a value read before a change can never be kept after it.
        self._reading: dict[str, object] = {}
        #: Whether the L1 is in use: the tracking connection is subscribed.
        self.ready = False
        self.flushes = 0
        self.notifications = 0
        self._owner: object | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Any = None
        self._pongs: dict[bytes, asyncio.Future[None]] = {}
        self._subscribed: asyncio.Event | None = None
        self._down_logged = False

    def __repr__(self) -> str:
        return (
            f"NearCache(max_entries={self.max_entries}, max_bytes={self.max_bytes}, "
            f"max_ttl={self.max_ttl}, ready={self.ready})"
        )

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        """The sum of the held entries' encoded sizes."""
        return self._bytes

    # -- the map -------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        """The entry held for `key` if it is still fresh, within `max_ttl`, and every
        generation it was read under still has the token it had, else None."""
        item = self._data.get(key)
        if item is None:
            return None
        if item[2] <= time.monotonic():
            self._remove(key)
            return None
        under = self._under.get(key)
        if under is not None:
            known = self._generations
            for name, token in under:
                if known.get(name) != token:
                    self._remove(key)
                    return None
        self._data.move_to_end(key)
        return item[0]

    def begin(self, key: str, generations: tuple[str, ...] = ()) -> object | None:
        """Note that `key` is about to be read from Redis (with the tokens of
        `generations`); the token `put` needs, or None when the L1 is not in use."""
        if not self.ready:
            return None
        if len(self._reading) >= _MAX_READING:
            self._reading.clear()  # forgotten reads only lose the chance to fill the L1
        token = object()
        self._reading[key] = token
        for name in generations:
            self._reading[name] = token
        return token

    def end(self, key: str, token: object, generations: tuple[str, ...] = ()) -> None:
        """Forget a read that found nothing to keep."""
        for name in (key, *generations):
            if self._reading.get(name) is token:
                del self._reading[name]

    def put(
        self,
        key: str,
        entry: Entry,
        size: int,
        token: object,
        generations: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        """Hold `entry`, read from Redis after `begin(key, ...)` gave `token`, together with
        the tokens its `generations` had, unless the key or one of them changed (or the L1
        was flushed) since."""
        reading = self._reading
        fresh = reading.get(key) is token
        for name, _ in generations:
            fresh = fresh and reading.get(name) is token
        self.end(key, token, tuple(name for name, _ in generations))
        if not fresh or not self.ready or size > self.max_bytes:
            return
        left_s = (entry.expires_ms - time.time_ns() // 1_000_000) / 1000.0
        if left_s <= 0:
            return  # stale entries are the store's business (stale-while-revalidate)
        if generations:
            if len(self._generations) >= 4 * self.max_entries:
                self._generations.clear()  # held entries read under them go too, on `get`
            self._generations.update(generations)
        self._remove(key)
        self._data[key] = (entry, size, time.monotonic() + min(left_s, self.max_ttl))
        if generations:
            self._under[key] = generations
        self._bytes += size
        while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
            self._remove(next(iter(self._data)))

    def _remove(self, key: str) -> None:
        item = self._data.pop(key, None)
        if item is not None:
            self._bytes -= item[1]
            self._under.pop(key, None)

    def discard(self, key: str) -> None:
        """Drop `key` (an entry, or a generation and every entry read under it) and any
        read of it in flight."""
        self._remove(key)
        self._generations.pop(key, None)
        self._reading.pop(key, None)

    def flush(self) -> None:
        """Drop everything, and every read in flight."""
        self._data.clear()
        self._under.clear()
        self._generations.clear()
        self._reading.clear()
        self._bytes = 0
        self.flushes += 1

    # -- the listener --------------------------------------------------------------------

    def attach(self, owner: object) -> None:
        """Bind this near cache to the store that owns it (one store per near cache)."""
        if self._owner is not None and self._owner is not owner:
            raise ConfigError("a NearCache belongs to one Cache; make one per store")
        self._owner = owner

    def start(self, pool: Any, prefix: str, connect_timeout: float) -> None:
        """Start the listener task on the running loop (no-op if it runs already)."""
        loop = asyncio.get_running_loop()
        old = self._task
        if old is not None and not old.done():
            if self._loop is loop:
                return
            # Entered again from another event loop: one listener, on the newest loop.
            with contextlib.suppress(RuntimeError):
                old.get_loop().call_soon_threadsafe(old.cancel)
        self._loop = loop
        self._subscribed = asyncio.Event()
        self._task = loop.create_task(self._listen(pool, prefix, connect_timeout))

    async def stop(self) -> None:
        """Stop the listener and empty the L1."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            if task.get_loop() is asyncio.get_running_loop():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            else:  # started on another loop: cancel it there, if that loop still runs
                with contextlib.suppress(RuntimeError):
                    task.get_loop().call_soon_threadsafe(task.cancel)
        self._down()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the listener is subscribed (at most `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while not self.ready and time.monotonic() < deadline:
            event = self._subscribed
            if event is None or self._loop is not asyncio.get_running_loop():
                await asyncio.sleep(0.01)
                continue
            try:
                await asyncio.wait_for(event.wait(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                break
        return self.ready

    async def sync(self, timeout: float) -> None:
        """Return once every notification Redis sent before now has been applied, so this
        worker never reads what it just invalidated. Flushes the L1 when that cannot be
        shown within `timeout` seconds (or from another event loop)."""
        conn = self._conn
        if not self.ready or conn is None or not conn.is_connected:
            return  # not in use: nothing is held
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self.flush()
            return
        # Redis queues a change's notifications on the tracking connection before the
        # change's reply is sent, so the answer to a PING sent now comes after them.
        token = uuid.uuid4().hex.encode()
        done: asyncio.Future[None] = loop.create_future()
        self._pongs[token] = done
        try:
            await conn.send_packed_command(conn.pack_command("PING", token), check_health=False)
            await asyncio.wait_for(done, timeout)
        except Exception:
            self.flush()
        finally:
            self._pongs.pop(token, None)

    def _down(self) -> None:
        self.ready = False
        self._conn = None
        self.flush()
        for waiter in self._pongs.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("near cache listener stopped"))
        self._pongs.clear()
        if self._subscribed is not None:
            self._subscribed.clear()

    async def _listen(self, pool: Any, prefix: str, connect_timeout: float) -> None:
        delay = _RECONNECT_MIN_S
        while True:
            conn = None
            try:
                kwargs = {
                    name: value
                    for name, value in pool.connection_kwargs.items()
                    # redis-py's maintenance notifications need RESP3, which this avoids.
                    if not name.startswith(("maint_notifications", "orig_"))
                }
                # RESP2 with a redirect to itself: the notifications arrive as pub/sub
                # messages on this very connection, which redis-py reads like any reply.
                kwargs.update(
                    protocol=2,
                    decode_responses=False,  # keys and message kinds as bytes, whatever the client
                    socket_timeout=max(connect_timeout, self.heartbeat),
                    socket_connect_timeout=max(connect_timeout, 1.0),
                    retry=None,
                )
                conn = pool.connection_class(**kwargs)
                await conn.connect()
                wait = max(connect_timeout, self.heartbeat)
                await conn.send_command("CLIENT", "ID")
                client_id = await conn.read_response(timeout=wait)
                if client_id is None:
                    raise ConnectionError("no answer to CLIENT ID")
                tracking: list[Any] = ["CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST"]
                if prefix:
                    tracking += ["PREFIX", prefix]
                await conn.send_command(*tracking)
                if await conn.read_response(timeout=wait) is None:
                    raise ConnectionError("no answer to CLIENT TRACKING")
                await conn.send_command("SUBSCRIBE", _CHANNEL)
                if await conn.read_response(timeout=wait) is None:
                    raise ConnectionError("no answer to SUBSCRIBE")
                if not self._current():
                    return  # replaced by a listener on another loop
                self.flush()
                self._conn = conn
                self.ready = True
                assert self._subscribed is not None
                self._subscribed.set()
                delay = _RECONNECT_MIN_S
                if self._down_logged:
                    self._down_logged = False
                    logger.info("NEAR_CACHE_SUBSCRIBED: invalidations flow again; L1 in use.")
                await self._read_loop(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._down_logged:
                    self._down_logged = True
                    logger.warning(
                        "NEAR_CACHE_UNSUBSCRIBED: the invalidation connection failed (%s: %s); "
                        "the L1 is flushed and bypassed until it is back.",
                        type(exc).__name__,
                        exc,
                    )
            finally:
                if self._current():
                    self._down()
                if conn is not None:
                    await conn.disconnect(nowait=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_S)

    def _current(self) -> bool:
        """Whether the running task is this near cache's listener (or it is stopping)."""
        return self._task is None or self._task is asyncio.current_task()

    async def _read_loop(self, conn: Any) -> None:
        pinged = False
        while True:
            message = await conn.read_response(timeout=self.heartbeat)
            if message is None:
                if pinged:
                    raise ConnectionError(f"no answer to PING within {self.heartbeat} s")
                await conn.send_command("PING", b"", check_health=False)
                pinged = True
                continue
            pinged = False
            self._apply(message)

    def _apply(self, message: Any) -> None:
        if not isinstance(message, list) or not message:
            return
        kind = message[0]
        if kind == b"message" and len(message) == 3:
            keys = message[2]
            self.notifications += 1
            if keys is None:  # FLUSHDB, FLUSHALL: everything changed
                self.flush()
                return
            for raw in keys:
                self.discard(raw.decode("utf-8", "surrogateescape"))
        elif kind == b"pong" and len(message) == 2:
            waiter = self._pongs.pop(message[1], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

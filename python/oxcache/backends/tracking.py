"""Redis client-side caching in broadcast mode: one connection that hears of every change
Redis makes to keys under a prefix. The near cache (`oxcache.near`) listens through it;
this module is the only place that speaks the tracking protocol.

A `Tracker` opens a dedicated connection, made like the pool's own ones, and runs
`CLIENT TRACKING ON REDIRECT <itself> BCAST PREFIX <prefix>` and
`SUBSCRIBE __redis__:invalidate`, so Redis announces every change of every key under the
prefix (writes, deletes, invalidation scripts, expiry, FLUSHDB), whoever made it. When
that connection drops, or stops answering its heartbeat, the tracker says so and connects
again, backing off from 50 ms to 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Coroutine
from typing import Any, Callable, Protocol

__all__ = ["Listener", "LoopTask", "Tracker", "connection_for"]

_CHANNEL = b"__redis__:invalidate"
_RECONNECT_MIN_S = 0.05
_RECONNECT_MAX_S = 1.0


class Listener(Protocol):
    """What the near cache drives: a `Tracker` on one Redis, or a `ClusterTracker`
    (`backends/cluster_tracking.py`) holding one per primary of a Redis Cluster."""

    @property
    def subscribed(self) -> bool:
        """Whether every change under the prefix is being announced."""
        ...

    def start(self) -> None:
        """Start listening on the running loop (no-op if it listens there already)."""

    async def stop(self) -> None:
        """Stop listening; `on_lost(None)` runs."""

    async def wait(self, timeout: float) -> bool:
        """Wait until subscribed (at most `timeout` seconds)."""
        ...

    async def sync(self, timeout: float) -> bool:
        """Wait until every announcement sent before now has been passed on."""
        ...


def connection_for(pool: Any, *, timeout: float, heartbeat: float) -> Any:
    """A new connection, not yet connected, made like `pool`'s (anything with redis-py's
    `connection_class` and `connection_kwargs`: a pool, a cluster node): RESP2, replies as
    bytes, no retries, each read waiting at most `max(timeout, heartbeat)`."""
    kwargs = {
        name: value
        for name, value in pool.connection_kwargs.items()
        # redis-py's maintenance notifications need RESP3, which this avoids.
        if not name.startswith(("maint_notifications", "orig_"))
    }
    # RESP2: with a redirect to itself, the announcements arrive as pub/sub messages on the
    # tracking connection, which redis-py reads like any reply.
    kwargs.update(
        protocol=2,
        decode_responses=False,  # keys and message kinds as bytes, whatever the client
        socket_timeout=max(timeout, heartbeat),
        socket_connect_timeout=max(timeout, 1.0),
        retry=None,
    )
    return pool.connection_class(**kwargs)


class LoopTask:
    """What a `Listener` shares with the other: one background task (`_run()`) on the event
    loop that started it, moved to the newest loop when started from another, and an
    event set while `subscribed`."""

    def __init__(self) -> None:
        #: Whether every change is being announced.
        self.subscribed = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def _run(self) -> Coroutine[Any, Any, None]:
        raise NotImplementedError

    def _on_new_loop(self) -> None:
        """Make afresh what is bound to the loop, before the task runs on a new one."""

    def start(self) -> None:
        """Start on the running loop (no-op if it runs there already)."""
        loop = asyncio.get_running_loop()
        old = self._task
        if old is not None and not old.done():
            if self._loop is loop:
                return
            # Started again from another event loop: one task, on the newest loop.
            with contextlib.suppress(RuntimeError):
                old.get_loop().call_soon_threadsafe(old.cancel)
        self._loop = loop
        self._event = asyncio.Event()
        self._on_new_loop()
        self._task = loop.create_task(self._run())

    async def _cancel(self) -> None:
        """Cancel the task, here or on the loop it runs on (if that loop still runs)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            if task.get_loop() is asyncio.get_running_loop():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            else:
                with contextlib.suppress(RuntimeError):
                    task.get_loop().call_soon_threadsafe(task.cancel)

    async def wait(self, timeout: float) -> bool:
        """Wait until subscribed (at most `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while not self.subscribed and time.monotonic() < deadline:
            event = self._event
            if event is None or self._loop is not asyncio.get_running_loop():
                await asyncio.sleep(0.01)
                continue
            try:
                await asyncio.wait_for(event.wait(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                break
        return self.subscribed


class Tracker(LoopTask):
    """Hears of every change Redis makes to a key starting with `prefix`; made, not yet
    started, by `RedisBackend.track()`.

    The callbacks run on the event loop the tracker was started on: `on_subscribed()` once
    the subscription is in place (every change from then on is announced),
    `on_changed(keys)` for each announcement (`None`: every key changed, as after FLUSHDB),
    and `on_lost(error)` when announcements may be missed from then on, because the
    connection failed (`error`) or the tracker stopped (`None`).

    Args:
        pool: The redis-py connection pool whose connection class and options the tracking
            connection copies.
        prefix: Keys starting with this are tracked; empty tracks every key.
        timeout: Seconds to connect and to wait for each setup reply (at least 1 s to
            connect).
        heartbeat: Seconds of silence after which the tracker pings Redis; no answer within
            another `heartbeat` counts as a dropped connection.
    """

    def __init__(
        self,
        pool: Any,
        prefix: str,
        *,
        timeout: float,
        heartbeat: float,
        on_subscribed: Callable[[], None],
        on_changed: Callable[[list[str] | None], None],
        on_lost: Callable[[Exception | None], None],
    ) -> None:
        super().__init__()
        self.pool = pool
        self.prefix = prefix
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.on_subscribed = on_subscribed
        self.on_changed = on_changed
        self.on_lost = on_lost
        self._conn: Any = None
        self._pongs: dict[bytes, asyncio.Future[None]] = {}

    def __repr__(self) -> str:
        return f"Tracker(prefix={self.prefix!r}, subscribed={self.subscribed})"

    def _run(self) -> Coroutine[Any, Any, None]:
        return self._listen()

    async def stop(self) -> None:
        """Stop listening and close the connection; `on_lost(None)` runs."""
        await self._cancel()
        self._down(None)

    async def sync(self, timeout: float) -> bool:
        """Wait until every announcement Redis sent before now has been passed to
        `on_changed`. True once that is shown, or when not subscribed (`on_lost` has run,
        nothing waits on announcements); False when it cannot be shown within `timeout`
        seconds, or from another event loop than the tracker's."""
        conn = self._conn
        if conn is None or not conn.is_connected:
            return True
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            return False
        # Redis queues a change's announcements on the tracking connection before the
        # change's reply is sent, so the answer to a PING sent now comes after them.
        token = uuid.uuid4().hex.encode()
        done: asyncio.Future[None] = loop.create_future()
        self._pongs[token] = done
        try:
            await conn.send_packed_command(conn.pack_command("PING", token), check_health=False)
            await asyncio.wait_for(done, timeout)
        except Exception:
            return False
        finally:
            self._pongs.pop(token, None)
        return True

    def _down(self, error: Exception | None) -> None:
        self.subscribed = False
        self._conn = None
        for waiter in self._pongs.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("tracking connection closed"))
        self._pongs.clear()
        if self._event is not None:
            self._event.clear()
        self.on_lost(error)

    async def _connect(self) -> Any:
        """A new connection, subscribed to the announcements of keys under the prefix."""
        conn = connection_for(self.pool, timeout=self.timeout, heartbeat=self.heartbeat)
        try:
            await conn.connect()
            wait = max(self.timeout, self.heartbeat)
            await conn.send_command("CLIENT", "ID")
            client_id = await conn.read_response(timeout=wait)
            if client_id is None:
                raise ConnectionError("no answer to CLIENT ID")
            tracking: list[Any] = ["CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST"]
            if self.prefix:
                tracking += ["PREFIX", self.prefix]
            await conn.send_command(*tracking)
            if await conn.read_response(timeout=wait) is None:
                raise ConnectionError("no answer to CLIENT TRACKING")
            await conn.send_command("SUBSCRIBE", _CHANNEL)
            if await conn.read_response(timeout=wait) is None:
                raise ConnectionError("no answer to SUBSCRIBE")
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        return conn

    async def _listen(self) -> None:
        delay = _RECONNECT_MIN_S
        while True:
            conn = None
            error: Exception | None = None
            try:
                conn = await self._connect()
                if not self._current():
                    return  # replaced by a listener on another loop
                self._conn = conn
                self.subscribed = True
                self.on_subscribed()
                assert self._event is not None
                self._event.set()
                delay = _RECONNECT_MIN_S
                await self._read_loop(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            finally:
                if self._current():
                    self._down(error)
                if conn is not None:
                    await conn.disconnect(nowait=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_S)

    def _current(self) -> bool:
        """Whether the running task is this tracker's listener (or it is stopping)."""
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
            if keys is None:  # FLUSHDB, FLUSHALL: everything changed
                self.on_changed(None)
            else:
                self.on_changed([raw.decode("utf-8", "surrogateescape") for raw in keys])
        elif kind == b"pong" and len(message) == 2:
            waiter = self._pongs.pop(message[1], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

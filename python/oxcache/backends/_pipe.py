"""Auto-pipelined reads: the GETs of concurrent requests share one connection and one write.

A hit is one GET, and with `redis.asyncio` each GET takes a pooled connection, writes, and
awaits its own reply through several layers of coroutines: about three quarters of a hit's
time on a small body (benches/RESULTS.md, "What the profile showed"). `ReadPipe` keeps one
connection for reads, made and authenticated by the client's own pool class (TLS, AUTH,
SELECT, RESP3 all come from the URL as usual), then takes over its transport with a small
protocol: every GET issued during one event-loop tick goes out in a single write, and the
replies, which Redis sends in order, complete the waiting futures straight from
`data_received`, with no task or coroutine per reply.

Failure rules are those of the rest of the backend: every read is bounded by `timeout`
(one timer per pipe, armed for the oldest outstanding read); a read that times out, a lost
connection or a reply that cannot be parsed fails every outstanding read and drops the
connection, and the next read connects again. The store turns those failures into misses
and opens its circuit breaker, as with any other Redis error.

The timeout measures Redis, not this process's event loop. Under load one loop turn can
take longer than the timeout (64 concurrent requests of a few hundred microseconds each),
and a plain timer then fires before the loop has even looked at the socket, where the reply
has long been waiting: a healthy Redis would look like an outage, and the store would open
its circuit and serve uncached, which adds load. So a read's clock starts when its command
is written, not when it is queued, and a timer that finds the oldest read past its deadline
only suspects it: the read fails if the loop then polls the socket (two more loop turns,
which covers asyncio's order, timers after I/O, and libuv's, timers before I/O) and still
no byte of a reply has come. A large reply still streaming in is not late either: a read
times out only once Redis has sent nothing for `timeout` since it was written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from oxcache.backends._bound import bounded

__all__ = ["ReadPipe", "encode_get", "encode_getrange", "encode_mget"]

_CRLF = b"\r\n"


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


_GET = b"*2\r\n$3\r\nGET\r\n"
_GETRANGE = b"*4\r\n$8\r\nGETRANGE\r\n"


def encode_get(key: bytes) -> bytes:
    """`GET key` in RESP."""
    return _GET + _bulk(key)


def encode_getrange(key: bytes, start: int, end: int) -> bytes:
    """`GETRANGE key start end` in RESP."""
    return _GETRANGE + _bulk(key) + _bulk(b"%d" % start) + _bulk(b"%d" % end)


def encode_mget(keys: list[bytes]) -> bytes:
    """`MGET key...` in RESP."""
    return b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1) + b"".join(_bulk(k) for k in keys)


def _array(buf: bytearray, pos: int, eol: int, end: int) -> tuple[Any, int, int]:
    """The array reply (of bulk strings and nils, as MGET gives) whose header line ends at
    `eol`: (items, where the next reply starts, 0), or (None, 0, bytes needed from `pos`)
    when it has not all come yet."""
    count = int(buf[pos + 1 : eol])
    if count < 0:
        return None, eol + 2, 0
    items: list[bytes | None] = []
    at = eol + 2
    for _ in range(count):
        line = buf.find(_CRLF, at)
        if line < 0:
            return None, 0, 0
        kind = buf[at]
        if kind == 36:  # b"$"
            size = int(buf[at + 1 : line])
            if size < 0:
                items.append(None)
                at = line + 2
                continue
            stop = line + 2 + size
            if stop + 2 > end:
                return None, 0, stop + 2 - pos
            items.append(bytes(buf[line + 2 : stop]))
            at = stop + 2
        elif kind == 95:  # b"_": RESP3 null
            items.append(None)
            at = line + 2
        else:
            raise ValueError(f"unexpected item type {chr(kind)!r} in an array reply")
    return items, at, 0


class _ReplyProtocol(asyncio.Protocol):
    """Parses bulk-string replies (RESP2 and RESP3) and hands each to the oldest waiter."""

    def __init__(self, pipe: ReadPipe, transport: asyncio.Transport, writer: Any) -> None:
        self.pipe = pipe
        self.transport = transport
        self.writer = writer  # kept alive: a collected StreamWriter closes its transport
        self.buf = bytearray()
        self.need = 0  # bytes the reply being received needs in `buf` before parsing again

    def data_received(self, data: bytes) -> None:
        pipe = self.pipe
        if pipe.transport is not self.transport:
            return  # a connection the pipe already dropped
        pipe.last_data = pipe.loop.time()
        pipe.chunks += 1
        buf = self.buf
        buf += data
        if len(buf) < self.need:
            return
        waiting = pipe.waiting
        pos = 0
        end = len(buf)
        try:
            while pos < end:
                eol = buf.find(_CRLF, pos)
                if eol < 0:
                    break
                kind = buf[pos]
                if kind == 36:  # b"$": a bulk string, or $-1 for nil
                    size = int(buf[pos + 1 : eol])
                    if size < 0:
                        value: Any = None
                        pos = eol + 2
                    else:
                        stop = eol + 2 + size
                        if stop + 2 > end:
                            self.need = stop + 2 - pos
                            break
                        value = bytes(buf[eol + 2 : stop])
                        pos = stop + 2
                elif kind == 95:  # b"_": RESP3 null
                    value = None
                    pos = eol + 2
                elif kind == 45:  # b"-": an error reply
                    value = ResponseError(buf[pos + 1 : eol].decode("utf-8", "replace"))
                    pos = eol + 2
                elif kind == 42:  # b"*": an array (MGET)
                    value, after, need = _array(buf, pos, eol, end)
                    if not after:
                        self.need = need
                        break
                    pos = after
                else:
                    raise ValueError(f"unexpected reply type {chr(kind)!r}")
                self.need = 0
                future = waiting.popleft()[0]
                if not future.done():
                    if isinstance(value, ResponseError):
                        future.set_exception(value)
                    else:
                        future.set_result(value)
        except Exception as exc:  # a reply we cannot parse: nothing after it can be trusted
            pipe.fail(RedisConnectionError(f"unreadable reply from Redis: {exc}"))
            return
        if pos:
            del buf[:pos]
            if not waiting:
                pipe.disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pipe.transport is self.transport:
            self.pipe.fail(RedisConnectionError("connection to Redis lost"), lost=True)


class ReadPipe:
    """One auto-pipelined read connection of a `RedisBackend`, bound to one event loop."""

    def __init__(self, pool: Any, timeout: float, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.timeout = timeout
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.connecting: asyncio.Future[None] | None = None
        # [future, deadline] of every read sent or queued, oldest first; the deadline is
        # 0.0 until the read's command is written.
        self.waiting: deque[list[Any]] = deque()
        self.out: list[bytes] = []
        self.unsent: list[list[Any]] = []  # the entries of `waiting` whose commands are in `out`
        self.timer: asyncio.TimerHandle | None = None
        # When bytes last came (loop time) and how many times they came (a count, because a
        # loop's clock may be coarser than the gap between two chunks), and what the check of
        # an overdue read saw of it.
        self.last_data = 0.0
        self.chunks = 0
        self.suspect: list[Any] | None = None  # the overdue read being checked
        self.suspect_seen = 0
        self.suspect_turns = 0
        # A connection was lost or timed out: the pool's idle connections, made before the
        # outage, are likely dead too.
        self.dropped = False

    async def request(self, command: bytes) -> Any:
        """Send one command (with the others of this tick) and return its reply."""
        loop = self.loop
        if self.transport is None:
            await self._connect(loop)
        future: asyncio.Future[Any] = loop.create_future()
        entry = [future, 0.0]
        self.waiting.append(entry)
        if not self.out:
            loop.call_soon(self._flush)
        self.out.append(command)
        self.unsent.append(entry)
        return await future

    async def request_many(self, commands: list[bytes]) -> list[Any]:
        """Send several commands in the same write and return their replies, in order."""
        loop = self.loop
        if self.transport is None:
            await self._connect(loop)
        futures = []
        for command in commands:
            future: asyncio.Future[Any] = loop.create_future()
            entry = [future, 0.0]
            self.waiting.append(entry)
            if not self.out:
                loop.call_soon(self._flush)
            self.out.append(command)
            self.unsent.append(entry)
            futures.append(future)
        replies = await asyncio.gather(*futures, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.connecting is None:
            self.connecting = loop.create_future()
            try:
                conn = self.pool.make_connection()
                await bounded(conn.connect(), self.timeout)
                writer = conn._writer
                transport = writer.transport
                # The connection object must forget the streams, or its __del__ closes them.
                conn._writer = conn._reader = None
                transport.set_protocol(_ReplyProtocol(self, transport, writer))
                if self.dropped:
                    # Redis answers again: drop the pool's idle connections from before the
                    # outage now, or the first write after it fails on one and reopens the
                    # circuit the read just closed.
                    self.dropped = False
                    with contextlib.suppress(Exception):  # best effort
                        await bounded(self.pool.disconnect(inuse_connections=False), self.timeout)
                self.transport = transport
                self.connecting.set_result(None)
            except BaseException as exc:
                self.connecting.set_exception(
                    exc
                    if isinstance(exc, Exception)
                    else RedisConnectionError("connect interrupted")
                )
                self.connecting.exception()  # retrieved: waiters get it; nobody else must
                raise
            finally:
                self.connecting = None
        else:
            await asyncio.shield(self.connecting)
        if self.transport is None:
            raise RedisConnectionError("connection to Redis lost while connecting")

    def _flush(self) -> None:
        out, self.out = self.out, []
        unsent, self.unsent = self.unsent, []
        if self.transport is None:
            return
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        deadline = self.loop.time() + self.timeout
        for entry in unsent:
            entry[1] = deadline
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        """The oldest read may be overdue: re-arm for it, or start checking it."""
        self.timer = None
        if not self.waiting:
            return
        head = self.waiting[0]
        if not head[1]:
            return  # not written yet: `_flush` arms the timer when it is
        now = self.loop.time()
        # Replies come in order, so bytes that came after the oldest read was written are
        # its reply streaming in: the read is late only once Redis has been silent for
        # `timeout`.
        deadline = max(head[1], self.last_data + self.timeout)
        if now < deadline:
            self.timer = self.loop.call_at(deadline, self._expire)
            return
        # Past its deadline, but the loop may not have read the socket since: suspect it,
        # and decide once the loop has polled (see the module docstring).
        self.suspect = head
        self.suspect_seen = self.chunks
        self.suspect_turns = 2
        self.timer = self.loop.call_at(now, self._confirm)

    def _confirm(self) -> None:
        self.timer = None
        waiting = self.waiting
        if not waiting:
            self.suspect = None
            return
        head = waiting[0]
        now = self.loop.time()
        if head is not self.suspect or self.chunks != self.suspect_seen:
            # Redis answered meanwhile: the suspect's reply, or part of it.
            self.suspect = None
            if head[1]:
                self.timer = self.loop.call_at(now, self._expire)
            return
        self.suspect_turns -= 1
        if self.suspect_turns:
            self.timer = self.loop.call_at(now, self._confirm)
            return
        self.suspect = None
        self.fail(RedisTimeoutError("Timeout reading from Redis"))

    def disarm(self) -> None:
        """No read is outstanding: the timer has nothing to watch."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def fail(self, exc: Exception, lost: bool = False) -> None:
        """Fail every outstanding read with `exc` and drop the connection."""
        transport, self.transport = self.transport, None
        if transport is not None:
            self.dropped = True
        self.disarm()
        self.out = []
        self.unsent = []
        self.suspect = None
        waiting, self.waiting = self.waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(exc)
        if transport is not None and not lost:
            transport.abort()

    def close(self) -> None:
        """Drop the connection; outstanding reads fail. Safe from any thread."""
        if self.loop.is_closed():
            self.transport = None  # its socket went with the loop
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.fail(RedisConnectionError("closed"))
            self.dropped = False
        else:
            self.loop.call_soon_threadsafe(self.fail, RedisConnectionError("closed"))

"""Auto-pipelined reads (backends/_pipe.py): concurrent GETs share one connection and one
write; a dead, stuck or restarted Redis fails them like any other Redis error (the store
serves uncached), and the pipe connects again afterwards. All against real redis-servers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
import redis

from oxcache.backends._pipe import ReadPipe, _ReplyProtocol, encode_get
from oxcache.backends.redis import RedisBackend
from tests.conftest import RedisServer

T = TypeVar("T")


Runner = Callable[[Coroutine[Any, Any, T]], T]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner[Any]:
    """Each scenario on asyncio's own loop and on uvloop (uvicorn's loop when installed):
    the pipe drives transports itself, and the two loops order timers and I/O differently."""
    if request.param == "uvloop":
        import uvloop

        return uvloop.run  # type: ignore[no-any-return]
    return asyncio.run


def _clients(url: str) -> int:
    info = redis.Redis.from_url(url).info("clients")
    return int(info["connected_clients"])


def test_concurrent_reads_share_one_connection_and_keep_their_order(
    redis_url: str, run: Runner[Any]
) -> None:
    prefix = "pipe-" + uuid.uuid4().hex[:8] + ":"
    backend = RedisBackend(redis_url, timeout=5.0)
    assert backend.auto_pipeline
    values = {f"{prefix}{i}": os.urandom(i * 37 % 5000 + 1) for i in range(300)}
    values[prefix + "big"] = os.urandom(3 * 1024 * 1024)  # arrives in many chunks

    async def scenario() -> tuple[list[Any], list[Any], int]:
        for key, value in values.items():
            await backend.set(key, value, 60_000)
        before = _clients(redis_url)
        keys = [*values, prefix + "missing"] * 2
        got = await asyncio.gather(*(backend.get(k) for k in keys))
        heads = await asyncio.gather(*(backend.get_head(k, 16) for k in keys))
        after = _clients(redis_url)
        await backend.delete(list(values))
        await backend.close()
        return got, heads, after - before

    got, heads, extra = run(scenario())
    expected = [*values.values(), None] * 2
    assert got == expected
    assert heads == [None if v is None else v[:16] for v in expected]
    assert extra <= 1  # 1200 reads, at most one new connection (the pipe's own)


def test_a_cancelled_read_does_not_shift_the_replies_of_the_others(
    redis_url: str, run: Runner[Any]
) -> None:
    backend = RedisBackend(redis_url, timeout=5.0)

    async def scenario() -> list[Any]:
        for i in range(50):
            await backend.set(f"pipe-c:{i}", b"v%d" % i, 60_000)
        tasks = [asyncio.ensure_future(backend.get(f"pipe-c:{i}")) for i in range(50)]
        await asyncio.sleep(0)
        tasks[10].cancel()
        tasks[11].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        results.append(await backend.get("pipe-c:7"))
        await backend.delete([f"pipe-c:{i}" for i in range(50)])
        await backend.close()
        return results

    results = run(scenario())
    for i, result in enumerate(results[:50]):
        if i in (10, 11):
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == b"v%d" % i
    assert results[50] == b"v7"


def test_one_backend_serves_successive_event_loops(
    redis_url: str, redis_client: redis.Redis, run: Runner[Any]
) -> None:
    # (Pooled commands of redis.asyncio are bound to one loop; the pipe makes one per loop.)
    backend = RedisBackend(redis_url, timeout=5.0)
    redis_client.set("pipe-loop", b"x", px=60_000)

    async def read() -> bytes | None:
        return await backend.get("pipe-loop")

    async def read_and_close() -> bytes | None:
        value = await backend.get("pipe-loop")
        await backend.close()
        return value

    assert run(read()) == b"x"
    assert run(read_and_close()) == b"x"  # a new loop, a new pipe
    redis_client.delete("pipe-loop")


def test_reads_fail_when_redis_dies_and_recover_when_it_returns(
    own_redis: RedisServer, run: Runner[Any]
) -> None:
    backend = RedisBackend(own_redis.url, timeout=2.0)

    async def scenario() -> None:
        await backend.set("k", b"v", 600_000)
        assert await backend.get("k") == b"v"
        assert own_redis.proc is not None
        own_redis.proc.kill()
        own_redis.proc.wait(timeout=10)
        results = await asyncio.gather(
            *(backend.get("k") for _ in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, redis.ConnectionError) for r in results), results
        with pytest.raises(redis.ConnectionError):  # connecting again fails too
            await backend.get("k")
        own_redis.start()  # empty
        assert await backend.get("k") is None
        await backend.set("k", b"w", 600_000)  # the pool's stale connections were dropped
        assert await backend.get("k") == b"w"
        await backend.close()

    run(scenario())


def test_a_stuck_redis_fails_every_outstanding_read_within_the_timeout(
    own_redis: RedisServer, run: Runner[Any]
) -> None:
    backend = RedisBackend(own_redis.url, timeout=0.2)

    async def scenario() -> float:
        await backend.set("k", b"v", 600_000)
        assert await backend.get("k") == b"v"
        assert own_redis.proc is not None
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(backend.get("k") for _ in range(20)), return_exceptions=True
            )
            elapsed = time.monotonic() - started
            assert all(isinstance(r, redis.TimeoutError) for r in results), results
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        assert await backend.get("k") == b"v"  # a fresh connection once it answers
        await backend.close()
        return elapsed

    elapsed = run(scenario())
    # The requirement is a bound: the timeout plus generous slack for a loaded machine.
    assert elapsed < 0.2 + 1.5, elapsed


def _busy(seconds: float) -> None:
    """Hold the event loop for `seconds`, as one turn does under load (other requests' work)."""
    time.sleep(seconds)


def test_a_busy_event_loop_is_not_taken_for_a_slow_redis(redis_url: str, run: Runner[Any]) -> None:
    # Under load one loop turn can outlast the timeout. Redis answers in well under a
    # millisecond here, so none of these reads may time out, however late the loop gets
    # to the socket.
    key = "pipe-busy-" + uuid.uuid4().hex[:8]
    backend = RedisBackend(redis_url, timeout=0.05)

    async def scenario() -> None:
        await backend.set(key, b"v", 600_000)
        assert await backend.get(key) == b"v"  # connected
        # Blocked after the GET was queued and before it was written.
        read = asyncio.ensure_future(backend.get(key))
        await asyncio.sleep(0)  # the read queues its GET; the write is the next turn's
        _busy(0.2)
        assert await read == b"v"
        # Blocked after the GET was written: the reply waits in the socket meanwhile.
        read = asyncio.ensure_future(backend.get(key))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        _busy(0.2)
        assert await read == b"v"
        # Many reads, with a turn longer than the timeout between each of them.
        reads = []
        for _ in range(10):
            reads.append(asyncio.ensure_future(backend.get(key)))
            await asyncio.sleep(0)
            _busy(0.06)
        assert await asyncio.gather(*reads) == [b"v"] * 10
        await backend.close()

    run(scenario())


def test_a_busy_loop_neither_opens_the_circuit_nor_serves_uncached(
    redis_url: str, run: Runner[Any]
) -> None:
    from oxcache import Cache

    store = Cache(redis_url, prefix="pipe-busy-" + uuid.uuid4().hex[:8], timeout=0.05)

    async def scenario() -> None:
        await store.write("k", b"not an entry", 600_000)
        for _ in range(5):
            read = asyncio.ensure_future(store.read("k"))
            await asyncio.sleep(0)
            _busy(0.12)
            await read
        assert store.stats()["errors"] == 0
        assert store.health.available()
        await store.close()

    run(scenario())


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True


def test_replies_split_at_every_byte_are_parsed_in_order(run: Runner[Any]) -> None:
    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        pipe = ReadPipe(None, 5.0, loop)
        transport: Any = _Transport()
        pipe.transport = transport
        protocol = _ReplyProtocol(pipe, transport, None)
        tasks = [asyncio.ensure_future(pipe.request(encode_get(b"k%d" % i))) for i in range(5)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert b"".join(transport.written).count(b"GET") == 5  # one write for the tick
        assert len(transport.written) == 1
        stream = b"$5\r\nhello\r\n$-1\r\n_\r\n-WRONGTYPE no\r\n$0\r\n\r\n"
        for i in range(len(stream)):
            protocol.data_received(stream[i : i + 1])
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = run(scenario())
    assert results[:3] == [b"hello", None, None]
    assert isinstance(results[3], redis.ResponseError) and "WRONGTYPE" in str(results[3])
    assert results[4] == b""


def test_an_unparseable_reply_fails_the_reads_and_drops_the_connection(run: Runner[Any]) -> None:
    async def scenario() -> tuple[Any, bool]:
        loop = asyncio.get_running_loop()
        pipe = ReadPipe(None, 5.0, loop)
        transport: Any = _Transport()
        pipe.transport = transport
        protocol = _ReplyProtocol(pipe, transport, None)
        task = asyncio.ensure_future(pipe.request(encode_get(b"k")))
        await asyncio.sleep(0)
        protocol.data_received(b":1\r\n")  # an integer: never a GET's or an MGET's reply
        result = await asyncio.gather(task, return_exceptions=True)
        return result[0], transport.aborted

    result, aborted = run(scenario())
    assert isinstance(result, redis.ConnectionError) and aborted


def test_an_overdue_read_fails_but_a_reply_still_streaming_in_does_not(run: Runner[Any]) -> None:
    async def scenario() -> tuple[bool, Any, Any]:
        loop = asyncio.get_running_loop()
        pipe = ReadPipe(None, 0.03, loop)
        transport: Any = _Transport()
        pipe.transport = transport
        silent = asyncio.ensure_future(pipe.request(encode_get(b"k")))
        await asyncio.sleep(0.1)  # overdue, and not a byte came
        silent_failed = silent.done()
        pipe.transport = transport  # the failure dropped the connection: a new one
        protocol = _ReplyProtocol(pipe, transport, None)
        streaming = asyncio.ensure_future(pipe.request(encode_get(b"big")))
        reply = b"$20\r\n" + b"x" * 20 + b"\r\n"
        # One byte every 5 ms: the whole reply takes 4x the timeout, Redis is never silent
        # for a whole timeout.
        for i in range(len(reply)):
            loop.call_later(0.005 * (i + 1), protocol.data_received, reply[i : i + 1])
        return silent_failed, await asyncio.gather(silent, return_exceptions=True), await streaming

    silent_failed, silent, streamed = run(scenario())
    assert silent_failed
    assert isinstance(silent[0], redis.TimeoutError)
    assert streamed == b"x" * 20


def test_bounded_takes_an_answer_that_reaches_the_loop_with_the_deadline(
    run: Runner[Any],
) -> None:
    """A reply read in the loop turn the deadline fires in still needs a turn or two to
    reach the command (uvloop runs timers before I/O): that is Redis on time, not late."""
    from oxcache.backends._bound import bounded

    async def answers_on_the_deadline(deadline: float) -> str:
        loop = asyncio.get_running_loop()
        arrived = loop.create_future()
        loop.call_at(deadline, arrived.set_result, None)  # the reply, read on the deadline
        await arrived
        await asyncio.sleep(0)  # through the layers of a client
        return "answer"

    async def scenario() -> str:
        loop = asyncio.get_running_loop()
        return await bounded(answers_on_the_deadline(loop.time() + 0.05), 0.05)

    assert run(scenario()) == "answer"


def test_bounded_lets_the_callers_cancellation_through(run: Runner[Any]) -> None:
    from oxcache.backends._bound import bounded

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # a command unwinding after its timeout
            raise

    async def scenario() -> tuple[bool, bool]:
        with pytest.raises(redis.TimeoutError):
            await bounded(slow_to_stop(), 0.05)
        caller = asyncio.ensure_future(bounded(slow_to_stop(), 0.05))
        await asyncio.sleep(0.1)  # timed out; the command is unwinding
        caller.cancel()
        try:
            await caller
        except asyncio.CancelledError:
            cancelled = True
        except redis.TimeoutError:
            cancelled = False  # the caller's cancellation swallowed
        early = asyncio.ensure_future(bounded(slow_to_stop(), 5.0))
        await asyncio.sleep(0.01)
        early.cancel()
        try:
            await early
            early_cancelled = False
        except asyncio.CancelledError:
            early_cancelled = True
        await asyncio.sleep(0.3)
        return cancelled, early_cancelled

    assert run(scenario()) == (True, True)


def test_clear_on_a_stuck_redis_gives_up_within_the_bound(own_redis: RedisServer) -> None:
    backend = RedisBackend(own_redis.url, timeout=0.1)

    async def scenario() -> float:
        await backend.set("stuck:k", b"v", 600_000)
        assert own_redis.proc is not None
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                await backend.clear("stuck:")
            return time.monotonic() - started
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
            await backend.close()

    elapsed = asyncio.run(scenario())
    # The bound is `timeout` (restarted at most twice on a late timer), well under redis-py's
    # socket timeout, which is only a backstop here (1.3 s).
    assert elapsed < 1.0, elapsed

"""A timeout that measures Redis, not this process's event loop.

`asyncio.wait_for(aw, timeout)` fails when `timeout` seconds of wall time have passed, also
when the loop itself was too busy (other requests' work) to run the callbacks that would have
completed `aw` in time: under load a healthy Redis looks like an outage, the store opens its
circuit and serves uncached, which adds load. `bounded` gives up only when its timer fires
about on time (the loop was responsive, so Redis really is late); a timer that fires late by
more than half the timeout restarts the clock, at most twice, so a Redis that is really stuck
still costs at most about three timeouts plus the loop's own lag.

A timer that fires on time may still fire before the loop has handed over a reply that is
already in the socket: uvloop runs timers before polling for I/O, and a reply takes a turn
or two more to reach the command's task (more through a cluster pipeline's per-node tasks).
So `bounded` gives up only after a few more turns of the loop without the answer (as the
single-Redis read pipe polls the socket before it declares a read late, `_pipe.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["backstop", "bounded"]

T = TypeVar("T")

_RESTARTS = 2
# Loop turns a reply may need, past a deadline, to get from the socket to `aw`: one to read
# it, one for the command's task, two for a cluster pipeline's gather of per-node tasks.
_GRACE_TURNS = 4


def backstop(timeout: float) -> float:
    """The socket timeout to give redis-py when `bounded` enforces `timeout` itself: it only
    catches what `bounded` does not wrap, and must outlast `bounded`'s restarts."""
    return (_RESTARTS + 1) * timeout + 1.0


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a task's outcome as seen (a cancelled command's late error is nobody's)."""
    if not task.cancelled():
        task.exception()


async def bounded(aw: Awaitable[T], timeout: float) -> T:
    """Await `aw`; raise redis's `TimeoutError` (and cancel it) when Redis takes longer than
    `timeout` seconds of a responsive event loop. A cancellation of the caller cancels `aw`
    and propagates as usual."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(aw)
    deadline = loop.time() + timeout
    restarts = 0
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=max(deadline - loop.time(), 0.0))
            if done:
                return task.result()
            now = loop.time()
            if now - deadline > timeout / 2 and restarts < _RESTARTS:
                restarts += 1  # the timer itself was late: the loop, not Redis, was slow
                deadline = now + timeout
                continue
            break
        for _ in range(_GRACE_TURNS):
            await asyncio.sleep(0)
            if task.done():
                return task.result()
        task.cancel()
        # Let the command unwind (redis-py drops the connection it was using). Only the
        # caller's own cancellation can interrupt this wait, and it propagates.
        await asyncio.wait((task,))
    except BaseException:
        if not task.done():
            task.cancel()
        task.add_done_callback(_retrieve)
        raise
    _retrieve(task)
    raise RedisTimeoutError(f"Timeout: Redis did not answer within {timeout:g} s")

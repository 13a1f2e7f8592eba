"""Profile the hit path in process: `python benches/profile_hit.py [memory|redis|floor-a|floor-b]`.

Sends N hits through the same app as the benchmarks (benches/apps.py) under pyinstrument and
prints the call tree, so RESULTS.md can say where a hit's time goes. Needs a Redis URL in
REDIS_URL for the Redis targets (`make profile` starts one).
"""

from __future__ import annotations

import asyncio
import os
import sys

from pyinstrument import Profiler

from benches.apps import BUILDERS
from benches.asgi import call

N = int(os.environ.get("PROFILE_N", "5000"))


async def main(which: str) -> None:
    url = os.environ.get("REDIS_URL")
    library, backend = {
        "memory": ("oxcache", "memory"),
        "redis": ("oxcache", "redis"),
        "floor-a": ("floor-a", "memory"),
        "floor-b": ("floor-b", "redis"),
    }[which]
    target = BUILDERS[library][0](url if backend == "redis" else None)
    if target.setup:
        await target.setup()
    await call(target.app, "/small")
    await call(target.app, "/small")
    profiler = Profiler(interval=0.0002, async_mode="disabled")
    profiler.start()
    for _ in range(N):
        await call(target.app, "/small")
    profiler.stop()
    if target.teardown:
        await target.teardown()
    print(profiler.output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "memory"))

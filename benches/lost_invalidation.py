"""How long other workers serve invalidated data when Redis refuses writes during an
invalidation (docs/failure-modes.md). Two stores on one Redis stand for two workers: A
invalidates while Redis is paused for writes (`CLIENT PAUSE <ms> WRITE`) and then serves no
request; B requests every 5 ms and counts the answers with the old data, during the pause and
after it. Usage: python benches/lost_invalidation.py [PAUSE_MS ...]  (REDIS_URL names the
Redis, which must be the bench's own: the pause stops every client's writes)
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import httpx
import redis
from fastapi import FastAPI

from oxcache import Cache, cache

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def worker(data: dict[str, int], timeout: float) -> tuple[Cache, httpx.AsyncClient]:
    store = Cache(URL, prefix="bench-lost", timeout=timeout)
    app = FastAPI()

    @app.get("/v")
    @cache(expire=600, store=store, tags=["t"])
    async def v() -> dict[str, int]:
        return {"v": data["v"]}

    return store, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def measure(pause_ms: int) -> dict[str, Any]:
    raw = redis.Redis.from_url(URL)
    data = {"v": 1}
    a, http_a = worker(data, 0.05)
    b, http_b = worker(data, 2.0)
    async with a, b, http_a, http_b:
        await b.clear()
        await http_b.get("/v")
        await http_b.get("/v")
        raw.execute_command("CLIENT", "PAUSE", pause_ms, "WRITE")
        started = time.monotonic()
        data["v"] = 2
        result = await a.invalidate_tag("t")
        during = after = requests = 0
        last_stale = 0.0
        while time.monotonic() - started < pause_ms / 1000 + 2:
            response = await http_b.get("/v")
            requests += 1
            if response.json()["v"] == 1:
                last_stale = time.monotonic() - started
                if last_stale < pause_ms / 1000:
                    during += 1
                else:
                    after += 1
            await asyncio.sleep(0.005)
        landed = await a.wait_invalidations(5)
        await b.clear()
    raw.close()
    return {
        "pause_ms": pause_ms,
        "queued": not result.landed,
        "landed": landed,
        "requests": requests,
        "stale_during_pause": during,
        "stale_after_pause": after,
        "last_stale_after_pause_ms": round(max(last_stale * 1000 - pause_ms, 0)),
    }


if __name__ == "__main__":
    for pause in [int(a) for a in sys.argv[1:]] or [2000, 3300]:
        print(asyncio.run(measure(pause)))

"""One app worker for the near-cache coherence tests, run as its own process.

Usage: python tests/near_worker.py REDIS_URL PREFIX (a redis+cluster:// URL: on a cluster).
Reads one JSON command per line on stdin, answers one JSON line on stdout:
  {"op": "get", "path": "/item", "user": "u1"}     -> {"status", "v", "hit"}
  {"op": "refresh", "path": "/item"}               -> the same, after overwriting the entry
  {"op": "invalidate"} / {"op": "invalidate_user", "user": "u1"}
  {"op": "invalidate_tag"} / {"op": "clear"}       -> {"deleted": n}
  {"op": "stats"}                                  -> the store's stats() and "ready"
  {"op": "quit"}
The endpoints return the value of the Redis key PREFIX-db:v (outside the cache's prefix),
so every worker reads the same "database".
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Header

from oxcache import Cache, NearCache, cache


def build(url: str, prefix: str) -> tuple[FastAPI, Cache, Any]:
    store = Cache(url, prefix=prefix, near=NearCache(max_ttl=60.0), timeout=2.0)
    if url.startswith("redis+cluster://"):  # the "database" on the same cluster
        db: Any = aioredis.RedisCluster.from_url("redis://" + url.split("://", 1)[1])
    else:
        db = aioredis.Redis.from_url(url)
    app = FastAPI()

    def user_id(x_user: str = Header(default="anonymous")) -> str:
        return x_user

    @app.get("/item")
    @cache(expire=300, store=store, tags=["items"], refresh_on_no_cache=True)
    async def item() -> dict[str, Any]:
        return {"v": (await db.get(f"{prefix}-db:v") or b"").decode()}

    @app.get("/me")
    @cache(expire=300, store=store, per_user=user_id, refresh_on_no_cache=True)
    async def me(user: str = Depends(user_id)) -> dict[str, Any]:
        return {"user": user, "v": (await db.get(f"{prefix}-db:v") or b"").decode()}

    return app, store, (db, item)


async def main(url: str, prefix: str) -> None:
    app, store, (db, item) = build(url, prefix)
    loop = asyncio.get_running_loop()
    async with store:
        assert store.near is not None
        await store.near.wait_ready(10.0)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    break
                cmd = json.loads(line)
                op = cmd["op"]
                answer: dict[str, Any]
                if op in ("get", "refresh"):
                    headers = {"x-user": cmd.get("user", "anonymous")}
                    if op == "refresh":
                        headers["cache-control"] = "no-cache"
                    response = await client.get(cmd.get("path", "/item"), headers=headers)
                    answer = {
                        "status": response.status_code,
                        "v": response.json()["v"],
                        "hit": response.headers.get("x-fastapi-cache"),
                    }
                elif op == "invalidate":
                    answer = {"deleted": await store.invalidate(item)}
                elif op == "invalidate_user":
                    answer = {"deleted": await store.invalidate_user(cmd["user"])}
                elif op == "invalidate_tag":
                    answer = {"deleted": await store.invalidate_tag("items")}
                elif op == "clear":
                    answer = {"deleted": await store.clear()}
                elif op == "stats":
                    answer = {**store.stats(), "ready": store.near.ready}
                elif op == "quit":
                    break
                else:
                    answer = {"error": f"unknown op {op!r}"}
                sys.stdout.write(json.dumps(answer) + "\n")
                sys.stdout.flush()
    await db.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))

"""Migrating from fastapi-redis-cache: the app of its README, with one line changed.

Before (fastapi-redis-cache 0.2.5):

    from fastapi_redis_cache import FastApiRedisCache, cache

After: the import below. Nothing else changes. `tests/test_migration.py` runs this file
against a real Redis and on the in-memory store; docs/migrate-fastapi-redis-cache.md walks
through what differs on the wire (ETag format, key quoting, JSON encoding, the async client).

    REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.migrate_from_fastapi_redis_cache:app
"""

from __future__ import annotations

import datetime as dt
import os
import warnings

from fastapi import FastAPI, Request, Response

from oxcache import FastApiRedisCache, cache  # was: from fastapi_redis_cache import ...

LOCAL_REDIS_URL = "redis://127.0.0.1:6379"

app = FastAPI(title="FastAPI Redis Cache Example")

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # on_event, as that README writes it

    @app.on_event("startup")
    def startup() -> None:
        redis_cache = FastApiRedisCache()
        redis_cache.init(
            host_url=os.environ.get("REDIS_URL", LOCAL_REDIS_URL),
            prefix="myapi-cache",
            response_header="X-MyAPI-Cache",
            ignore_arg_types=[Request, Response],
        )


USERS = {1: "Ada", 2: "Linus"}


@app.get("/immutable_data")
@cache()
async def get_immutable_data() -> dict[str, object]:
    return {"success": True, "message": "this data can be cached indefinitely"}


@app.get("/dynamic_data")
@cache(expire=30)
def get_dynamic_data(request: Request, response: Response) -> dict[str, object]:
    return {"success": True, "message": "this data should only be cached temporarily"}


@app.get("/get_user")
@cache(expire=3600)
def get_user(id: int) -> dict[str, object]:
    return {"id": id, "name": USERS.get(id)}


@app.get("/search")
@cache(expire=60)
async def search(name: str, limit: int = 10) -> dict[str, object]:
    return {"name": name, "limit": limit, "day": dt.date(2024, 1, 2)}

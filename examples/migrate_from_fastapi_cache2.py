"""Migrating from fastapi-cache2: the same app, before (in comments) and after.

fastapi-cache2 0.2.2 configures a global backend and keys each call by an md5 of its
arguments; oxcache keys each call by its canonical arguments, so the usual reasons for a
`key_builder` become options. docs/migrate-fastapi-cache2.md has the whole mapping;
`tests/test_migration.py` runs this file against a real Redis and on the in-memory store.

    REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.migrate_from_fastapi_cache2:app
"""

from __future__ import annotations

import os

from fastapi import Depends, FastAPI, Header

from oxcache import Cache, cache, cached


# Before:
#     from fastapi_cache import FastAPICache
#     from fastapi_cache.backends.redis import RedisBackend
#     from fastapi_cache.decorator import cache
#     from redis import asyncio as aioredis
#
#     @asynccontextmanager
#     async def lifespan(_: FastAPI):
#         redis = aioredis.from_url(os.environ["REDIS_URL"])
#         FastAPICache.init(RedisBackend(redis), prefix="fastapi-cache")
#         yield
#
#     app = FastAPI(lifespan=lifespan)
#
class Session:
    """Stands in for a database session: a per-request object that must stay out of keys."""


def get_session() -> Session:
    return Session()


# After: one store, entered by the app's lifespan. `Cache(client=redis)` takes the
# redis.asyncio client you already have instead of a URL (oxcache never closes it).
store = Cache(
    url=os.environ.get("REDIS_URL") or None,  # None: in memory (was InMemoryBackend())
    prefix="fastapi-cache",
    ignore_arg_types=[Session],  # see list_items
)
app = FastAPI(lifespan=store.lifespan)


ITEMS = {1: "hammer", 2: "nail"}


# Before: @cache(expire=60, namespace="items")
# The namespace existed to clear these entries together: FastAPICache.clear(namespace="items").
# After: a tag, cleared with `await store.invalidate_tag("items")`; "item:{id}" names one entry.
@app.get("/items/{id}")
@cache(expire=60, tags=["items", "item:{id}"])
async def read_item(id: int) -> dict[str, object]:
    return {"id": id, "name": ITEMS.get(id)}


# Before: a key_builder that skipped the session argument, because its repr (a memory
# address) made every request a miss:
#     def no_session_key(func, namespace, request, response, args, kwargs):
#         kwargs = {k: v for k, v in kwargs.items() if k != "session"}
#         return f"{namespace}:{func.__name__}:{sorted(kwargs.items())}"
#     @cache(expire=60, key_builder=no_session_key)
# After: Request, Response and BackgroundTasks stay out of keys by themselves; other types
# (a database session) are listed once per store: Cache(ignore_arg_types=[Session]).
@app.get("/items")
@cache(expire=60, tags=["items", "lists"])
async def list_items(
    limit: int = 10, session: Session = Depends(get_session)
) -> list[dict[str, object]]:
    return [{"id": id, "name": name} for id, name in sorted(ITEMS.items())[:limit]]


def current_user(x_user: str = Header()) -> str:
    """Your authentication: the caller's stable user id (401 in a real app when missing)."""
    return x_user


# Before: a key_builder that added the user to the key:
#     def user_key(func, namespace, request, response, args, kwargs):
#         return f"{namespace}:{request.headers['x-user']}:{request.url.path}"
#     @cache(expire=300, key_builder=user_key)
# After: per_user takes the dependency; responses say Cache-Control: private, and
# `await store.invalidate_user(user)` deletes one user's entries.
@app.get("/me")
@cache(expire=300, per_user=current_user)
async def me(user: str = Depends(current_user)) -> dict[str, str]:
    return {"user": user}


# Before: a key_builder over a request header (language):
#     return f"{namespace}:{request.headers.get('accept-language')}:{request.url.path}"
# After: vary=[...] keys by the header and answers with `Vary: accept-language`.
@app.get("/greeting")
@cache(expire=300, vary=["accept-language"])
async def greeting(accept_language: str | None = Header(default=None)) -> dict[str, str]:
    return {"greeting": "Bonjour" if (accept_language or "").startswith("fr") else "Hello"}


# Before: @cache(expire=60) on a plain coroutine (not an endpoint), with JsonCoder turning
# its result into a dict on hits. After: @cached, which returns the same type again.
@cached(expire=60, tags=["items"])
async def item_name(id: int) -> str | None:
    return ITEMS.get(id)


# Before: await FastAPICache.clear(namespace="items")
@app.post("/items/{id}")
async def rename_item(id: int, name: str) -> dict[str, object]:
    ITEMS[id] = name
    await store.invalidate_tag(f"item:{id}")  # this item's entries
    await store.invalidate_tag("lists")  # and every page of the list
    return {"id": id, "name": name}

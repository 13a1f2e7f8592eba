"""What more than one test file builds: a client whose lifespan runs the store, the apps
and the values several files use. Fixtures (the stores on each backend, the Redis servers)
are in conftest.py. The endpoints built here are keyed under this module
(`tests.apps.prefs(...)`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from typing import Any, Callable

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from oxcache import Cache, MemoryBackend, RedisBackend, cache
from tests.conftest import sync_client

# -- clients and stores ------------------------------------------------------------------------


#: The `make_store` fixture: a store on the parametrized backend (memory, Redis, cluster).
MakeStore = Callable[..., Cache]


class OwnHandlerRoute(APIRoute):
    """An `APIRoute` subclass that builds its own handler (as routes that time or log
    requests do): oxcache leaves it to FastAPI's handler on every request, hits included."""

    def get_route_handler(self) -> Any:
        return super().get_route_handler()


def client_for(app: FastAPI, store: Cache) -> TestClient:
    """A client whose lifespan connects (and later closes) the store, on one event loop."""
    app.router.lifespan_context = store.lifespan
    return TestClient(app)


def stored_keys(store: Cache) -> list[str]:
    """Every key the store holds under its prefix (entries and indexes)."""
    backend = store.backend
    if isinstance(backend, MemoryBackend):
        return sorted(backend._data)
    assert isinstance(backend, RedisBackend) and store.url
    client = sync_client(store.url)
    try:
        return sorted(k.decode() for k in client.scan_iter(match=f"{store.prefix}:*"))
    finally:
        client.close()


# -- apps --------------------------------------------------------------------------------------


def item_app(store: Cache, *, named: bool = False, **options: Any) -> tuple[FastAPI, list[int]]:
    """`GET /item/{id}` cached for 60 s on `store` (with more `@cache` options), the store's
    lifespan set: the app, and the ids the endpoint ran for. The body is `{"id": id}`, with
    `"name": "item {id}"` too when `named`."""
    app = FastAPI()
    calls: list[int] = []

    @app.get("/item/{id}")
    @cache(expire=60, store=store, **options)
    async def item(id: int) -> dict[str, Any]:
        calls.append(id)
        return {"id": id, "name": f"item {id}"} if named else {"id": id}

    app.router.lifespan_context = store.lifespan
    return app, calls


def stale_app(store: Cache, **options: Any) -> tuple[FastAPI, dict[str, Any]]:
    """`GET /data`, fresh for 1 s, with `options` (the stale windows), the store's lifespan
    set. `state["fail"]` makes the next runs raise ("raise", "404") or answer 503 ("503")."""
    app = FastAPI()
    state: dict[str, Any] = {"version": 1, "runs": 0, "fail": None}

    @app.get("/data")
    @cache(expire=1, store=store, **options)
    async def data(request: Request) -> Any:
        state["runs"] += 1
        if state["fail"] == "raise":
            raise RuntimeError("database down")
        if state["fail"] == "404":
            raise HTTPException(status_code=404)
        if state["fail"] == "503":
            return JSONResponse({"error": "busy"}, status_code=503)
        return {"version": state["version"]}

    app.router.lifespan_context = store.lifespan
    return app, state


def current_user_id(x_user: str | None = Header(default=None)) -> str:
    """The test's authentication: the user id is in `X-User`; no header means 401."""
    if x_user is None:
        raise HTTPException(status_code=401, detail="not authenticated")
    return x_user


def per_user_app(store: Cache, calls: Counter[str]) -> FastAPI:
    """`GET /me/prefs`, cached per user (`current_user_id`) for 300 s on `store`; `calls`
    counts the runs per user."""
    app = FastAPI()

    @app.get("/me/prefs")
    @cache(expire=300, per_user=current_user_id, store=store)
    async def prefs(user: str = Depends(current_user_id)) -> dict[str, Any]:
        calls[user] += 1
        await asyncio.sleep(0)
        return {"user": user, "theme": f"theme-of-{user}"}

    return app


# -- values endpoints and @cached functions return ---------------------------------------------


class Item(BaseModel):
    id: int
    name: str


@dataclasses.dataclass
class Point:
    x: int
    y: float

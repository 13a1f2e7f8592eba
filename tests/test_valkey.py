"""What runs on Valkey (scripts/test-valkey, `OXCACHE_SERVER=valkey`) is Valkey, and a
valkey-py client can be handed to a store as well as a redis-py one."""

from __future__ import annotations

from typing import Any

import redis
import valkey.asyncio
from fastapi import FastAPI

from oxcache import Cache, cache
from tests.apps import client_for
from tests.conftest import SERVER


def test_the_server_under_test_is_the_one_oxcache_server_names(redis_url: str) -> None:
    """A run meant for Valkey that silently talked to Redis would prove nothing."""
    client = redis.Redis.from_url(redis_url)
    try:
        info: dict[str, Any] = client.info("server")
    finally:
        client.close()
    if SERVER == "valkey":
        assert info.get("server_name") == "valkey" and "valkey_version" in info, info
    else:
        assert "valkey_version" not in info, info


def test_a_valkey_py_client_serves_hits_and_invalidations(redis_url: str) -> None:
    client = valkey.asyncio.Valkey.from_url(redis_url)
    store = Cache(client=client, prefix="valkey-py")
    app = FastAPI()
    runs: list[int] = []

    @app.get("/items/{id}")
    @cache(expire=60, store=store, tags=["items"])
    async def item(id: int) -> dict[str, int]:
        runs.append(id)
        return {"id": id}

    with client_for(app, store) as http:
        assert [http.get("/items/1").headers["x-fastapi-cache"] for _ in range(2)] == [
            "Miss",
            "Hit",
        ]
        assert http.portal.call(store.invalidate_tag, "items") == 1
        assert http.get("/items/1").headers["x-fastapi-cache"] == "Miss"
        http.portal.call(store.clear)
        http.portal.call(client.aclose)
    assert runs == [1, 1]

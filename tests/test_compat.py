"""compat.py: `FastApiRedisCache().init(...)` as fastapi-redis-cache (the seed) documents it,
its log events, and importing oxcache configuring no logging, unlike the seed."""

from __future__ import annotations

import logging
import warnings

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

import oxcache.lifecycle
from oxcache import FastApiRedisCache, cache
from tests.conftest import free_port


@pytest.fixture(autouse=True)
def _reset_default_store():
    yield
    oxcache.lifecycle.set_default(None)
    FastApiRedisCache.store = None


def seed_app(host_url: str) -> FastAPI:
    app = FastAPI()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # on_event, as the seed's README uses

        @app.on_event("startup")
        def startup() -> None:
            redis_cache = FastApiRedisCache()
            redis_cache.init(
                host_url=host_url,
                prefix="myapi-cache",
                response_header="X-MyAPI-Cache",
                ignore_arg_types=[Request, Response],
            )

    @app.get("/immutable_data")
    @cache()
    async def get_immutable_data() -> dict[str, object]:
        return {"success": True, "message": "this data can be cached indefinitely"}

    return app


def test_init_in_a_startup_handler_configures_redis(
    redis_url: str, redis_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="oxcache")
    with TestClient(seed_app(redis_url)) as client:
        miss = client.get("/immutable_data")
        hit = client.get("/immutable_data")
    assert miss.headers["x-myapi-cache"] == "Miss"
    assert hit.headers["x-myapi-cache"] == "Hit"
    key = f"myapi-cache:{__name__}.get_immutable_data()"
    assert redis_client.exists(key)
    redis_client.delete(key)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("CONNECT_BEGIN") for m in messages)
    assert any(m.startswith("CONNECT_SUCCESS") for m in messages)
    assert f"KEY_ADDED_TO_CACHE: key={key}" in messages
    assert f"KEY_FOUND_IN_CACHE: key={key}" in messages


def test_unreachable_redis_logs_connect_fail_and_serves_uncached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="oxcache")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with TestClient(seed_app(dead)) as client:
        responses = [client.get("/immutable_data") for _ in range(5)]
    assert all(r.status_code == 200 for r in responses)
    assert all(r.json()["success"] is True for r in responses)
    assert all(r.headers.get("x-myapi-cache") != "Hit" for r in responses)
    fails = [r for r in caplog.records if r.getMessage().startswith("CONNECT_FAIL")]
    assert len(fails) == 1  # once per outage, not once per request
    assert FastApiRedisCache().connected is False


def test_importing_oxcache_configures_no_logging() -> None:
    """The seed called logging.basicConfig() at import, adding a handler to the root logger."""
    import subprocess
    import sys

    code = "import logging, oxcache; print(len(logging.getLogger().handlers))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
        == "0"
    )

"""The store's lifespan warns at startup about `@cache` endpoints that can never be cached:
written above the route decorator, or on a route that takes no GET or HEAD request."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from oxcache import Cache, cache, cached
from oxcache.registry import uncached_methods


def startup_warnings(app: FastAPI, caplog: pytest.LogCaptureFixture) -> list[str]:
    with caplog.at_level(logging.WARNING, "oxcache"), TestClient(app):
        pass
    return [r.getMessage() for r in caplog.records if "never cached" in r.getMessage()]


def test_cache_on_a_post_route_is_warned_at_startup(caplog: pytest.LogCaptureFixture) -> None:
    store = Cache()
    app = FastAPI(lifespan=store.lifespan)
    router = APIRouter(prefix="/v1")

    @app.post("/search")
    @cache(expire=60, store=store)
    async def search(q: str) -> dict[str, str]:
        return {"q": q}

    @router.put("/items/{id}")
    @cache(expire=60, store=store)
    async def put_item(id: int) -> dict[str, int]:
        return {"id": id}

    @app.api_route("/both", methods=["GET", "POST"])
    @cache(expire=60, store=store)
    async def both() -> dict[str, int]:  # its GETs are cached: no warning
        return {"a": 1}

    @app.get("/fine")
    @cache(expire=60, store=store)
    async def fine() -> dict[str, int]:
        return {"a": 1}

    @app.post("/plain")
    @cached(expire=60, store=store)  # @cached caches return values, whatever the method
    async def plain() -> dict[str, int]:
        return {"a": 1}

    app.include_router(router)
    warnings = startup_warnings(app, caplog)
    assert len(warnings) == 2, warnings
    search_warning = next(w for w in warnings if ".search " in w)
    assert "takes POST /search" in search_warning and "only GET and HEAD" in search_warning
    assert any(".put_item " in w and "takes PUT /v1/items/{id}" in w for w in warnings)
    assert [(f.__name__, m) for f, m, _ in uncached_methods(app)] == [
        ("search", "POST"),
        ("put_item", "PUT"),
    ]


def test_a_post_route_is_warned_once_however_often_the_app_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Cache()
    app = FastAPI(lifespan=store.lifespan)

    @app.post("/p")
    @cache(expire=60, store=store)
    async def p() -> dict[str, Any]:
        return {}

    assert len(startup_warnings(app, caplog)) == 1
    caplog.clear()
    assert startup_warnings(app, caplog) == []

"""Fixtures of the conformance suite: every test runs on the in-memory store and on a real
Redis, with FastAPI's `APIRoute` and with oxcache's `CachedRoute` (4 runs per test).

A test builds its app with `make_app()` and decorates its endpoints with
`@cache(..., store=store)`; `client(app)` is a TestClient whose lifespan enters the store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from oxcache import Cache, CachedRoute
from tests.apps import OwnHandlerRoute
from tests.conftest import sync_client

MakeApp = Callable[[], FastAPI]


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[Cache]:
    """A store of this test's own (its own prefix), in memory or on the session's Redis;
    everything it wrote is deleted at teardown."""
    prefix = "conf-" + uuid.uuid4().hex[:12]
    if request.param == "memory":
        yield Cache(prefix=prefix)
        return
    url = str(request.getfixturevalue("redis_url"))
    yield Cache(url, prefix=prefix, timeout=2.0)
    raw = sync_client(url)
    for key in raw.scan_iter(match=f"{prefix}:*"):
        raw.unlink(key)
    raw.close()


# FastAPI's handler on every request, the plain route (answering hits early from its
# second request on), and CachedRoute.
@pytest.fixture(params=[OwnHandlerRoute, APIRoute, CachedRoute], ids=lambda cls: cls.__name__)
def route_class(request: pytest.FixtureRequest) -> type[APIRoute]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make_app(store: Cache, route_class: type[APIRoute]) -> MakeApp:
    """A FastAPI app whose routes are of `route_class` and whose lifespan enters `store`."""

    def make() -> FastAPI:
        app = FastAPI(lifespan=store.lifespan)
        app.router.route_class = route_class
        return app

    return make

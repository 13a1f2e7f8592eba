"""RFC 9211: the Cache-Status header on every response of a cached endpoint, with the
reason whenever the cache did not answer. Each test names the section it checks; each runs
on memory and Redis, with APIRoute and CachedRoute."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest
from fastapi import Depends, FastAPI, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient

from oxcache import Cache, cache
from oxcache.backends.memory import MemoryBackend
from tests.conformance.conftest import MakeApp

# RFC 9211 section 2 over RFC 8941: a list member, the cache's name (a token) and
# parameters (key, or key=token / integer).
MEMBER = re.compile(
    r"^oxcache(; [a-z][a-z-]*(=(-?[0-9]+|[A-Za-z][A-Za-z0-9:/!#$%&'*+.^_`|~-]*))?)*$"
)


def status_of(response: Any) -> dict[str, str]:
    value = response.headers["cache-status"]
    assert MEMBER.match(value), value
    params = [p.split("=", 1) for p in value.split("; ")[1:]]
    return {p[0]: (p[1] if len(p) > 1 else "") for p in params}


def app_with(make_app: MakeApp, store: Cache, **options: Any) -> FastAPI:
    app = make_app()

    def user(x_user: str = Header("")) -> str:
        return x_user

    @app.api_route("/plain", methods=["GET", "POST"])
    @cache(store=store, **{"expire": 60, **options})
    async def plain() -> dict[str, str]:
        return {"plain": "yes"}

    @app.get("/own/{kind}")
    @cache(expire=60, store=store)
    async def own(kind: str, response: Response) -> Any:
        if kind == "status":
            return JSONResponse({"kind": kind}, status_code=404)
        if kind == "streaming":
            return StreamingResponse(iter([b"x"]))
        headers = {
            "no-store": ("Cache-Control", "no-store"),
            "no-cache": ("Cache-Control", "no-cache"),
            "private": ("Cache-Control", "private"),
            "expired": ("Cache-Control", "max-age=0"),
            "vary-star": ("Vary", "*"),
            "set-cookie": ("Set-Cookie", "a=b"),
        }
        name, value = headers[kind]
        response.headers[name] = value
        return {"kind": kind}

    @app.get("/me")
    @cache(expire=60, store=store, per_user=user)
    async def me(who: str = Depends(user)) -> dict[str, str]:
        return {"me": who}

    return app


def test_2_1_hit_with_its_remaining_freshness(store: Cache, make_app: MakeApp) -> None:
    """Section 2.1 (`hit`) and 2.4 (`ttl`, the freshness left); a 304 from the cache is
    still a hit."""
    with TestClient(app_with(make_app, store)) as client:
        miss = client.get("/plain")
        hit = client.get("/plain")
        not_modified = client.get("/plain", headers={"If-None-Match": miss.headers["etag"]})
    for response in (hit, not_modified):
        params = status_of(response)
        assert "hit" in params and 0 <= int(params["ttl"]) <= 60
    assert not_modified.status_code == 304


def test_2_2_and_2_5_a_miss_is_forwarded_and_stored(store: Cache, make_app: MakeApp) -> None:
    """Section 2.2 (`fwd=miss`) and 2.5 (`stored`)."""
    with TestClient(app_with(make_app, store)) as client:
        response = client.get("/plain")
    assert status_of(response) == {"fwd": "miss", "stored": ""}


@pytest.mark.parametrize(
    ("request_kwargs", "expected"),
    [
        ({"method": "POST"}, {"fwd": "method"}),
        ({"headers": {"Cookie": "_ga=GA1.2.3"}}, {"fwd": "bypass", "detail": "credentials"}),
        ({"headers": {"Authorization": "Bearer t"}}, {"fwd": "bypass", "detail": "credentials"}),
        ({"headers": {"Cache-Control": "no-store"}}, {"fwd": "request", "detail": "no-store"}),
        ({"headers": {"Cache-Control": "no-cache"}}, {"fwd": "request", "detail": "no-cache"}),
        ({"headers": {"Pragma": "no-cache"}}, {"fwd": "request", "detail": "no-cache"}),
    ],
    ids=["method", "cookie", "authorization", "no-store", "no-cache", "pragma"],
)
def test_2_2_and_2_8_a_bypassed_request_says_why(
    store: Cache, make_app: MakeApp, request_kwargs: dict[str, Any], expected: dict[str, str]
) -> None:
    """Section 2.2 (`fwd=method`, `bypass`, `request`) and 2.8 (`detail`): a cookie such
    as `_ga` no longer turns caching off silently."""
    request_kwargs = dict(request_kwargs)  # parametrize shares the dict between runs
    method = request_kwargs.pop("method", "GET")
    with TestClient(app_with(make_app, store)) as client:
        client.get("/plain")
        response = client.request(method, "/plain", **request_kwargs)
    assert status_of(response) == expected
    assert "x-fastapi-cache" not in response.headers  # the seed's header: as it always was


@pytest.mark.parametrize(
    "kind", ["no-store", "no-cache", "private", "expired", "vary-star", "set-cookie", "status"]
)
def test_2_8_a_response_that_may_not_be_stored_says_why(
    store: Cache, make_app: MakeApp, kind: str
) -> None:
    """Section 2.8 (`detail`): the response's own header that kept it out of the cache."""
    with TestClient(app_with(make_app, store)) as client:
        response = client.get(f"/own/{kind}")
    assert status_of(response) == {"fwd": "miss", "detail": kind}


def test_2_8_a_streaming_response_says_why(store: Cache, make_app: MakeApp) -> None:
    """Section 2.8: a body not known in advance is never stored."""
    with TestClient(app_with(make_app, store)) as client:
        response = client.get("/own/streaming")
    assert status_of(response) == {"fwd": "miss", "detail": "streaming"}


def test_2_8_the_store_unavailable_says_why(make_app: MakeApp, store: Cache) -> None:
    """Section 2.8: storage that does not answer is reported, and the request is served."""

    class Down(MemoryBackend):
        async def get(self, key: str) -> bytes | None:
            raise ConnectionError("down")

        async def set(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("down")

    broken = Cache(backend=Down(), prefix=store.prefix)
    app = make_app()

    @app.get("/d")
    @cache(expire=60, store=broken)
    async def d() -> dict[str, int]:
        return {"d": 1}

    with TestClient(app) as client:
        response = client.get("/d")
    assert response.json() == {"d": 1}
    assert status_of(response) == {"fwd": "miss", "detail": "unavailable"}


def test_2_6_collapsed_requests_are_marked(store: Cache, make_app: MakeApp) -> None:
    """Section 2.6 (`collapsed`): a request that waited for another's run of the endpoint
    and took its response says so; the run that stored it says `stored`."""
    app = make_app()

    @app.get("/slow")
    @cache(expire=60, store=store)
    async def slow() -> dict[str, int]:
        await anyio.sleep(0.3)
        return {"slow": 1}

    with TestClient(app) as client:

        async def both() -> list[dict[str, str]]:
            found: list[dict[str, str]] = []

            async def get() -> None:
                response = await anyio.to_thread.run_sync(client.get, "/slow")
                found.append(status_of(response))

            async with anyio.create_task_group() as group:
                group.start_soon(get)
                await anyio.sleep(0.05)
                group.start_soon(get)
            return found

        found = anyio.run(both)
    assert {"fwd": "miss", "stored": ""} in found
    assert {"fwd": "miss", "collapsed": ""} in found


def test_2_the_cache_name_is_configurable_and_the_header_can_be_turned_off(
    make_app: MakeApp, store: Cache
) -> None:
    """Section 2: the first member names the cache; `Cache(cache_status=None)` sends none.
    The `key` parameter is never sent (section 6: it helps cache poisoning)."""
    named = Cache(prefix=store.prefix + "n", cache_status="edge-1")
    silent = Cache(prefix=store.prefix + "s", cache_status=None)
    app = make_app()

    @app.get("/n")
    @cache(expire=60, store=named)
    async def n() -> dict[str, int]:
        return {"n": 1}

    @app.get("/q")
    @cache(expire=60, store=silent)
    async def q() -> dict[str, int]:
        return {"q": 1}

    with TestClient(app) as client:
        assert client.get("/n").headers["cache-status"] == "edge-1; fwd=miss; stored"
        assert client.get("/n").headers["cache-status"].startswith("edge-1; hit; ttl=")
        assert "cache-status" not in client.get("/q").headers
        assert client.get("/q").headers["x-fastapi-cache"] == "Hit"
    assert "key=" not in client.get("/n").headers["cache-status"]

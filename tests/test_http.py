"""http.py: which requests use the cache (GET and HEAD; a request's no-cache, no-store and
max-age, which apply to the endpoint it was sent to and never set the server's TTL) and the
headers cached responses carry (Cache-Control from expire, max_age or cache_control,
Expires, weak or strong ETags). On memory, Redis and Redis Cluster (parametrized through
make_store)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from fastapi import FastAPI, Request

from oxcache import cache
from tests.apps import MakeStore, client_for, item_app

# -- methods -----------------------------------------------------------------------------------


def test_only_get_and_head_are_cached(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    calls = []

    @app.post("/p")
    @cache(store=store)
    async def p() -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    with client_for(app, store) as client:
        first, second = client.post("/p"), client.post("/p")
    assert first.json() == {"n": 1} and second.json() == {"n": 2}
    assert "x-fastapi-cache" not in second.headers


def test_head_is_answered_from_the_get_entry(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    calls = []

    @app.api_route("/h", methods=["GET", "HEAD"])
    @cache(store=store)
    async def h() -> dict[str, str]:
        calls.append(1)
        return {"hello": "world"}

    with client_for(app, store) as client:
        get = client.get("/h")
        head = client.head("/h")
    assert head.status_code == 200
    assert head.headers["x-fastapi-cache"] == "Hit"
    assert head.headers["etag"] == get.headers["etag"]
    assert head.headers["content-length"] == str(len(get.content))
    assert head.content == b""
    assert calls == [1]


# -- request directives (RFC 9111 5.2.1) -------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Cache-Control": "no-cache"},
        {"Cache-Control": "no-store"},
        {"Cache-Control": "NO-CACHE"},
        {"Cache-Control": "max-age=10, No-Store"},
        {"Pragma": "no-cache"},
    ],
)
def test_no_cache_request_disables_all_caching(
    make_store: MakeStore, headers: dict[str, str]
) -> None:
    store = make_store()
    app, calls = item_app(store)
    with client_for(app, store) as client:
        response = client.get("/item/7", headers=headers)
        for name in ("cache-control", "etag", "expires", "x-fastapi-cache"):
            assert name not in response.headers
        assert response.json() == {"id": 7}
        assert client.get("/item/7").headers["x-fastapi-cache"] == "Miss"  # nothing was stored
    assert calls == [7, 7]


def test_no_cache_can_refresh_instead_of_bypass(make_store: MakeStore) -> None:
    """#52: a request with no-cache may refresh the entry; the default stays a bypass."""
    store = make_store()
    app = FastAPI()
    version = {"n": 1}

    @app.get("/refreshing")
    @cache(expire=60, store=store, refresh_on_no_cache=True)
    async def refreshing() -> dict[str, int]:
        return dict(version)

    @app.get("/default")
    @cache(expire=60, store=store)
    async def default() -> dict[str, int]:
        return dict(version)

    with client_for(app, store) as client:
        client.get("/refreshing"), client.get("/default")
        version["n"] = 2
        refreshed = client.get("/refreshing", headers={"Cache-Control": "no-cache"})
        pragma = client.get("/refreshing", headers={"Pragma": "no-cache"})
        bypassed = client.get("/default", headers={"Cache-Control": "no-cache"})
        after_refresh = client.get("/refreshing")
        after_bypass = client.get("/default")
    assert refreshed.json() == {"n": 2} and refreshed.headers["x-fastapi-cache"] == "Miss"
    assert pragma.headers["x-fastapi-cache"] == "Miss"
    assert after_refresh.json() == {"n": 2} and after_refresh.headers["x-fastapi-cache"] == "Hit"
    assert bypassed.json() == {"n": 2} and "x-fastapi-cache" not in bypassed.headers
    assert after_bypass.json() == {"n": 1}  # the seed's behaviour: the entry is untouched


def test_request_max_age_refreshes_an_older_entry(make_store: MakeStore) -> None:
    store = make_store()
    app, calls = item_app(store)
    with client_for(app, store) as client:
        client.get("/item/3")
        time.sleep(1.1)
        assert (
            client.get("/item/3", headers={"Cache-Control": "max-age=100"}).headers[
                "x-fastapi-cache"
            ]
            == "Hit"
        )
        refreshed = client.get("/item/3", headers={"Cache-Control": "max-age=0"})
        assert refreshed.headers["x-fastapi-cache"] == "Miss"
        assert client.get("/item/3").headers["x-fastapi-cache"] == "Hit"
    assert calls == [3, 3]


def test_client_cache_control_does_not_set_server_ttl(make_store: MakeStore) -> None:
    store = make_store()
    app, _ = item_app(store)
    with client_for(app, store) as client:
        response = client.get("/item/4", headers={"Cache-Control": "max-age=5"})
    assert response.headers["cache-control"] == "max-age=60"


def test_client_cache_control_only_affects_its_own_endpoint_and_never_the_ttl(
    make_store: MakeStore,
) -> None:
    store = make_store()
    app = FastAPI()
    inner_runs: list[int] = []

    @app.get("/inner")
    @cache(expire=60, store=store)
    async def inner() -> dict[str, int]:
        inner_runs.append(1)
        return {"inner": len(inner_runs)}

    @app.get("/outer")
    @cache(expire=60, store=store)
    async def outer(request: Request) -> dict[str, Any]:
        return {"outer": True}

    with client_for(app, store) as client:
        client.get("/inner")
        no_cache = client.get("/outer", headers={"Cache-Control": "no-cache"})
        assert no_cache.json() == {"outer": True}
        assert client.get("/inner").headers["x-fastapi-cache"] == "Hit"  # unaffected
        short = client.get("/inner", headers={"Cache-Control": "max-age=5"})
        fresh = client.get("/inner", headers={"Cache-Control": "no-store"})
    assert short.headers["x-fastapi-cache"] == "Hit"
    assert short.headers["cache-control"] == "max-age=60"  # the server's TTL, not the client's
    assert "x-fastapi-cache" not in fresh.headers and fresh.json() == {"inner": 2}


# -- response headers --------------------------------------------------------------------------


def test_no_expiry_and_expire_zero_give_valid_headers(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    runs: list[str] = []

    @app.get("/forever")
    @cache(store=store)
    async def forever() -> dict[str, int]:
        runs.append("forever")
        return {"x": 1}

    @app.get("/never")
    @cache(expire=0, store=store)
    async def never() -> dict[str, int]:
        runs.append("never")
        return {"x": 0}

    with client_for(app, store) as client:
        miss, hit = client.get("/forever"), client.get("/forever")
        n1, n2 = client.get("/never"), client.get("/never")
    for response in (miss, hit):
        assert response.headers["cache-control"] == "max-age=31536000"
        assert response.headers["expires"].endswith(" GMT")
    assert int(hit.headers["age"]) >= 0
    for response in (n1, n2):  # expire=0: not stored, and no cache headers at all
        assert response.json() == {"x": 0}
        assert "cache-control" not in response.headers and "x-fastapi-cache" not in response.headers
    assert runs == ["forever", "never", "never"]


def test_server_ttl_and_browser_max_age_are_set_apart(make_store: MakeStore) -> None:
    """#60, #53: keep an hour in the store, tell browsers 60 seconds."""
    store = make_store()
    app = FastAPI()

    @app.get("/split")
    @cache(expire=3600, max_age=60, store=store)
    async def split() -> dict[str, int]:
        return {"a": 1}

    @app.get("/cdn")
    @cache(expire=3600, cache_control="public, s-maxage=600", store=store)
    async def cdn() -> dict[str, int]:
        return {"b": 1}

    @app.get("/revalidate")
    @cache(expire=3600, max_age=0, store=store)
    async def revalidate() -> dict[str, int]:
        return {"c": 1}

    with client_for(app, store) as client:
        miss, hit = client.get("/split"), client.get("/split")
        cdn_miss, cdn_hit = client.get("/cdn"), client.get("/cdn")
        first = client.get("/revalidate")
        again = client.get("/revalidate", headers={"If-None-Match": first.headers["etag"]})
    for response in (miss, hit):
        assert response.headers["cache-control"] == "max-age=60"
        assert "age" not in response.headers  # browser freshness counts from delivery
    assert hit.headers["x-fastapi-cache"] == "Hit"
    for response in (cdn_miss, cdn_hit):
        assert response.headers["cache-control"] == "public, s-maxage=600"
        assert "expires" not in response.headers
    assert cdn_hit.headers["x-fastapi-cache"] == "Hit"
    assert first.headers["cache-control"] == "no-cache"
    assert again.status_code == 304 and again.headers["cache-control"] == "no-cache"


def test_strong_etag_option(make_store: MakeStore) -> None:
    store = make_store(strong_etag=True)
    app, _ = item_app(store)
    with client_for(app, store) as client:
        tag = client.get("/item/1").headers["etag"]
        assert re.match(r'^"[0-9a-f]{32}"$', tag)
        assert client.get("/item/1", headers={"If-None-Match": tag}).status_code == 304

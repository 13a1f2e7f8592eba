"""serve.py: answering from the cache. A fresh hit and its headers (Age counts from when the
entry was stored), the 304 for a matching If-None-Match and what it repeats, the stale copy
served while one refresh runs (RFC 5861 stale-while-revalidate), and XFetch's early refresh
of a hot entry. On memory, Redis and Redis Cluster (parametrized through make_store)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

from oxcache import Cache, cache
from tests.apps import MakeStore, client_for, item_app, stale_app

# -- fresh hits --------------------------------------------------------------------------------


ETAG = re.compile(r'^W/"[0-9a-f]{32}"$')


def test_miss_then_hit_with_seed_headers(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    calls = []

    @app.get("/dynamic_data")
    @cache(expire=30, store=store)
    def get_dynamic_data(request: Request, response: Response) -> dict[str, Any]:
        calls.append(1)
        return {"success": True, "message": "this data should only be cached temporarily"}

    with client_for(app, store) as client:
        miss = client.get("/dynamic_data")
        hit = client.get("/dynamic_data")
    assert miss.status_code == hit.status_code == 200
    assert miss.headers["x-fastapi-cache"] == "Miss"
    assert hit.headers["x-fastapi-cache"] == "Hit"
    assert miss.content == hit.content
    assert miss.json() == {
        "success": True,
        "message": "this data should only be cached temporarily",
    }
    assert len(calls) == 1
    for response in (miss, hit):
        assert response.headers["cache-control"] == "max-age=30"
        assert ETAG.match(response.headers["etag"])
        assert response.headers["expires"].endswith(" GMT")
        assert response.headers["content-length"] == str(len(response.content))
        assert response.headers["content-type"] == "application/json"
    assert miss.headers["etag"] == hit.headers["etag"]
    assert miss.headers["expires"] == hit.headers["expires"]
    assert "age" not in miss.headers
    assert int(hit.headers["age"]) >= 0


def test_age_is_time_since_stored_not_remaining_ttl(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/aged")
    @cache(expire=100, store=store)
    async def aged() -> dict[str, int]:
        return {"x": 1}

    with client_for(app, store) as client:
        client.get("/aged")
        time.sleep(1.1)
        hit = client.get("/aged")
    assert hit.headers["cache-control"] == "max-age=100"
    assert 1 <= int(hit.headers["age"]) <= 3  # seconds since stored, never ~99 left


def test_entry_expires(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    calls = []

    @app.get("/short")
    @cache(expire=timedelta(milliseconds=400), store=store)
    async def short() -> int:
        calls.append(1)
        return len(calls)

    with client_for(app, store) as client:
        assert client.get("/short").headers["x-fastapi-cache"] == "Miss"
        assert client.get("/short").headers["x-fastapi-cache"] == "Hit"
        time.sleep(0.6)
        again = client.get("/short")
    assert again.headers["x-fastapi-cache"] == "Miss"
    assert again.json() == 2


# -- conditional requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        "{tag}",
        "{strong}",
        '"0000", {tag}',
        '  {strong} ,"x"',
        "*",
        '"aa", W/"bb",{tag}',
    ],
)
def test_if_none_match_forms_give_304(make_store: MakeStore, form: str) -> None:
    store = make_store()
    app, calls = item_app(store)
    with client_for(app, store) as client:
        first = client.get("/item/1")
        tag = first.headers["etag"]
        header = form.format(tag=tag, strong=tag[2:])
        conditional = client.get("/item/1", headers={"If-None-Match": header})
    assert conditional.status_code == 304
    assert conditional.content == b""
    for name in ("etag", "cache-control", "expires", "age"):
        assert name in conditional.headers, name
    assert conditional.headers["etag"] == tag
    assert conditional.headers["x-fastapi-cache"] == "Hit"
    assert "content-type" not in conditional.headers
    assert calls == [1]


@pytest.mark.parametrize(
    "header", ['"0123"', 'W/"0123", "4567"', "garbage", "", "W/", '"unterminated']
)
def test_if_none_match_not_matching_gives_200(make_store: MakeStore, header: str) -> None:
    store = make_store()
    app, _ = item_app(store)
    with client_for(app, store) as client:
        client.get("/item/1")
        response = client.get("/item/1", headers={"If-None-Match": header})
    assert response.status_code == 200
    assert response.json() == {"id": 1}
    assert response.headers["x-fastapi-cache"] == "Hit"


def test_etag_of_one_entry_does_not_validate_another(make_store: MakeStore) -> None:
    store = make_store()
    app, _ = item_app(store)
    with client_for(app, store) as client:
        tag = client.get("/item/1").headers["etag"]
        client.get("/item/2")
        response = client.get("/item/2", headers={"If-None-Match": tag})
    assert response.status_code == 200
    assert response.json() == {"id": 2}


def two_urls(store: Cache) -> tuple[FastAPI, dict[str, str]]:
    app = FastAPI()
    data = {"a": "first a", "b": "first b"}

    @app.get("/a")
    @cache(expire=60, store=store)
    async def a() -> dict[str, str]:
        return {"a": data["a"]}

    @app.get("/b")
    @cache(expire=60, store=store)
    async def b() -> dict[str, str]:
        return {"b": data["b"]}

    return app, data


def test_etag_of_another_url_gives_200_not_304(make_store: MakeStore) -> None:
    store = make_store()
    app, _ = two_urls(store)
    with client_for(app, store) as client:
        tag_a = client.get("/a").headers["etag"]
        never_requested = client.get("/b", headers={"If-None-Match": tag_a})
        client.get("/b")
        cached_b = client.get("/b", headers={"If-None-Match": tag_a})
    assert never_requested.status_code == 200 and never_requested.json() == {"b": "first b"}
    assert cached_b.status_code == 200 and cached_b.json() == {"b": "first b"}


def test_old_etag_after_invalidation_and_change_gives_200(make_store: MakeStore) -> None:
    store = make_store()
    app, data = two_urls(store)
    endpoint_a = next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/a")
    with client_for(app, store) as client:
        old = client.get("/a").headers["etag"]
        assert client.get("/a", headers={"If-None-Match": old}).status_code == 304
        data["a"] = "second a"
        client.portal.call(store.invalidate, endpoint_a)
        after = client.get("/a", headers={"If-None-Match": old})
    assert after.status_code == 200 and after.json() == {"a": "second a"}
    assert after.headers["etag"] != old


def test_304_repeats_etag_cache_control_expires_vary_and_age(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/v")
    @cache(expire=120, store=store, vary=["accept-language"])
    async def v() -> dict[str, int]:
        return {"v": 1}

    with client_for(app, store) as client:
        first = client.get("/v", headers={"Accept-Language": "en"})
        conditional = {"Accept-Language": "en", "If-None-Match": first.headers["etag"]}
        not_modified = client.get("/v", headers=conditional)
    assert not_modified.status_code == 304 and not_modified.content == b""
    for name in ("etag", "cache-control", "expires", "vary"):
        assert not_modified.headers[name] == first.headers[name], name
    assert int(not_modified.headers["age"]) >= 0


# -- stale entries and early refreshes ---------------------------------------------------------


def test_stale_while_revalidate_serves_stale_and_refreshes_once(make_store: MakeStore) -> None:
    store = make_store()
    app, state = stale_app(store, stale_while_revalidate=30)
    with TestClient(app) as client:
        first = client.get("/data")
        assert first.headers["cache-control"] == "max-age=1, stale-while-revalidate=30"
        state["version"] = 2
        time.sleep(1.1)
        stale = client.get("/data")  # served at once from the stale entry...
        assert stale.json() == {"version": 1} and stale.headers["x-fastapi-cache"] == "Hit"
        assert int(stale.headers["age"]) >= 1
        fresh = client.get("/data")  # ...which the background run has refreshed
    assert fresh.json() == {"version": 2} and fresh.headers["x-fastapi-cache"] == "Hit"
    assert state["runs"] == 2
    assert store.stats()["stale"] == 1


@pytest.mark.parametrize("beta", [0.0, 1000.0])
def test_early_recompute_refreshes_a_hot_entry_before_it_expires(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch, beta: float
) -> None:
    import oxcache.serve

    draw = [0.999999]  # XFetch's U: ln(1 - U) = -13.8, so beta * delta * 13.8 s early
    monkeypatch.setattr(oxcache.serve.random, "random", lambda: draw[0])
    store = make_store()
    app = FastAPI()
    state = {"version": 1, "runs": 0}

    @app.get("/hot")
    @cache(expire=60, store=store, early_recompute=beta)
    async def hot() -> dict[str, int]:
        state["runs"] += 1
        await asyncio.sleep(0.01)  # delta: 10 ms, so 1000 * 0.01 * 13.8 = 138 s > 60 s left
        return {"version": state["version"]}

    app.router.lifespan_context = store.lifespan
    with TestClient(app) as client:
        assert client.get("/hot").headers["x-fastapi-cache"] == "Miss"
        state["version"] = 2
        hit = client.get("/hot")  # fresh hit; with beta, refreshed after it is sent
        draw[0] = 0.0  # ln(1) = 0: no early refresh from now on
        after = client.get("/hot")
    assert hit.json() == {"version": 1} and hit.headers["x-fastapi-cache"] == "Hit"
    assert after.headers["x-fastapi-cache"] == "Hit"
    if beta:
        assert after.json() == {"version": 2} and state["runs"] == 2
    else:
        assert after.json() == {"version": 1} and state["runs"] == 1

"""RFC 9110 section 13 (conditional requests), with the validator rules they rest on
(section 8.8) and what a 304 carries (section 15.4.5). Each test names the section it
checks; each runs on memory and Redis, with APIRoute and CachedRoute."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from oxcache import Cache, cache
from tests.conformance.conftest import MakeApp

ETAG = re.compile(r'^W/"[0-9a-f]{32}"$')


def item_app(make_app: MakeApp, store: Cache, runs: list[int]) -> FastAPI:
    app = make_app()

    @app.api_route("/items/{id}", methods=["GET", "HEAD", "POST"])
    @cache(expire=60, store=store)
    async def item(id: int) -> Any:
        runs.append(id)
        if id == 404:
            return JSONResponse({"missing": id}, status_code=404)
        return {"id": id}

    return app


def test_8_8_3_etag_is_a_quoted_weak_entity_tag_that_depends_only_on_the_body(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 8.8.3: `ETag: W/"..."`; the same body gives the same tag on a miss and a
    hit, another body another tag."""
    with TestClient(item_app(make_app, store, [])) as client:
        miss, hit, other = client.get("/items/1"), client.get("/items/1"), client.get("/items/2")
    assert ETAG.match(miss.headers["etag"])
    assert miss.headers["etag"] == hit.headers["etag"] != other.headers["etag"]


@pytest.mark.parametrize(
    "form",
    ["{tag}", "{strong}", '"x", {tag}', '"x",{strong} , "y"', "*", ' W/"nope", {tag}'],
)
def test_13_1_2_if_none_match_weak_comparison_lists_and_star_give_304(
    store: Cache, make_app: MakeApp, form: str
) -> None:
    """Section 13.1.2: weak comparison, a list of tags, `*`: a match answers 304 to GET."""
    runs: list[int] = []
    with TestClient(item_app(make_app, store, runs)) as client:
        tag = client.get("/items/1").headers["etag"]
        header = form.format(tag=tag, strong=tag[2:])
        response = client.get("/items/1", headers={"If-None-Match": header})
    assert response.status_code == 304 and response.content == b""
    assert runs == [1]


def test_13_1_2_if_none_match_without_a_match_gives_the_full_response(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 13.1.2: "Otherwise, the condition is true" - 200 with the body."""
    with TestClient(item_app(make_app, store, [])) as client:
        client.get("/items/1")
        for header in ('"other"', 'W/"other"', "garbage", ""):
            response = client.get("/items/1", headers={"If-None-Match": header})
            assert response.status_code == 200 and response.json() == {"id": 1}


def test_13_1_2_a_matching_tag_on_a_miss_gives_304_too(store: Cache, make_app: MakeApp) -> None:
    """Section 13.1.2: the condition is evaluated on the selected representation, whether
    it came from the cache or from the endpoint just now."""
    with TestClient(item_app(make_app, store, [])) as client:
        tag = client.get("/items/1").headers["etag"]
        client.portal.call(store.clear)
        response = client.get("/items/1", headers={"If-None-Match": tag})
    assert response.status_code == 304 and response.headers["x-fastapi-cache"] == "Miss"


def test_13_1_2_head_with_a_matching_tag_gives_304(store: Cache, make_app: MakeApp) -> None:
    """Section 13.1.2: 304 "if the request method is GET or HEAD"."""
    with TestClient(item_app(make_app, store, [])) as client:
        tag = client.get("/items/1").headers["etag"]
        response = client.head("/items/1", headers={"If-None-Match": tag})
    assert response.status_code == 304


def test_13_1_2_other_methods_never_get_a_304_from_the_cache(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 13.1.2: for methods other than GET and HEAD a false condition is 412, an
    origin's decision: the cache passes the request to the endpoint and never answers
    304."""
    runs: list[int] = []
    with TestClient(item_app(make_app, store, runs)) as client:
        client.get("/items/1")
        response = client.post("/items/1", headers={"If-None-Match": "*"})
    assert response.status_code == 200 and runs == [1, 1]


def test_13_1_3_if_modified_since_is_ignored_without_a_modification_date(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 13.1.3: ignored "if the resource does not have a modification date
    available", and always when If-None-Match is present (section 13.2.2)."""
    with TestClient(item_app(make_app, store, [])) as client:
        tag = client.get("/items/1").headers["etag"]
        future = "Sun, 06 Nov 2994 08:49:37 GMT"
        plain = client.get("/items/1", headers={"If-Modified-Since": future})
        both = client.get(
            "/items/1", headers={"If-Modified-Since": future, "If-None-Match": '"other"'}
        )
        first = client.get("/items/1", headers={"If-Modified-Since": future, "If-None-Match": tag})
    assert plain.status_code == both.status_code == 200
    assert "last-modified" not in plain.headers
    assert first.status_code == 304


def test_13_2_1_preconditions_are_ignored_when_the_response_would_not_be_2xx(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 13.2.1: a server MUST ignore preconditions when the response without them
    would not be 2xx (or 412): `If-None-Match: *` on a 404 is a 404."""
    with TestClient(item_app(make_app, store, [])) as client:
        response = client.get("/items/404", headers={"If-None-Match": "*"})
    assert response.status_code == 404 and response.json() == {"missing": 404}


def test_15_4_5_a_304_carries_the_validator_and_cache_fields_and_no_content(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 15.4.5: the 304 repeats ETag, Cache-Control, Expires and Vary as the 200
    would carry them, and has no content (and no Content-Length of its own)."""
    app = make_app()

    @app.get("/greeting")
    @cache(expire=60, store=store, vary=["accept-language"])
    async def greeting() -> dict[str, str]:
        return {"hello": "world"}

    with TestClient(app) as client:
        full = client.get("/greeting")
        not_modified = client.get("/greeting", headers={"If-None-Match": full.headers["etag"]})
    assert not_modified.status_code == 304 and not_modified.content == b""
    for name in ("etag", "cache-control", "vary"):
        assert not_modified.headers[name] == full.headers[name], name
    assert "expires" in not_modified.headers
    assert "content-length" not in not_modified.headers or (
        not_modified.headers["content-length"] == full.headers["content-length"]
    )


def test_15_4_5_a_304_repeats_the_endpoints_own_cache_control(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 15.4.5: the Cache-Control a 200 would carry is the endpoint's own, so the
    304 carries it too (hit or miss, even on a worker that never stored the entry)."""
    app = make_app()

    @app.get("/report")
    @cache(expire=600, store=store)
    async def report(response: Response) -> dict[str, int]:
        response.headers["Cache-Control"] = "public, max-age=60, must-revalidate"
        return {"rows": 3}

    with TestClient(app) as client:
        full = client.get("/report")
        tag = full.headers["etag"]
        hit_304 = client.get("/report", headers={"If-None-Match": tag})
        endpoint = report.__oxcache__  # type: ignore[attr-defined]
        endpoint.own_headers = None  # as a worker that only ever read the entry
        fresh_worker_304 = client.get("/report", headers={"If-None-Match": tag})
    control = "public, max-age=60, must-revalidate"
    assert full.headers["cache-control"] == control
    assert hit_304.status_code == fresh_worker_304.status_code == 304
    assert hit_304.headers["cache-control"] == fresh_worker_304.headers["cache-control"] == control


def test_15_4_5_a_304_repeats_the_endpoints_own_vary_and_content_location(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 15.4.5: Vary and Content-Location are among the fields a 304 repeats."""
    app = make_app()

    @app.get("/doc")
    @cache(expire=600, store=store)
    async def doc(response: Response) -> dict[str, int]:
        response.headers["Vary"] = "X-Tenant"
        response.headers["Content-Location"] = "/doc.json"
        return {"doc": 1}

    with TestClient(app) as client:
        tag = client.get("/doc", headers={"x-tenant": "a"}).headers["etag"]
        for _ in range(2):  # from the miss's knowledge, then as a worker that only read it
            response = client.get("/doc", headers={"x-tenant": "a", "If-None-Match": tag})
            assert response.status_code == 304
            assert response.headers["vary"] == "X-Tenant"
            assert response.headers["content-location"] == "/doc.json"
            doc.__oxcache__.own_headers = None  # type: ignore[attr-defined]

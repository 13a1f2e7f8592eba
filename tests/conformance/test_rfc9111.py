"""RFC 9111 sections 3 (storing responses), 4 (constructing responses from caches: Vary,
freshness, stale responses) and 5 (header fields: Age, Cache-Control, Expires, Pragma).
Each test names the section it checks; each runs on memory and Redis, with APIRoute and
CachedRoute.

oxcache is a shared cache (section 1), except that the entries of a `per_user` endpoint are
a private cache of each user; "validation" (section 4.3) is running the endpoint again."""

from __future__ import annotations

import time
from datetime import timedelta
from email.utils import formatdate, parsedate_to_datetime
from functools import partial
from typing import Any, Callable

import anyio
import pytest
from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from oxcache import Cache, cache
from oxcache._core import encode_entry
from tests.conformance.conftest import MakeApp

ORIGIN = "http://testserver"


def own_headers_app(
    make_app: MakeApp, store: Cache, headers: dict[str, str], **options: Any
) -> tuple[FastAPI, list[int], Callable[..., Any]]:
    """An endpoint that sets `headers` on its response; how often it ran."""
    app = make_app()
    runs: list[int] = []

    @app.get("/thing")
    @cache(store=store, **{"expire": 600, **options})
    async def thing(response: Response) -> dict[str, int]:
        runs.append(1)
        for name, value in headers.items():
            response.headers[name] = value
        return {"run": len(runs)}

    return app, runs, thing


def lifetime_ms(client: TestClient, store: Cache, func: Callable[..., Any]) -> int | None:
    entry = client.portal.call(store.read, store.key_for(func, ORIGIN))
    return None if entry is None else entry.expires_ms - entry.created_ms


# -- section 3: storing responses ---------------------------------------------------------


def test_3_a_2xx_response_to_get_is_stored_and_reused(store: Cache, make_app: MakeApp) -> None:
    """Section 3: a final response to an understood method, with an explicit expiration
    (oxcache's `expire`), may be stored; section 4: and reused."""
    app, runs, _ = own_headers_app(make_app, store, {})
    with TestClient(app) as client:
        first, second = client.get("/thing"), client.get("/thing")
    assert second.json() == first.json() and runs == [1]
    assert second.headers["x-fastapi-cache"] == "Hit"


def test_3_other_methods_are_not_stored(store: Cache, make_app: MakeApp) -> None:
    """Section 3: "the request method is understood by the cache": only GET and HEAD."""
    app = make_app()
    runs: list[str] = []

    @app.api_route("/vote", methods=["GET", "POST", "PUT", "DELETE"])
    @cache(expire=60, store=store)
    async def vote(request: Request) -> dict[str, int]:
        runs.append(request.method)
        return {"votes": len(runs)}

    with TestClient(app) as client:
        for method in ("POST", "PUT", "DELETE", "POST"):
            response = client.request(method, "/vote")
            assert response.status_code == 200 and "x-fastapi-cache" not in response.headers
    assert runs == ["POST", "PUT", "DELETE", "POST"]


@pytest.mark.parametrize("status", [203, 204, 301, 404, 500])
def test_3_only_2xx_with_a_body_known_in_advance_is_stored(
    store: Cache, make_app: MakeApp, status: int
) -> None:
    """Section 3: storing is allowed, not required; oxcache stores 2xx only (an error
    must not become the answer to later requests)."""
    app = make_app()
    runs: list[int] = []

    @app.get("/s")
    @cache(expire=60, store=store)
    async def s() -> Response:
        runs.append(1)
        if status == 204:
            return Response(status_code=204)
        return JSONResponse({"n": len(runs)}, status_code=status)

    with TestClient(app, follow_redirects=False) as client:
        client.get("/s")
        client.get("/s")
    assert len(runs) == (1 if 200 <= status < 300 else 2)


@pytest.mark.parametrize(
    "headers",
    [
        {"Cache-Control": "no-store"},
        {"Cache-Control": "No-Store, max-age=600"},
        {"Cache-Control": "no-cache"},
        {"Cache-Control": 'no-cache="Set-Cookie", max-age=600'},
        {"Cache-Control": "private, max-age=600"},
        {"Cache-Control": 'PRIVATE="x-user"'},
        {"Cache-Control": "max-age=0"},
        {"Set-Cookie": "session=abc"},
        {"Vary": "*"},
        {"Vary": "accept-language, *"},
    ],
    ids=lambda h: "-".join(f"{k}:{v}" for k, v in h.items()),
)
def test_3_a_response_its_own_headers_forbid_is_never_stored_and_passes_unchanged(
    store: Cache, make_app: MakeApp, headers: dict[str, str]
) -> None:
    """Section 3 (no-store, private in a shared cache), 5.2.2.4 (no-cache: never reused
    without validation), 4.1 (`Vary: *` never matches), 4.2.1 (a zero lifetime) and
    oxcache's rule for Set-Cookie: not stored, and its own Cache-Control is not replaced."""
    app, runs, _ = own_headers_app(make_app, store, headers)
    with TestClient(app) as client:
        first, second = client.get("/thing"), client.get("/thing")
    assert runs == [1, 1]
    for response in (first, second):
        assert "x-fastapi-cache" not in response.headers
        if "Cache-Control" in headers:
            assert response.headers["cache-control"] == headers["Cache-Control"]
        assert "age" not in response.headers


def test_3_private_responses_are_stored_in_a_per_user_entry(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 3: `private` bars a shared cache; a per-user entry is a private cache of
    its user (section 1), so it may store it, and keeps it `private`."""
    app = make_app()
    runs: list[str] = []

    def user(x_user: str = Header()) -> str:
        return x_user

    @app.get("/me")
    @cache(expire=600, store=store, per_user=user)
    async def me(response: Response, x_user: str = Header()) -> dict[str, str]:
        runs.append(x_user)
        response.headers["Cache-Control"] = "private, max-age=60"
        return {"me": x_user}

    with TestClient(app) as client:
        for who in ("ada", "bob", "ada"):
            response = client.get("/me", headers={"x-user": who})
            assert response.json() == {"me": who}
            assert response.headers["cache-control"] == "private, max-age=60"
    assert runs == ["ada", "bob"]


def test_3_5_a_request_with_credentials_is_not_served_from_a_shared_entry(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 3.5: a shared cache does not reuse a response to a request with
    Authorization; oxcache also bypasses Cookie, unless the endpoint is per_user or says
    it is the same for everyone (`shared=True`)."""
    app, runs, _ = own_headers_app(make_app, store, {})
    with TestClient(app) as client:
        client.get("/thing")
        with_auth = client.get("/thing", headers={"Authorization": "Bearer x"})
        with_cookie = client.get("/thing", cookies={"_ga": "GA1.1"})
    assert runs == [1, 1, 1]
    assert (
        "x-fastapi-cache" not in with_auth.headers and "x-fastapi-cache" not in with_cookie.headers
    )


# -- section 4.1: Vary --------------------------------------------------------------------


def vary_app(make_app: MakeApp, store: Cache, vary: Callable[[Request], str]) -> FastAPI:
    app = make_app()

    @app.get("/v")
    @cache(expire=600, store=store)
    async def v(request: Request, response: Response) -> dict[str, Any]:
        response.headers["Vary"] = vary(request)
        return {
            "tenant": request.headers.get("x-tenant"),
            "region": request.headers.get("x-region"),
        }

    return app


def test_4_1_a_stored_response_is_reused_only_when_the_headers_its_vary_names_match(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 4.1: reuse only when "all the presented request header fields nominated by
    that Vary field value match"; absent matches only absent; values may be normalized
    for whitespace and combined lines."""
    app = vary_app(make_app, store, lambda r: "X-Tenant")
    with TestClient(app) as client:
        assert client.get("/v", headers={"x-tenant": "a"}).json()["tenant"] == "a"
        assert client.get("/v", headers={"x-tenant": "b"}).json()["tenant"] == "b"
        assert client.get("/v").json()["tenant"] is None
        assert client.get("/v", headers={"x-tenant": ""}).json()["tenant"] == ""
        spaced = client.get("/v", headers={"x-tenant": "  a "})
        assert spaced.headers["x-fastapi-cache"] == "Hit" and spaced.json()["tenant"] == "a"
        unrelated = client.get("/v", headers={"x-tenant": "b", "x-region": "eu"})
        assert unrelated.headers["x-fastapi-cache"] == "Hit"


def test_4_1_vary_listing_several_fields_keys_all_of_them(store: Cache, make_app: MakeApp) -> None:
    """Section 4.1: every field the Vary lists must match."""
    app = vary_app(make_app, store, lambda r: "x-tenant, X-Region")
    with TestClient(app) as client:
        for tenant, region in [("a", "eu"), ("a", "us"), ("b", "eu"), ("a", "eu")]:
            body = client.get("/v", headers={"x-tenant": tenant, "x-region": region}).json()
            assert body == {"tenant": tenant, "region": region}


def test_4_1_a_response_whose_vary_grows_is_not_served_under_the_old_fields(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 4.1: an entry stored under a key that does not hold every field its own
    Vary names (here written by another worker or version) is not used; the endpoint
    learns the field and keys it from then on."""
    app = vary_app(make_app, store, lambda r: "X-Tenant")
    with TestClient(app) as client:
        assert client.get("/v", headers={"x-tenant": "a"}).json()["tenant"] == "a"
        func = next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/v")  # type: ignore[attr-defined]
        key = func.__oxcache__.request_key(  # type: ignore[attr-defined]
            store.keyspace,
            {},
            None,
            func.__oxcache__.vary_names,  # type: ignore[attr-defined]
            {b"x-tenant": b"a"},
            {"scheme": "http", "query_string": b""},
            b"testserver",
        )
        now = int(time.time() * 1000)
        # Stamped with its generations, as a worker writes it (issue 17).
        generations = func.__oxcache__.generations(store.keyspace, {}, None)  # type: ignore[attr-defined]
        lease = client.portal.call(store.entries.lease, key, generations, 600_000)
        assert lease is not None
        foreign = encode_entry(
            200,
            [(b"content-type", b"application/json"), (b"vary", b"X-Tenant, X-Region")],
            b'{"tenant":"a","region":"eu"}',
            now,
            now + 600_000,
            lease.stamp,
        )
        client.portal.call(partial(store.write, key, foreign, 600_000))
        response = client.get("/v", headers={"x-tenant": "a", "x-region": "us"})
        assert response.json() == {"tenant": "a", "region": "us"}
        again = client.get("/v", headers={"x-tenant": "a", "x-region": "eu"})
        assert again.json() == {"tenant": "a", "region": "eu"}


def test_4_1_concurrent_misses_varying_on_a_field_not_yet_learned_get_their_own(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 4.1 with request collapsing (section 4): requests that waited for one run
    do not take its response when its Vary names a field their key did not hold."""
    app = make_app()
    started = anyio.Event()

    @app.get("/slow")
    @cache(expire=600, store=store)
    async def slow(request: Request, response: Response) -> dict[str, Any]:
        started.set()
        await anyio.sleep(0.2)
        response.headers["Vary"] = "X-Tenant"
        return {"tenant": request.headers.get("x-tenant")}

    with TestClient(app) as client:

        async def both() -> list[Any]:
            results: list[Any] = [None, None]

            async def get(i: int, tenant: str) -> None:
                response = await anyio.to_thread.run_sync(
                    lambda: client.get("/slow", headers={"x-tenant": tenant})
                )
                results[i] = response.json()

            async with anyio.create_task_group() as group:
                group.start_soon(get, 0, "alice")
                await anyio.sleep(0.05)
                group.start_soon(get, 1, "bob")
            return results

        results = anyio.run(both)
    assert results == [{"tenant": "alice"}, {"tenant": "bob"}]


# -- section 4.2: freshness ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "per_user", "expected_s"),
    [
        ({}, False, 600),
        ({"Cache-Control": "max-age=60"}, False, 60),
        ({"Cache-Control": "max-age=6000"}, False, 600),
        ({"Cache-Control": "max-age=600, s-maxage=30"}, False, 30),
        ({"Cache-Control": "max-age=60, s-maxage=30"}, True, 60),
        ({"Cache-Control": "max-age=60, max-age=20"}, False, 20),
        ({"Cache-Control": "public"}, False, 600),
    ],
)
def test_4_2_1_the_lifetime_is_s_maxage_then_max_age_capped_by_expire(
    store: Cache,
    make_app: MakeApp,
    headers: dict[str, str],
    per_user: bool,
    expected_s: int,
) -> None:
    """Section 4.2.1: the freshness lifetime is s-maxage (shared caches), else max-age,
    else Expires; the most restrictive of repeated directives wins. oxcache stores the
    entry for the smaller of that and `expire`."""
    app = make_app()

    def user() -> str:
        return "ada"

    @app.get("/f")
    @cache(expire=600, store=store, per_user=user if per_user else None)
    async def f(response: Response) -> dict[str, int]:
        for name, value in headers.items():
            response.headers[name] = value
        return {"ok": 1}

    with TestClient(app) as client:
        response = client.get("/f")
        assert response.headers["x-fastapi-cache"] == "Miss"
        key = store.key_for(f, ORIGIN)
        if per_user:
            key = key.replace("(@origin", '(@user="ada",@origin')
        entry = client.portal.call(store.read, key)
    assert entry is not None and entry.expires_ms - entry.created_ms == expected_s * 1000
    if headers:
        assert response.headers["cache-control"] == headers["Cache-Control"] or per_user


def test_4_2_1_expires_gives_the_lifetime_when_no_max_age(store: Cache, make_app: MakeApp) -> None:
    """Section 4.2.1: "Expires minus Date" (now, when the endpoint sends no Date)."""
    expires = formatdate(time.time() + 120, usegmt=True)
    app, _, func = own_headers_app(make_app, store, {"Expires": expires})
    with TestClient(app) as client:
        client.get("/thing")
        lifetime = lifetime_ms(client, store, func)
    assert lifetime is not None and 110_000 <= lifetime <= 120_000


@pytest.mark.parametrize("expires", ["0", "not a date", "Sun, 06 Nov 1994 08:49:37 GMT"])
def test_5_3_an_invalid_or_past_expires_is_stale_and_not_stored(
    store: Cache, make_app: MakeApp, expires: str
) -> None:
    """Section 5.3: invalid dates, "especially the value 0", are in the past."""
    app, runs, _ = own_headers_app(make_app, store, {"Expires": expires})
    with TestClient(app) as client:
        client.get("/thing")
        client.get("/thing")
    assert runs == [1, 1]


def test_4_2_1_max_age_overrides_expires(store: Cache, make_app: MakeApp) -> None:
    """Section 5.3: Expires is ignored when max-age is present."""
    headers = {"Cache-Control": "max-age=60", "Expires": "0"}
    app, runs, func = own_headers_app(make_app, store, headers)
    with TestClient(app) as client:
        client.get("/thing")
        client.get("/thing")
        assert lifetime_ms(client, store, func) == 60_000
    assert runs == [1]


@pytest.mark.parametrize(
    "control", ["max-age=600, must-revalidate", "s-maxage=600", "proxy-revalidate"]
)
def test_4_2_4_must_revalidate_forbids_serving_stale(
    store: Cache, make_app: MakeApp, control: str
) -> None:
    """Section 4.2.4: no stale response when `must-revalidate` (or, for a shared cache,
    `s-maxage` or `proxy-revalidate`) says so, whatever `stale_while_revalidate` allows."""
    app, runs, _ = own_headers_app(
        make_app,
        store,
        {"Cache-Control": control},
        expire=timedelta(milliseconds=100),
        stale_while_revalidate=60,
    )
    with TestClient(app) as client:
        client.get("/thing")
        time.sleep(0.15)
        stale = client.get("/thing")
    assert runs == [1, 1] and stale.json() == {"run": 2}


# -- section 5: header fields -------------------------------------------------------------


def test_5_1_age_is_sent_on_hits_only_and_is_a_non_negative_integer(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 5.1 (and section 4: a response served without validation MUST carry Age)."""
    app, _, _ = own_headers_app(make_app, store, {})
    with TestClient(app) as client:
        miss, hit = client.get("/thing"), client.get("/thing")
    assert "age" not in miss.headers
    assert hit.headers["age"].isdigit() and int(hit.headers["age"]) >= 0


def test_5_2_2_1_max_age_is_sent_with_the_lifetime_when_the_endpoint_sends_none(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 5.2.2.1, with section 5.3: `max-age` and the matching `Expires`."""
    app, _, _ = own_headers_app(make_app, store, {})
    with TestClient(app) as client:
        response = client.get("/thing")
    assert response.headers["cache-control"] == "max-age=600"
    expires = parsedate_to_datetime(response.headers["expires"]).timestamp()
    assert abs(expires - (time.time() + 600)) < 60  # an IMF-fixdate of the entry's expiry
    assert response.headers["expires"].endswith(" GMT")


def test_5_2_2_the_endpoints_own_cache_control_is_kept_with_age_on_hits(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 5.2.2 ("A cache MUST obey the Cache-Control directives"): the endpoint's
    own value is sent on the miss and every hit, with `Age` so downstream caches count
    its max-age from when it was stored; oxcache adds no Expires of its own."""
    control = "public, max-age=60, stale-if-error=30"
    app, _, _ = own_headers_app(make_app, store, {"Cache-Control": control})
    with TestClient(app) as client:
        miss, hit = client.get("/thing"), client.get("/thing")
    assert miss.headers["cache-control"] == hit.headers["cache-control"] == control
    assert "expires" not in miss.headers and "age" in hit.headers


def test_5_2_3_unknown_directives_are_ignored(store: Cache, make_app: MakeApp) -> None:
    """Section 5.2.3: "A cache MUST ignore unrecognized cache directives"."""
    app, runs, _ = own_headers_app(
        make_app, store, {"Cache-Control": 'max-age=60, community="UCI", x-unknown'}
    )
    with TestClient(app) as client:
        client.get("/thing")
        client.get("/thing")
    assert runs == [1]


@pytest.mark.parametrize(
    "headers",
    [{"Cache-Control": "no-store"}, {"Cache-Control": "NO-CACHE"}, {"Pragma": "no-cache"}],
)
def test_5_2_1_and_5_4_request_no_store_and_no_cache_bypass_the_cache(
    store: Cache, make_app: MakeApp, headers: dict[str, str]
) -> None:
    """Sections 5.2.1.4, 5.2.1.5 and 5.4 (Pragma when there is no Cache-Control): nothing
    is served from or written to the cache (fastapi-redis-cache's behaviour)."""
    app, runs, _ = own_headers_app(make_app, store, {})
    with TestClient(app) as client:
        client.get("/thing")
        bypassed = client.get("/thing", headers=headers)
        after = client.get("/thing")
    assert runs == [1, 1] and bypassed.json() == {"run": 2} and after.json() == {"run": 1}


def test_5_2_1_1_request_max_age_refuses_an_older_entry(store: Cache, make_app: MakeApp) -> None:
    """Section 5.2.1.1: the client accepts no response older than max-age seconds."""
    app, _, _ = own_headers_app(make_app, store, {})
    with TestClient(app) as client:
        client.get("/thing")
        time.sleep(1.05)
        fresh_enough = client.get("/thing", headers={"Cache-Control": "max-age=3600"})
        too_old = client.get("/thing", headers={"Cache-Control": "max-age=0"})
    assert fresh_enough.json() == {"run": 1} and too_old.json() == {"run": 2}


def test_5_2_2_7_a_per_user_response_is_always_private(store: Cache, make_app: MakeApp) -> None:
    """Section 5.2.2.7: one user's response must not be stored by a shared cache
    downstream: `private, ` goes before an own Cache-Control that lacks it (the only change
    oxcache makes to it)."""
    app = make_app()

    def user(x_user: str = Header()) -> str:
        return x_user

    @app.get("/mine")
    @cache(expire=600, store=store, per_user=user)
    async def mine(response: Response, x_user: str = Header()) -> dict[str, str]:
        response.headers["Cache-Control"] = "max-age=60"
        return {"me": x_user}

    with TestClient(app) as client:
        miss = client.get("/mine", headers={"x-user": "ada"})
        hit = client.get("/mine", headers={"x-user": "ada"})
    assert miss.headers["cache-control"] == hit.headers["cache-control"] == "private, max-age=60"
    assert hit.headers["x-fastapi-cache"] == "Hit"


def test_5_2_2_the_decorators_header_is_sent_but_the_endpoints_own_decides_storage(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 5.2.2: `@cache(cache_control=...)` chooses the header sent; the endpoint's
    own directives still decide whether and how long the response is stored."""
    app = make_app()
    runs: list[str] = []

    @app.get("/c/{kind}")
    @cache(expire=600, store=store, cache_control="public, s-maxage=600")
    async def c(kind: str, response: Response) -> dict[str, str]:
        runs.append(kind)
        response.headers["Cache-Control"] = "no-store" if kind == "secret" else "max-age=60"
        return {"kind": kind}

    with TestClient(app) as client:
        for kind in ("secret", "secret", "open", "open"):
            response = client.get(f"/c/{kind}")
            expected = "no-store" if kind == "secret" else "public, s-maxage=600"
            assert response.headers["cache-control"] == expected
        entry = client.portal.call(store.read, store.key_for(c, ORIGIN, kind="open"))
    assert runs == ["secret", "secret", "open"]
    assert entry is not None and entry.expires_ms - entry.created_ms == 60_000

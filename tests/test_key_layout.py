"""The key layout guarded as a whole: endpoints that differ in any way never share a key,
requests that differ in any keyed input never share a key, and the text of the request's
parts (`@user`, `@vary:`, `@query`, `@origin`) is pinned (a change is a format change:
KEY_FORMAT_VERSION, CHANGELOG, docs/formats.md)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import fastapi
import pytest
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from oxcache import Cache, cache
from oxcache._core import secret_digest
from oxcache.endpoint import CachedEndpoint

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REQUESTS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VARY = ["accept-language", "x-region", "authorization"]
_made = itertools.count()


class Filter(BaseModel):
    limit: int = 10
    order_by: str = Field("id", alias="order-by")


def user_id(x_user: str = Header("nobody")) -> str:
    return x_user


spec = st.fixed_dictionaries(
    {
        "module": st.sampled_from(["app.views", "app.api", "app"]),
        "name": st.sampled_from(["items", "item", "accept-language", "prefs"]),
        "route": st.sampled_from(["/a", "/b"]),
        "vary": st.lists(st.sampled_from(VARY), unique=True, max_size=3),
        "per_user": st.booleans(),
        "tags": st.lists(st.sampled_from(["items", "item:{n}"]), unique=True, max_size=2),
    }
)


def make_endpoint(store: Cache, index: int, description: dict[str, Any]) -> Callable[..., Any]:
    """A fresh function with the spec's module and name, decorated as the spec says; it
    answers with its own index, so a shared key shows as another endpoint's body."""

    async def endpoint(n: int = 0, user: str = Depends(user_id)) -> dict[str, int]:
        return {"endpoint": index}

    endpoint.__module__ = description["module"]
    endpoint.__name__ = endpoint.__qualname__ = description["name"]
    return cache(
        expire=60,
        store=store,
        vary=description["vary"],
        per_user=user_id if description["per_user"] else None,
        tags=description["tags"],
    )(endpoint)


def key_of(store: Cache, func: Callable[..., Any], scope: dict[str, Any]) -> str:
    endpoint: CachedEndpoint = func.__oxcache__  # type: ignore[attr-defined]
    names = endpoint.vary_names
    headers = dict(scope["headers"])
    varied = {name: headers[name] for name in names if name in headers} if names else None
    user = "ada" if endpoint.per_user is not None else None
    kwargs = {"n": 0, "user": "ada"}
    return endpoint.request_key(
        store.keyspace, kwargs, user, names, varied, scope, headers.get(b"host")
    )


def scope_of(path: str = "/a", query: bytes = b"", host: bytes = b"example.com") -> dict[str, Any]:
    return {
        "type": "http",
        "scheme": "https",
        "path": path,
        "query_string": query,
        "headers": [
            (b"host", host),
            (b"accept-language", b"en"),
            (b"x-region", b"eu"),
            (b"authorization", b"Bearer t"),
        ],
    }


@PROPS
@given(st.lists(spec, min_size=2, max_size=5))
def test_endpoints_differing_in_any_way_never_share_a_key(specs: list[dict[str, Any]]) -> None:
    """Module, name, route, `vary` list, per-user or not, tags: any two endpoints (even two
    made from equal specs, as a route factory does) get different keys for the same
    request and arguments."""
    store = Cache(prefix=f"layout{next(_made)}")
    funcs = [make_endpoint(store, i, s) for i, s in enumerate(specs)]
    keys = [key_of(store, f, scope_of(s["route"])) for f, s in zip(funcs, specs, strict=True)]
    assert len(set(keys)) == len(keys), keys


@REQUESTS
@given(st.lists(spec, min_size=2, max_size=4))
def test_distinct_endpoints_answer_with_their_own_body(specs: list[dict[str, Any]]) -> None:
    """The same, end to end: every endpoint's miss and hit carry its own body."""
    store = Cache(prefix=f"layout{next(_made)}")
    app = FastAPI()
    for i, description in enumerate(specs):
        app.get(f"/{i}{description['route']}")(make_endpoint(store, i, description))
    headers = {"accept-language": "en", "x-region": "eu", "authorization": "Bearer t"}
    with TestClient(app) as client:
        for round_ in ("Miss", "Hit"):
            for i, description in enumerate(specs):
                response = client.get(f"/{i}{description['route']}", headers=headers)
                assert response.json() == {"endpoint": i}
                if "authorization" in description["vary"] or description["per_user"]:
                    assert response.headers["x-fastapi-cache"] == round_


request_input = st.fixed_dictionaries(
    {
        "scheme": st.sampled_from(["http", "https"]),
        "host": st.sampled_from([b"a.example.com", b"b.example.com", b"a.example.com:8443"]),
        "root_path": st.sampled_from(["", "/api"]),
        "query": st.sampled_from([b"", b"page=2", b"page=3", b"q=1", b"q=1&page=2", b"token=x"]),
        "language": st.sampled_from([None, b"en", b"fr", b""]),
        "user": st.sampled_from(["ada", "bob"]),
    }
)


@PROPS
@given(st.lists(request_input, min_size=2, max_size=6, unique_by=lambda r: repr(sorted(r.items()))))
def test_requests_differing_in_any_keyed_input_never_share_a_key(
    requests: list[dict[str, Any]],
) -> None:
    """Scheme, Host, root path, an undeclared query parameter, a varying header (absent,
    empty or set) and the user each change the key of an endpoint that takes the Request."""
    store = Cache(prefix=f"layout{next(_made)}")

    async def page(request: Request, q: int = 0, user: str = Depends(user_id)) -> None: ...

    func = cache(expire=60, store=store, vary=["accept-language"], per_user=user_id)(page)
    endpoint: CachedEndpoint = func.__oxcache__  # type: ignore[attr-defined]
    keys = set()
    for r in requests:
        headers = [(b"host", r["host"])]
        if r["language"] is not None:
            headers.append((b"accept-language", r["language"]))
        scope = {
            "type": "http",
            "scheme": r["scheme"],
            "root_path": r["root_path"],
            "query_string": r["query"],
            "headers": headers,
        }
        q = 1 if b"q=1" in r["query"] else 0
        varied = {name: value for name, value in headers if name == b"accept-language"}
        keys.add(
            endpoint.request_key(
                store.keyspace,
                {"q": q, "user": r["user"]},
                r["user"],
                endpoint.vary_names,
                varied,
                scope,
                r["host"],
            )
        )
    assert len(keys) == len(requests)


def test_the_text_of_a_requests_parts_is_pinned() -> None:
    """What the decorator appends to a call's key, in order: `@user`, `@vary:<name>`,
    `@query`, `@origin` (KEY_FORMAT_VERSION 2)."""
    store = Cache(prefix="myapi")
    seed = Cache(prefix="myapi-cache", per_host=False)

    async def prefs(request: Request, id: int, user: str = Depends(user_id)) -> None: ...

    prefs.__module__ = "app"
    func = cache(expire=60, store=store, vary=["Accept-Language"], per_user=user_id)(prefs)
    endpoint: CachedEndpoint = func.__oxcache__  # type: ignore[attr-defined]
    endpoint.learn_vary([b"x-tenant"])  # as a response's `Vary: X-Tenant` teaches it
    app = FastAPI()
    app.get("/prefs")(func)
    scope = {
        "type": "http",
        "route": app.routes[-1],  # declares `id` (a query parameter), so it is not in @query
        "scheme": "https",
        "root_path": "/api",
        "query_string": b"id=1&page=2&api_key=s3cret",
        "headers": [(b"host", b"shop.example.com"), (b"accept-language", b" en ")],
    }
    args = {"id": 1, "user": "42"}
    varied = {b"accept-language": b" en "}
    key = endpoint.request_key(
        store.keyspace, args, "42", endpoint.vary_names, varied, scope, b"shop.example.com"
    )
    assert key == (
        'myapi:app.prefs(id=1,user="42",@user="42",@vary:accept-language="en",'
        '@vary:x-tenant=None,@query="page=2&api_key=%2300d0666b367bdb35445ddc1d5ced22e7",'
        '@origin="https://shop.example.com/api")'
    )
    plain = endpoint.request_key(seed.keyspace, args, None, (), None, scope, b"x")
    assert plain == (
        'myapi-cache:app.prefs(id=1,user="42",'
        '@query="page=2&api_key=%2300d0666b367bdb35445ddc1d5ced22e7")'
    )
    assert store.key_for(func, id=1, user="42") == 'myapi:app.prefs(id=1,user="42")'
    assert store.key_for(func, "http://testserver", id=1, user="42") == (
        'myapi:app.prefs(id=1,user="42",@origin="http://testserver")'
    )


def test_the_compatibility_store_keeps_the_seeds_keys(redis_url: str) -> None:
    """`FastApiRedisCache().init(...)`: `myapi-cache:api.get_user(id=1)`, whatever the host;
    `init(..., per_host=True)` keys the origin too."""
    from oxcache import FastApiRedisCache
    from oxcache.lifecycle import set_default

    async def get_user(id: int) -> dict[str, int]:
        return {"id": id}

    get_user.__module__ = "api"
    app = FastAPI()
    func = app.get("/get_user")(cache(expire=60)(get_user))
    for per_host, expected in (
        (False, "myapi-cache:api.get_user(id=1)"),
        (True, 'myapi-cache:api.get_user(id=1,@origin="http://a.example.com")'),
    ):
        FastApiRedisCache().init(host_url=redis_url, prefix="myapi-cache", per_host=per_host)
        try:
            with TestClient(app) as client:
                client.get("http://a.example.com/get_user?id=1")
                store = FastApiRedisCache.store
                assert store is not None
                key = store.key_for(func, "http://a.example.com", id=1)
                assert key == expected
                assert client.portal.call(store.read, key) is not None
                assert client.portal.call(partial(store.invalidate, func, id=1)) == 1
        finally:
            FastApiRedisCache.store = None
            set_default(None)


@pytest.mark.skipif(
    tuple(int(p) for p in fastapi.__version__.split(".")[:2]) < (0, 159),
    reason="FastAPI before 0.159 refuses an optional query model (`Annotated[Model | None, "
    "Query()]`) without oxcache; the floor (0.148) serves everything else",
)
def test_only_query_parameters_the_route_does_not_declare_go_into_query() -> None:
    """Declared: by name or alias, a pydantic model's fields (`Annotated[Model, Query()]`),
    lists. Undeclared: anything else, a name that is a path parameter, in the request's
    order, repeated names kept, secrets hashed."""

    from pydantic import BaseModel, Field

    class Filter(BaseModel):
        limit: int = 10
        order_by: str = Field("id", alias="order-by")

    store = Cache(prefix="q", per_host=False)
    app = FastAPI()

    @app.get("/items/{id}")
    @cache(expire=60, store=store)
    async def items(
        id: int,
        request: Request,
        search: Annotated[str, Query(alias="q")] = "",
        flt: Annotated[Filter | None, Query()] = None,
        tags: Annotated[list[str] | None, Query()] = None,
    ) -> None: ...

    endpoint: CachedEndpoint = items.__oxcache__  # type: ignore[attr-defined]
    scope = {
        "type": "http",
        "route": app.routes[-1],
        "path_params": {"id": 1},
        "query_string": b"q=x&limit=5&page=3&order-by=a&tags=1&id=9&tags=2&page=4&token=abc",
    }
    key = endpoint.request_key(store.keyspace, {"id": 1}, None, (), None, scope, None)
    assert key.endswith(f'@query="page=3&id=9&page=4&token=%23{secret_digest("abc")[1:]}")')

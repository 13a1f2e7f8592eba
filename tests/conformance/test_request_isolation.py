"""Issue 16, "What was seen": each case served one request's body to another request as a
hit. Every test here runs on memory and Redis, with `APIRoute` and `CachedRoute`, and each
failed on main before the fix (case 1 excepted: the restructuring of issue 15 fixed it
first; its test guards it)."""

from __future__ import annotations

import contextvars
from functools import partial
from typing import Any

from fastapi import Depends, Header, Request, Response
from fastapi.testclient import TestClient
from starlette.middleware.base import BaseHTTPMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from oxcache import Cache, cache
from tests.conformance.conftest import MakeApp


def test_case1_endpoints_whose_vary_lists_end_alike_never_share_entries(
    store: Cache, make_app: MakeApp
) -> None:
    """Two endpoints of one module whose `vary` lists end with the same header (here: are
    the same), shared and per-user: each answers with its own body. Before issue 15 the key
    of both was `prefix:module.accept-language(...)`."""
    app = make_app()

    def user(x_user: str = Header()) -> str:
        return x_user

    @app.get("/page_a")
    @cache(expire=60, store=store, vary=["accept-language"])
    async def page_a() -> dict[str, str]:
        return {"page": "a"}

    @app.get("/page_b")
    @cache(expire=60, store=store, vary=["accept-language"])
    async def page_b() -> dict[str, str]:
        return {"page": "b"}

    @app.get("/me/a")
    @cache(expire=60, store=store, per_user=user, vary=["accept-language"])
    async def me_a(who: str = Depends(user)) -> dict[str, str]:
        return {"me": "a", "who": who}

    @app.get("/me/b")
    @cache(expire=60, store=store, per_user=user, vary=["accept-language"])
    async def me_b(who: str = Depends(user)) -> dict[str, str]:
        return {"me": "b", "who": who}

    headers = {"accept-language": "en", "x-user": "ada"}
    with TestClient(app) as client:
        for _ in range(2):
            assert client.get("/page_a", headers=headers).json() == {"page": "a"}
            assert client.get("/page_b", headers=headers).json() == {"page": "b"}
            assert client.get("/me/a", headers=headers).json() == {"me": "a", "who": "ada"}
            assert client.get("/me/b", headers=headers).json() == {"me": "b", "who": "ada"}


def test_case2_the_endpoints_own_vary_keeps_tenants_apart(store: Cache, make_app: MakeApp) -> None:
    """RFC 9111 section 4.1: a response with `Vary: X-Tenant` is reused only for a request
    with the same X-Tenant."""
    app = make_app()
    runs: list[str] = []

    @app.get("/dashboard")
    @cache(expire=60, store=store)
    async def dashboard(request: Request, response: Response) -> dict[str, Any]:
        tenant = request.headers.get("x-tenant")
        runs.append(str(tenant))
        response.headers["Vary"] = "X-Tenant"
        return {"tenant": tenant}

    with TestClient(app) as client:
        for tenant in ("alice", "bob", "alice", "bob"):
            response = client.get("/dashboard", headers={"X-Tenant": tenant})
            assert response.json() == {"tenant": tenant}
            assert response.headers["vary"] == "X-Tenant"
        assert client.get("/dashboard").json() == {"tenant": None}
    assert runs == ["alice", "bob", "None"]  # one run per tenant, then hits


def test_case3_vary_star_is_never_stored(store: Cache, make_app: MakeApp) -> None:
    """RFC 9111 section 4.1: a stored response with `Vary: *` always fails to match."""
    app = make_app()
    runs: list[int] = []

    @app.get("/random")
    @cache(expire=60, store=store)
    async def random(response: Response) -> dict[str, int]:
        runs.append(len(runs))
        response.headers["Vary"] = "*"
        return {"n": len(runs)}

    with TestClient(app) as client:
        first, second = client.get("/random"), client.get("/random")
    assert (first.json(), second.json()) == ({"n": 1}, {"n": 2})
    assert second.headers["vary"] == "*" and "x-fastapi-cache" not in second.headers


def test_case4_the_endpoints_no_cache_is_kept_and_never_replayed(
    store: Cache, make_app: MakeApp
) -> None:
    """RFC 9111 section 5.2.2.4: `no-cache` is not replaced by `max-age`, and the response
    is not reused without revalidation (for oxcache: never stored)."""
    app = make_app()
    runs: list[int] = []

    @app.get("/balance")
    @cache(expire=600, store=store)
    async def balance(response: Response) -> dict[str, int]:
        runs.append(1)
        response.headers["Cache-Control"] = "no-cache"
        return {"balance": len(runs)}

    with TestClient(app) as client:
        first, second = client.get("/balance"), client.get("/balance")
    for response in (first, second):
        assert response.headers["cache-control"] == "no-cache"
        assert "expires" not in response.headers and "age" not in response.headers
    assert (first.json(), second.json()) == ({"balance": 1}, {"balance": 2})


def test_case5_the_host_is_part_of_the_key(store: Cache, make_app: MakeApp) -> None:
    """One app, several tenants by host name: an endpoint reading the host from the request,
    and one without arguments that reads it from a ContextVar a middleware sets."""
    tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="")
    app = make_app()

    async def tenant_from_host(request: Request, call_next: Any) -> Any:
        token = tenant_var.set(request.headers["host"].split(".")[0])
        try:
            return await call_next(request)
        finally:
            tenant_var.reset(token)

    app.add_middleware(BaseHTTPMiddleware, dispatch=tenant_from_host)

    @app.get("/whoami")
    @cache(expire=60, store=store)
    async def whoami(request: Request) -> dict[str, str]:
        return {"tenant": request.url.hostname or ""}

    @app.get("/settings")
    @cache(expire=60, store=store)
    async def settings() -> dict[str, str]:
        return {"tenant": tenant_var.get()}

    with TestClient(app) as client:
        for host in ("alice", "bob", "alice", "bob"):
            whoami_r = client.get(f"http://{host}.example.com/whoami")
            assert whoami_r.json() == {"tenant": f"{host}.example.com"}
            assert client.get(f"http://{host}.example.com/settings").json() == {"tenant": host}
        hit = client.get("http://bob.example.com/whoami")
    assert hit.headers["x-fastapi-cache"] == "Hit"


def test_case6_undeclared_query_parameters_are_part_of_the_key(
    store: Cache, make_app: MakeApp
) -> None:
    """An endpoint that reads `page` from `request.query_params` without declaring it."""
    app = make_app()

    @app.get("/articles")
    @cache(expire=60, store=store)
    async def articles(request: Request, tag: str = "all") -> dict[str, Any]:
        return {"tag": tag, "page": request.query_params.get("page", "1")}

    asked = [
        ("", "all", "1"),
        ("?page=2", "all", "2"),
        ("?tag=rust&page=3", "rust", "3"),
        ("?page=2&tag=rust", "rust", "2"),
        ("?page=2", "all", "2"),
    ]
    with TestClient(app) as client:
        for query, tag, page in asked:
            response = client.get("/articles" + query)
            assert response.json() == {"tag": tag, "page": page}
        assert response.headers["x-fastapi-cache"] == "Hit"


def test_case7_the_scheme_behind_proxy_headers_is_part_of_the_key(
    store: Cache, make_app: MakeApp
) -> None:
    """Behind uvicorn's proxy headers, `X-Forwarded-Proto: http` filled the entry and the
    https request got `http://` links."""
    app = make_app()

    @app.get("/items/{id}", name="item")
    @cache(expire=60, store=store)
    async def item(id: int, request: Request) -> dict[str, str]:
        return {"self": str(request.url_for("item", id=id))}

    proxied = ProxyHeadersMiddleware(app, trusted_hosts="*")
    with TestClient(proxied) as client:  # type: ignore[arg-type]
        for proto in ("http", "https", "http", "https"):
            response = client.get(
                "http://shop.example.com/items/1", headers={"X-Forwarded-Proto": proto}
            )
            assert response.json() == {"self": f"{proto}://shop.example.com/items/1"}
        assert response.headers["x-fastapi-cache"] == "Hit"


def test_invalidate_reaches_the_entries_of_every_origin(store: Cache, make_app: MakeApp) -> None:
    """Host and scheme are keyed, and `store.invalidate(endpoint, **args)` still deletes
    the call's entries for every one of them (they are listed under the base key)."""
    app = make_app()
    runs: list[str] = []

    @app.get("/items/{id}")
    @cache(expire=600, store=store)
    async def item(id: int, request: Request) -> dict[str, Any]:
        runs.append(str(request.base_url))
        return {"id": id, "base": str(request.base_url)}

    origins = ["http://a.example.com", "https://a.example.com", "http://b.example.com"]
    with TestClient(app) as client:
        for origin in origins:
            client.get(f"{origin}/items/1")
            client.get(f"{origin}/items/2")
        assert len(runs) == 6
        for origin in origins:
            assert client.get(f"{origin}/items/1").headers["x-fastapi-cache"] == "Hit"
        assert client.portal.call(partial(store.invalidate, item, id=1)) == 3
        for origin in origins:
            assert client.get(f"{origin}/items/1").headers["x-fastapi-cache"] == "Miss"
            assert client.get(f"{origin}/items/2").headers["x-fastapi-cache"] == "Hit"

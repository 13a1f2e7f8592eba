"""route.py, early.py and serve.answer_early: `CachedRoute`. Hits answered before FastAPI
solves the parameters, with the same responses as the plain route, and never for a route
that has something else to run (dependencies, security, per-user); what it remembers is
bounded, and secret vary values are remembered hashed. On memory, Redis and Redis Cluster
(parametrized through make_store)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Any

import anyio
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import AfterValidator

import oxcache.early
import oxcache.route
import oxcache.serve
from oxcache import Cache, CachedRoute, MemoryBackend, cache
from tests.apps import MakeStore, OwnHandlerRoute, client_for

_VOLATILE = {"date", "expires", "age", "cache-control"}


SOLVED: Counter[str] = Counter()


def _solved(value: str) -> str:
    """Counts how often FastAPI solved (validated) the parameter."""
    SOLVED["q"] += 1
    return value


CountedQuery = Annotated[str, AfterValidator(_solved)]


def items_app(store: Cache, counter: Counter[str], route_class: type | None) -> FastAPI:
    app = FastAPI()
    if route_class is not None:
        app.router.route_class = route_class

    @app.get("/items/{item_id}")
    @cache(expire=300, store=store)
    async def item(item_id: int, q: CountedQuery = "none") -> dict[str, Any]:
        counter["ran"] += 1
        return {"id": item_id, "q": q, "run": counter["ran"]}

    return app


def stable(response: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
    """The response without what depends on the second it was made in: the dated headers,
    and Cache-Status's remaining `ttl` (299 or 300 depending on the clock's tick)."""
    headers = sorted(
        (k, re.sub(r"ttl=\d+", "ttl=N", v) if k == "cache-status" else v)
        for k, v in response.headers.items()
        if k not in _VOLATILE
    )
    return response.status_code, response.content, headers


def test_hits_skip_solving_and_answer_like_the_plain_route(make_store: MakeStore) -> None:
    """The same answers from FastAPI's handler on every request (`answer_early=False`),
    from `CachedRoute`, and from a plain `APIRoute` that answers early from its second
    request on (the default); only the number of times FastAPI solved `q` differs."""
    counters: list[Counter[str]] = [Counter(), Counter(), Counter()]
    stores = [make_store(answer_early=False), make_store(), make_store()]
    route_classes = [None, CachedRoute, None]
    clients = [
        client_for(items_app(store, counter, route_class), store)
        for store, counter, route_class in zip(stores, counters, route_classes, strict=True)
    ]
    with clients[0] as plain, clients[1] as early, clients[2] as adopted:
        # The plain route solved `q` on every request that gave it; CachedRoute only on
        # the misses (the first request of each raw URL, which teaches it the key); the
        # adopted route also on its first request, before it was rebuilt.
        check_same_answers(plain, (early, 2), (adopted, 3))
    assert [counter["ran"] for counter in counters] == [3, 3, 3]
    # 3 hits and a 304 each, and (plain) the request that read the ETag.
    assert [store.stats()["hits"] for store in stores] == [5, 4, 4]


def check_same_answers(plain: TestClient, *others: tuple[TestClient, int]) -> None:
    """`plain` (solving `q` 4 times) and each of `others` (solving it as many times as
    said) answer the same requests the same."""
    requests: list[tuple[str, dict[str, str]]] = [
        ("/items/1?q=a", {}),
        ("/items/1?q=a", {}),
        ("/items/1?q=b", {}),
        ("/items/2", {}),
        ("/items/1?q=a", {}),
        ("/items/2", {}),
    ]
    solved = SOLVED["q"]
    plain_responses = [stable(plain.get(path, headers=headers)) for path, headers in requests]
    assert SOLVED["q"] - solved == 4
    for other, expected in others:
        solved = SOLVED["q"]
        responses = [stable(other.get(path, headers=headers)) for path, headers in requests]
        assert (responses, SOLVED["q"] - solved) == (plain_responses, expected)
    etag = plain.get("/items/1?q=a").headers["etag"]
    for client in (plain, *(other for other, _ in others)):
        response = client.get("/items/1?q=a", headers={"If-None-Match": etag})
        assert response.status_code == 304 and response.content == b""
        assert response.headers["etag"] == etag


def auth(x_token: str | None = Header(default=None)) -> str:
    if x_token != "secret":
        raise HTTPException(status_code=401, detail="no")
    return x_token


@pytest.mark.parametrize("where", ["app", "router", "include", "route"])
def test_a_route_with_a_dependency_is_never_answered_early(
    make_store: MakeStore, where: str
) -> None:
    store = make_store()
    calls: Counter[str] = Counter()

    def guard(token: str = Depends(auth)) -> None:
        calls["guard"] += 1

    app = FastAPI(dependencies=[Depends(guard)] if where == "app" else None)
    router = APIRouter(
        route_class=CachedRoute, dependencies=[Depends(guard)] if where == "router" else None
    )

    @router.get("/report", dependencies=[Depends(guard)] if where == "route" else None)
    @cache(expire=300, store=store, shared=True)
    async def report() -> dict[str, int]:
        calls["ran"] += 1
        return {"n": calls["ran"]}

    app.include_router(router, dependencies=[Depends(guard)] if where == "include" else None)
    with client_for(app, store) as client:
        check_guarded(client)
    assert calls["guard"] == 3 and calls["ran"] == 1


def check_guarded(client: TestClient) -> None:
    ok = {"X-Token": "secret"}
    assert client.get("/report", headers=ok).headers["x-fastapi-cache"] == "Miss"
    assert client.get("/report", headers=ok).headers["x-fastapi-cache"] == "Hit"
    # The entry is there, but the dependency still runs first and refuses.
    assert client.get("/report").status_code == 401
    assert client.get("/report", headers={"X-Token": "wrong"}).status_code == 401
    assert client.get("/report", headers=ok).json() == {"n": 1}


def test_per_user_endpoints_are_not_answered_early(make_store: MakeStore) -> None:
    store = make_store()
    calls: Counter[str] = Counter()

    def user(x_user: str | None = Header(default=None)) -> str:
        if x_user is None:
            raise HTTPException(status_code=401)
        calls["auth"] += 1
        return x_user

    app = FastAPI()
    app.router.route_class = CachedRoute

    @app.get("/me")
    @cache(expire=300, store=store, per_user=user)
    async def me(who: str = Depends(user)) -> dict[str, str]:
        return {"user": who}

    with client_for(app, store) as client:
        for _ in range(2):
            for name in ("alice", "bob"):
                assert client.get("/me", headers={"X-User": name}).json() == {"user": name}
        assert client.get("/me").status_code == 401
        assert calls["auth"] == 4


def test_credentials_and_request_directives_take_fastapis_path(make_store: MakeStore) -> None:
    store = make_store()
    counter: Counter[str] = Counter()
    app = items_app(store, counter, CachedRoute)
    with client_for(app, store) as client:
        assert client.get("/items/5").headers["x-fastapi-cache"] == "Miss"
        assert client.get("/items/5").headers["x-fastapi-cache"] == "Hit"
        # Not shared, so a request with credentials is served uncached (the rule of @cache).
        with_cookie = client.get("/items/5", headers={"Cookie": "session=1"})
        assert "x-fastapi-cache" not in with_cookie.headers
        assert with_cookie.json()["run"] == 2
        no_cache = client.get("/items/5", headers={"Cache-Control": "no-cache"})
        assert no_cache.json()["run"] == 3
        assert client.get("/items/5").json()["run"] == 1  # the entry is untouched
        assert counter["ran"] == 3


def test_vary_variants_stay_apart(make_store: MakeStore) -> None:
    store = make_store()
    calls: Counter[str] = Counter()
    app = FastAPI()
    app.router.route_class = CachedRoute

    @app.get("/greeting")
    @cache(expire=300, store=store, vary=["Accept-Language"])
    async def greeting(name: str = "you") -> dict[str, Any]:
        calls["ran"] += 1
        return {"name": name, "run": calls["ran"]}

    with client_for(app, store) as client:
        en, fr = {"Accept-Language": "en"}, {"Accept-Language": "fr"}
        first = {"en": client.get("/greeting", headers=en).json()}
        first["fr"] = client.get("/greeting", headers=fr).json()
        first["none"] = client.get("/greeting").json()
        assert calls["ran"] == 3
        for _ in range(2):
            assert client.get("/greeting", headers=en).json() == first["en"]
            assert client.get("/greeting", headers=fr).json() == first["fr"]
            assert client.get("/greeting").json() == first["none"]
        assert calls["ran"] == 3


class CountingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        return await super().get(key)

    async def read(self, key: str, generations: Any, head: int = 0) -> Any:
        self.gets += 1  # an entry read with its generations (issue 17)
        return await super().read(key, generations, head)


def test_invalidation_is_seen_and_a_miss_reads_once() -> None:
    backend = CountingBackend()
    store = Cache(backend=backend, prefix="early")
    counter: Counter[str] = Counter()
    app = items_app(store, counter, CachedRoute)
    client = TestClient(app)
    assert client.get("/items/7").json()["run"] == 1
    assert client.get("/items/7").json()["run"] == 1
    endpoint = next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/items/{item_id}")
    assert anyio.run(lambda: store.invalidate(endpoint, item_id=7)) == 1
    before = backend.gets
    assert client.get("/items/7").json()["run"] == 2  # invalidated: a miss, seen at once
    assert backend.gets - before == 1  # CachedRoute's read was handed to FastAPI's path
    assert client.get("/items/7").json()["run"] == 2


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oxcache.early, "MEMO_LIMIT", 5)
    store = Cache(prefix="bounded")
    counter: Counter[str] = Counter()
    app = items_app(store, counter, CachedRoute)
    client = TestClient(app)
    for i in range(20):
        assert client.get(f"/items/1?q={i}").status_code == 200
    route = next(r for r in app.routes if getattr(r, "path", "") == "/items/{item_id}")
    (memo,) = route.oxcache_memos
    assert len(memo.keys) == 5
    # The most recent are remembered and answered early; older ones are misses of the memo
    # only (still hits of the cache, through FastAPI's path).
    solved = SOLVED["q"]
    assert client.get("/items/1?q=19").headers["x-fastapi-cache"] == "Hit"
    assert SOLVED["q"] == solved
    assert client.get("/items/1?q=0").headers["x-fastapi-cache"] == "Hit"
    assert SOLVED["q"] == solved + 1


def test_a_new_default_store_is_learned_again() -> None:
    counter: Counter[str] = Counter()
    app = FastAPI()
    app.router.route_class = CachedRoute

    @app.get("/x")
    @cache(expire=300)
    async def x() -> dict[str, int]:
        counter["ran"] += 1
        return {"run": counter["ran"]}

    first, second = Cache(prefix="first"), Cache(prefix="second")
    for store, run in ((first, 1), (second, 2), (first, 1)):
        app.router.lifespan_context = store.lifespan
        with TestClient(app) as client:
            client.get("/x")
            assert client.get("/x").json() == {"run": run}
    assert counter["ran"] == 2


def test_routes_without_cache_are_plain_api_routes() -> None:
    app = FastAPI()
    app.router.route_class = CachedRoute

    @app.get("/plain")
    async def plain(q: Annotated[int, Query(gt=0)] = 1) -> dict[str, int]:
        return {"q": q}

    client = TestClient(app)
    assert client.get("/plain?q=2").json() == {"q": 2}
    assert client.get("/plain?q=0").status_code == 422
    route = next(r for r in app.routes if getattr(r, "path", "") == "/plain")
    assert not getattr(route, "oxcache_memos", [])


def test_a_default_made_per_request_is_never_answered_early() -> None:
    source = {"day": "mon"}
    app = FastAPI()
    app.router.route_class = CachedRoute
    store = Cache(prefix="factory")

    @app.get("/report")
    @cache(expire=300, store=store)
    async def report(day: str = Query(default_factory=lambda: source["day"])) -> dict[str, str]:
        return {"day": day}

    with client_for(app, store) as client:
        assert client.get("/report").json() == {"day": "mon"}
        assert client.get("/report").json() == {"day": "mon"}
        source["day"] = "tue"  # date.today() rolled over, say
        assert client.get("/report").json() == {"day": "tue"}
    route = next(r for r in app.routes if getattr(r, "path", "") == "/report")
    assert not getattr(route, "oxcache_memos", None)


def test_the_same_path_under_another_root_path_is_another_request() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Host, Mount

    store = Cache(prefix="mounts")
    sub = FastAPI()
    sub.router.route_class = CachedRoute

    @sub.get("/{page:path}")
    @cache(expire=300, store=store)
    async def page(page: str) -> dict[str, str]:
        return {"page": page}

    # The same raw path: under a mount, the route sees "b"; at the root, "a/b".
    outer = Starlette(
        routes=[
            Host("one.test", app=Starlette(routes=[Mount("/a", app=sub)])),
            Host("two.test", app=sub),
        ]
    )
    with TestClient(outer) as client:
        for _ in range(2):
            assert client.get("http://one.test/a/b").json() == {"page": "b"}
            assert client.get("http://two.test/a/b").json() == {"page": "a/b"}


def test_an_early_refresh_is_drawn_once(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[int] = []
    store = Cache(prefix="xfetch-early")
    app = FastAPI()
    app.router.route_class = CachedRoute

    @app.get("/x")
    @cache(expire=300, store=store, early_recompute=1.0)
    async def x() -> dict[str, int]:
        ran.append(1)
        return {"n": len(ran)}

    draws = iter([True, False, False, False])
    with client_for(app, store) as client:
        client.get("/x")
        client.get("/x")  # learned
        x.__oxcache__.run_s = 0.01  # type: ignore[attr-defined]
        monkeypatch.setattr(oxcache.serve, "xfetch", lambda *a: next(draws))
        assert client.get("/x").headers["x-fastapi-cache"] == "Hit"  # and refreshed after
        client.get("/x")
    assert len(ran) == 2  # the "refresh now" draw was honoured, not drawn again


def test_secret_vary_values_are_remembered_hashed_and_long_requests_not_at_all() -> None:
    store = Cache(prefix="secret-vary")
    app = FastAPI()
    app.router.route_class = CachedRoute

    @app.get("/mine")
    @cache(expire=300, store=store, vary=["Authorization"])
    async def mine(q: str = "") -> dict[str, int]:
        return {"n": len(q)}

    with client_for(app, store) as client:
        for _ in range(2):
            client.get("/mine", headers={"Authorization": "Bearer s3cr3t"})
            client.get("/mine?q=" + "x" * 3000)
    route = next(r for r in app.routes if getattr(r, "path", "") == "/mine")
    (memo,) = route.oxcache_memos
    remembered = list(memo.keys)
    assert len(remembered) == 1  # the long request was not remembered
    assert b"s3cr3t" not in repr(remembered).encode()


# -- the plain APIRoute answers early too (route.adopt) ---------------------------------------


def counted_items(store: Cache, counter: Counter[str], router: APIRouter | FastAPI) -> None:
    @router.get("/items/{item_id}")
    @cache(expire=300, store=store)
    async def item(item_id: int, q: CountedQuery = "none") -> dict[str, Any]:
        counter["ran"] += 1
        return {"id": item_id, "q": q, "run": counter["ran"]}


def solving(client: TestClient, url: str, **headers: str) -> tuple[str | None, int]:
    """The request's `X-FastAPI-Cache` and how often FastAPI solved `q` for it."""
    before = SOLVED["q"]
    response = client.get(url, headers=headers)
    assert response.status_code == 200
    return response.headers.get("x-fastapi-cache"), SOLVED["q"] - before


def test_a_plain_route_answers_hits_early_from_its_second_request(make_store: MakeStore) -> None:
    """Without any route class: a direct route and one router included twice are each
    rebuilt at their first request, then answer known hits without solving `q`."""
    store = make_store()
    counter: Counter[str] = Counter()
    app = FastAPI()
    router = APIRouter()
    counted_items(store, counter, app)
    counted_items(store, counter, router)
    app.include_router(router, prefix="/a")
    app.include_router(router, prefix="/b")
    with client_for(app, store) as client:
        # The router's endpoint is one endpoint under both prefixes: /b hits /a's entry.
        for prefix, first in (("", "Miss"), ("/a", "Miss"), ("/b", "Hit")):
            url = f"{prefix}/items/1?q=x"
            # Served by FastAPI's handler, which rebuilds the route; then the rebuilt
            # route learns the raw request's key on a hit, and answers it early after.
            assert solving(client, url) == (first, 1)
            assert solving(client, url) == ("Hit", 1)
            assert solving(client, url) == ("Hit", 0)
            assert client.get(url).json()["id"] == 1
        assert solving(client, "/b/items/2?q=x") == ("Miss", 1)
        assert solving(client, "/b/items/2?q=x") == ("Hit", 0)
    assert counter["ran"] == 3
    assert all(type(route) is APIRoute for route in app.routes if isinstance(route, APIRoute))


@pytest.mark.parametrize("why", ["own handler", "answer_early=False"])
def test_a_route_left_to_fastapi_solves_on_every_hit(make_store: MakeStore, why: str) -> None:
    """A route class building its own handler, or a store saying `answer_early=False`: the
    route keeps the app FastAPI built, and FastAPI solves `q` on every hit."""
    store = make_store(answer_early=why != "answer_early=False")
    counter: Counter[str] = Counter()
    app = FastAPI()
    if why == "own handler":
        app.router.route_class = OwnHandlerRoute
    counted_items(store, counter, app)
    (route,) = (r for r in app.routes if isinstance(r, APIRoute))
    built = route.app
    with client_for(app, store) as client:
        assert solving(client, "/items/1?q=x") == ("Miss", 1)
        for _ in range(3):
            assert solving(client, "/items/1?q=x") == ("Hit", 1)
    assert route.app is built and counter["ran"] == 1


def test_a_plain_route_with_guards_refuses_on_every_hit(make_store: MakeStore) -> None:
    """Rebuilt, a guarded plain route solves its guard before every early answer."""
    store = make_store()
    calls: Counter[str] = Counter()

    def guard(token: str = Depends(auth)) -> None:
        calls["guard"] += 1

    app = FastAPI(dependencies=[Depends(guard)])

    @app.get("/report")
    @cache(expire=300, store=store, shared=True)
    async def report() -> dict[str, int]:
        calls["ran"] += 1
        return {"n": calls["ran"]}

    with client_for(app, store) as client:
        check_guarded(client)
        check_guarded_hits(client)
    assert calls["ran"] == 1


def check_guarded_hits(client: TestClient) -> None:
    for _ in range(3):
        assert client.get("/report", headers={"X-Token": "secret"}).json() == {"n": 1}
        assert client.get("/report").status_code == 401


def test_a_route_that_cannot_be_rebuilt_stays_as_fastapi_built_it(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Rebuilding happens during a request: if it fails (a FastAPI whose internals differ),
    that request and the next are served by FastAPI's handler, with one warning."""
    store = make_store()
    counter: Counter[str] = Counter()
    app = FastAPI()
    counted_items(store, counter, app)

    def broken(*args: Any) -> None:
        raise TypeError("unexpected handler")

    monkeypatch.setattr(oxcache.route, "early_app", broken)
    with client_for(app, store) as client:
        assert solving(client, "/items/1?q=x") == ("Miss", 1)
        for _ in range(2):
            assert solving(client, "/items/1?q=x") == ("Hit", 1)
    assert [r.getMessage() for r in caplog.records if "left to FastAPI" in r.getMessage()] == [
        "item: its route is left to FastAPI's handler (hits are not answered early)"
    ]


def guarded_app(store: Cache, route_class: type[APIRoute], calls: Counter[str]) -> FastAPI:
    """A per-user route whose guards the lean plan solves: an HTTP bearer scheme (FastAPI's
    own, given the Request) and an API key header; the app renders HTTP errors its way."""
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    bearer = HTTPBearer()

    def user(credentials: HTTPAuthorizationCredentials = Depends(bearer)) -> str:
        calls["user"] += 1
        return credentials.credentials

    def api_key(x_key: str = Header()) -> None:
        calls["key"] += 1
        if x_key != "k":
            raise HTTPException(status_code=403, detail="bad key")

    app = FastAPI(dependencies=[Depends(api_key)])
    app.router.route_class = route_class

    @app.exception_handler(HTTPException)
    async def rendered(request: Any, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.get("/me")
    @cache(expire=300, store=store, per_user=user)
    async def me(page: int = 1, who: str = Depends(user)) -> dict[str, Any]:
        calls["ran"] += 1
        return {"user": who, "page": page}

    return app


def test_guards_solved_before_fastapis_request_handling_refuse_and_render_the_same(
    make_store: MakeStore,
) -> None:
    """The plain route answers a guarded hit before FastAPI's request handling (no
    `Request`-taking dependency but FastAPI's security scheme): refusals go through the
    app's exception handlers as from FastAPI's handler, a missing header is FastAPI's 422,
    and every guard runs once per request."""
    requests: list[dict[str, str]] = [
        {"authorization": "Bearer alice", "x-key": "k"},
        {"authorization": "Bearer bob", "x-key": "k"},
        {"authorization": "Bearer alice", "x-key": "nope"},
        {"x-key": "k"},
        {"authorization": "Basic xyz", "x-key": "k"},
        {"authorization": "Bearer alice"},
    ]
    outcomes = []
    for route_class in (OwnHandlerRoute, APIRoute):
        store = make_store()
        calls: Counter[str] = Counter()
        app = guarded_app(store, route_class, calls)
        with client_for(app, store) as client:
            seen = [
                (r.status_code, r.json())
                for _ in range(3)
                for headers in requests
                for r in [client.get("/me?page=2", headers=headers)]
            ]
        if route_class is APIRoute:
            (route,) = (r for r in app.routes if isinstance(r, APIRoute))
            assert route.app.__qualname__ == "_answering_guarded.<locals>.answering_app"
        outcomes.append((seen, calls["key"], calls["user"], calls["ran"]))
    assert outcomes[0] == outcomes[1]
    seen, keys, users, ran = outcomes[1]
    assert seen[:2] == [(200, {"user": "alice", "page": 2}), (200, {"user": "bob", "page": 2})]
    statuses = [status for status, _ in seen[2:6]]
    # FastAPI's HTTPBearer refuses with 403 before 0.16x, 401 since.
    assert statuses[0] == 403 and statuses[1] == statuses[2] in (401, 403) and statuses[3] == 422
    assert seen[6:] == seen[:6] * 2
    # `user` runs on the 422 too: FastAPI solves every dependency before it answers one.
    assert (keys, users, ran) == (15, 9, 2)


# -- what adopt leaves alone (found in review) ------------------------------------------------


def test_a_decorator_above_cache_runs_on_every_hit(make_store: MakeStore) -> None:
    """`functools.wraps` copies `__oxcache__` onto a decorator above `@cache`; answering
    early would skip it, so such a route (plain or `CachedRoute`) is never answered early."""
    import functools

    def staff_only(func: Any) -> Any:
        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = next(v for v in kwargs.values() if isinstance(v, Request))
            if request.headers.get("x-role") != "staff":
                raise HTTPException(403, "staff only")
            return await func(*args, **kwargs)

        return wrapper

    for route_class in (APIRoute, CachedRoute):
        store = make_store()
        app = FastAPI()
        app.router.route_class = route_class

        @app.get("/report")
        @staff_only
        @cache(expire=300, store=store)
        async def report() -> dict[str, int]:
            return {"secret": 42}

        with client_for(app, store) as client:
            statuses = [
                client.get("/report", headers={"x-role": role}).status_code
                for role in ("staff", "staff", "guest", "staff", "guest")
            ]
        assert statuses == [200, 200, 403, 200, 403], route_class


def internal_only(inner: Any) -> Any:
    """A per-route ASGI guard wrapping the app FastAPI built."""
    from starlette.responses import PlainTextResponse

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if dict(scope["headers"]).get(b"x-internal") != b"1":
            await PlainTextResponse("forbidden", 403)(scope, receive, send)
            return
        await inner(scope, receive, send)

    return app


class InternalRoute(APIRoute):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = internal_only(self.app)


@pytest.mark.parametrize("how", ["route.app", "route class"])
def test_a_route_whose_app_was_wrapped_keeps_its_wrapper(make_store: MakeStore, how: str) -> None:
    store = make_store()
    app = FastAPI()
    if how == "route class":
        app.router.route_class = InternalRoute

    @app.get("/internal")
    @cache(expire=300, store=store)
    async def internal(n: int = 0) -> dict[str, int]:
        return {"n": n}

    (route,) = (r for r in app.routes if isinstance(r, APIRoute))
    if how == "route.app":
        route.app = internal_only(route.app)
    wrapped = route.app
    with client_for(app, store) as client:
        inside = [client.get("/internal", headers={"x-internal": "1"}) for _ in range(3)]
        assert [r.headers["x-fastapi-cache"] for r in inside] == ["Miss", "Hit", "Hit"]
        assert client.get("/internal").status_code == 403  # a hit, from outside
        assert client.get("/internal?n=2").status_code == 403  # a miss
    assert route.app is wrapped


def test_a_cache_function_called_by_another_endpoint_does_not_rebuild_its_route(
    make_store: MakeStore,
) -> None:
    """`adopt` rebuilds the route of the endpoint FastAPI called, under that endpoint's
    store's `answer_early`, never the route of another endpoint calling a `@cache` one."""
    inner_store, outer_store = make_store(), make_store(answer_early=False)

    @cache(expire=300, store=inner_store)
    async def inner(request: Request) -> dict[str, int]:
        return {"inner": 1}

    app = FastAPI()

    @app.get("/outer")
    @cache(expire=300, store=outer_store)
    async def outer(request: Request) -> Any:
        return await inner(request=request)  # the inner endpoint's response

    (route,) = (r for r in app.routes if isinstance(r, APIRoute))
    built = route.app
    with client_for(app, store=outer_store) as client:
        for _ in range(3):
            assert client.get("/outer").status_code == 200
    assert route.app is built and not getattr(route, "oxcache_adopted", False)

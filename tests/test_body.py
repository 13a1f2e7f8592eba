"""POST queries (`oxcache.body`, `@cache(methods=[...])`): a POST is cached only when the
endpoint opts in, keyed by the digest of its raw body (never the body in clear), with the
body still readable by the endpoint, never a 304, on the memory store and Redis, through
`APIRoute` and `CachedRoute` (which never answers a POST before FastAPI solves it)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Form, Header, HTTPException, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from oxcache import Cache, CachedRoute, ConfigError, cache
from oxcache._core import secret_digest_bytes
from tests.apps import stored_keys

MakeStore = Callable[..., Cache]
ROUTES = pytest.mark.parametrize(
    "route_class", [None, CachedRoute], ids=["APIRoute", "CachedRoute"]
)
BACKENDS = pytest.mark.parametrize("backend_kind", ["memory", "redis"])


class Search(BaseModel):
    q: str
    page: int = 1


def post_app(store: Cache, route_class: Any = None, **options: Any) -> tuple[FastAPI, list[Any]]:
    """`POST /search` (a body model, parsed by FastAPI), `POST /graphql` (reads the raw body
    itself, as GraphQL servers do), `POST /login` (a form), `GET|POST /both`, all cached with
    `options`; the values each run saw."""
    app = FastAPI(lifespan=store.lifespan)
    if route_class is not None:
        app.router.route_class = route_class
    runs: list[Any] = []

    @app.post("/search")
    @cache(expire=60, store=store, tags=["search"], **options)
    async def search(query: Search) -> dict[str, Any]:
        runs.append(query.q)
        return {"q": query.q, "page": query.page, "run": len(runs)}

    @app.post("/graphql")
    @cache(expire=60, store=store, **options)
    async def graphql(request: Request) -> dict[str, Any]:
        payload = await request.json()
        runs.append(payload["query"])
        return {"data": payload["query"].upper(), "run": len(runs)}

    @app.post("/login")
    @cache(expire=60, store=store, **options)
    async def login(name: str = Form()) -> dict[str, Any]:
        runs.append(name)
        return {"name": name, "run": len(runs)}

    @app.api_route("/both", methods=["GET", "POST"])
    @cache(expire=60, store=store, **options)
    async def both(request: Request) -> dict[str, Any]:
        runs.append(request.method)
        return {"method": request.method, "run": len(runs)}

    return app, runs


def status(response: Any) -> str:
    return str(response.headers.get("x-fastapi-cache"))


@BACKENDS
@ROUTES
def test_a_post_is_never_cached_without_the_opt_in(make_store: MakeStore, route_class: Any) -> None:
    store = make_store()
    app, runs = post_app(store, route_class)
    with TestClient(app) as client:
        answers = [client.post("/search", json={"q": "ox"}) for _ in range(3)]
    assert [a.json()["run"] for a in answers] == [1, 2, 3]
    assert all("x-fastapi-cache" not in a.headers for a in answers)
    assert all(a.headers["cache-status"] == "oxcache; fwd=method" for a in answers)
    assert runs == ["ox"] * 3 and store.stats()["misses"] == 0


@BACKENDS
@ROUTES
def test_an_opted_in_post_is_keyed_by_its_raw_body(make_store: MakeStore, route_class: Any) -> None:
    store = make_store()
    app, runs = post_app(store, route_class, methods=["POST"])
    with TestClient(app) as client:
        first = client.post("/search", json={"q": "ox"})
        again = client.post("/search", json={"q": "ox"})
        other = client.post("/search", json={"q": "yak"})
        # The same query written differently is another body: another entry.
        spaced = client.post(
            "/search", content=b'{"q":  "ox"}', headers={"Content-Type": "application/json"}
        )
    assert [status(r) for r in (first, again, other, spaced)] == ["Miss", "Hit", "Miss", "Miss"]
    assert again.json() == first.json() == {"q": "ox", "page": 1, "run": 1}
    assert other.json()["q"] == "yak"
    assert runs == ["ox", "yak", "ox"]
    keys = [
        k for k in stored_keys(store) if ".search(" in k and not k.split(":")[1].startswith("@")
    ]
    assert len(keys) == 3
    digest = secret_digest_bytes(json.dumps({"q": "ox"}, separators=(",", ":")).encode())
    assert any(f'@body="{digest}"' in k for k in keys), keys


@BACKENDS
@ROUTES
def test_an_endpoint_reading_the_raw_body_still_gets_it_and_each_body_its_own_answer(
    make_store: MakeStore, route_class: Any
) -> None:
    """GraphQL's shape: no body parameter, so FastAPI leaves the body to the endpoint, and
    `CachedRoute` could answer such a route early; a POST never is, or two bodies sent to
    one path would share an answer."""
    store = make_store()
    app, runs = post_app(store, route_class, methods=["POST"])
    with TestClient(app) as client:
        answers = [
            client.post("/graphql", json={"query": query}) for query in ("{a}", "{b}", "{a}", "{b}")
        ]
    assert [a.json()["data"] for a in answers] == ["{A}", "{B}", "{A}", "{B}"]
    assert [status(a) for a in answers] == ["Miss", "Miss", "Hit", "Hit"]
    assert runs == ["{a}", "{b}"]


@BACKENDS
def test_the_body_is_never_written_into_a_key(make_store: MakeStore) -> None:
    store = make_store()
    app, _ = post_app(store, methods=["POST"])
    with TestClient(app) as client:
        client.post("/graphql", json={"query": '{me(password: "hunter2")}'})
    assert stored_keys(store) and not any("hunter2" in k for k in stored_keys(store))


@BACKENDS
def test_a_post_never_gets_a_304(make_store: MakeStore) -> None:
    store = make_store()
    app, _ = post_app(store, methods=["POST"])
    with TestClient(app) as client:
        tag = client.post("/search", json={"q": "ox"}).headers["etag"]
        answer = client.post("/search", json={"q": "ox"}, headers={"If-None-Match": tag})
    assert answer.status_code == 200 and status(answer) == "Hit"
    assert answer.json()["q"] == "ox"


def test_a_form_body_is_served_uncached_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    """FastAPI parses a form from the stream, which cannot be read again to key it."""
    store = Cache()
    app, _ = post_app(store, methods=["POST"])
    with caplog.at_level(logging.WARNING, "oxcache"), TestClient(app) as client:
        answers = [client.post("/login", data={"name": "ann"}) for _ in range(2)]
    assert [a.json() for a in answers] == [{"name": "ann", "run": 1}, {"name": "ann", "run": 2}]
    assert all("detail=body" in a.headers["cache-status"] for a in answers)
    warnings = [r.getMessage() for r in caplog.records if "parsed as a form" in r.getMessage()]
    assert len(warnings) == 1 and store.stats()["bypasses"] == 2


@BACKENDS
def test_get_and_post_of_one_endpoint_are_separate_entries(make_store: MakeStore) -> None:
    store = make_store()
    app, runs = post_app(store, methods=["GET", "POST"])
    with TestClient(app) as client:
        got = [client.get("/both").json() for _ in range(2)]
        posted = [client.post("/both", content=b"").json() for _ in range(2)]
    assert got == [{"method": "GET", "run": 1}] * 2
    assert posted == [{"method": "POST", "run": 2}] * 2
    assert runs == ["GET", "POST"]


@BACKENDS
def test_invalidation_reaches_every_body(make_store: MakeStore) -> None:
    store = make_store()
    app, runs = post_app(store, methods=["POST"])
    with TestClient(app) as client:
        for q in ("ox", "yak"):
            client.post("/search", json={"q": q})
        assert client.portal.call(store.invalidate_tag, "search") == 2
        client.post("/graphql", json={"query": "{a}"})
        client.post("/graphql", json={"query": "{b}"})
        graphql = next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/graphql")
        assert client.portal.call(lambda: store.invalidate(graphql)) == 2
        assert status(client.post("/graphql", json={"query": "{a}"})) == "Miss"
    assert runs == ["ox", "yak", "{a}", "{b}", "{a}"]


@BACKENDS
def test_a_post_with_credentials_is_bypassed_like_a_get(make_store: MakeStore) -> None:
    store = make_store()
    app, runs = post_app(store, methods=["POST"])
    with TestClient(app) as client:
        for _ in range(2):
            client.post("/search", json={"q": "ox"}, headers={"Authorization": "Bearer t"})
    assert runs == ["ox", "ox"] and store.stats()["bypasses"] == 2


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        (["PUT"], "not PUT"),
        (["post", "DELETE"], "not DELETE"),
        ("POST", "a list of method names"),
        ([], "names no method"),
    ],
)
def test_methods_other_than_get_head_and_post_are_refused(methods: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cache(expire=60, methods=methods)


def test_the_startup_warning_names_the_opt_in_and_spares_endpoints_that_took_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Cache()
    app = FastAPI(lifespan=store.lifespan)

    @app.post("/plain")
    @cache(expire=60, store=store)
    async def plain() -> dict[str, int]:
        return {}

    @app.post("/opted")
    @cache(expire=60, store=store, methods=["POST"])
    async def opted() -> dict[str, int]:
        return {}

    with caplog.at_level(logging.WARNING, "oxcache"), TestClient(app):
        pass
    warned = [r.getMessage() for r in caplog.records if "is never cached" in r.getMessage()]
    assert len(warned) == 1 and "plain" in warned[0] and 'methods=["POST"]' in warned[0]


@ROUTES
def test_a_guarded_post_is_refused_and_cached_as_its_route_says(route_class: Any) -> None:
    """A route dependency (a guard) still runs for every POST, and refuses as it would
    without the cache; `CachedRoute` leaves POSTs to FastAPI's path, guards included."""

    def guard(x_key: str | None = Header(default=None)) -> None:
        if x_key != "ok":
            raise HTTPException(status_code=401)

    store = Cache()
    app = FastAPI(lifespan=store.lifespan)
    if route_class is not None:
        app.router.route_class = route_class
    runs: list[str] = []

    @app.post("/search", dependencies=[Depends(guard)])
    @cache(expire=60, store=store, methods=["POST"])
    async def search(query: Search) -> dict[str, Any]:
        runs.append(query.q)
        return {"q": query.q}

    ok = {"X-Key": "ok"}
    with TestClient(app) as client:
        assert client.post("/search", json={"q": "ox"}).status_code == 401
        answers = [client.post("/search", json={"q": "ox"}, headers=ok) for _ in range(2)]
        assert client.post("/search", json={"q": "ox"}).status_code == 401
    assert [status(a) for a in answers] == ["Miss", "Hit"] and runs == ["ox"]

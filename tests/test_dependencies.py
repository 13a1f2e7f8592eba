"""Dependencies on a hit (deferred.py, endpoint.py, serve.py): a dependency whose value never
goes into a key (its type is in `ignore_arg_types`, such as a database session) runs only
when the endpoint runs, solved as FastAPI solves it (overrides, yield clean-up, the
threadpool for sync ones, exceptions); guards at every level, the `per_user` dependency and
the dependencies a key holds run on every request, hits included. On memory and Redis, with
`APIRoute` and `CachedRoute`.

The promise under test: a hit opens no database session, and a request a guard refuses is
refused, hit or not."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from fastapi.testclient import TestClient
from pydantic import AfterValidator

from oxcache import Cache, CachedRoute, always_run, cache
from tests.apps import MakeStore, OwnHandlerRoute, client_for, stored_keys


@pytest.fixture(params=["memory", "redis"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# FastAPI's handler on every request, the plain route (answering hits early from its
# second request on), and CachedRoute.
@pytest.fixture(params=[OwnHandlerRoute, APIRoute, CachedRoute], ids=lambda cls: cls.__name__)
def route_class(request: pytest.FixtureRequest) -> type[APIRoute]:
    return request.param  # type: ignore[no-any-return]


class Session:
    """A database session: opened by the dependency, closed when the request ends."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.closed = False


class Pool:
    """Counts the sessions opened and closed, and the threads sync dependencies ran on."""

    def __init__(self) -> None:
        self.opened: list[Session] = []
        self.closed: list[Session] = []
        self.threads: set[int] = set()
        self.cleanup_saw: list[type[BaseException] | None] = []

    async def get_db(self) -> AsyncIterator[Session]:
        session = Session(self)
        self.opened.append(session)
        try:
            yield session
        except Exception as exc:
            self.cleanup_saw.append(type(exc))
            raise
        finally:
            session.closed = True
            self.closed.append(session)

    def get_db_sync(self) -> Iterator[Session]:
        self.threads.add(threading.get_ident())
        session = Session(self)
        self.opened.append(session)
        try:
            yield session
        finally:
            session.closed = True
            self.closed.append(session)


#: For `Annotated` dependencies, which string annotations resolve at module level.
ANNOTATED_POOL = Pool()
Db = Annotated[Session, Depends(ANNOTATED_POOL.get_db)]


def app_for(store: Cache, route_class: type[APIRoute], **kwargs: Any) -> FastAPI:
    app = FastAPI(**kwargs)
    app.router.route_class = route_class
    return app


def get(client: TestClient, url: str, **headers: str) -> tuple[int, str | None, Any]:
    response = client.get(url, headers=headers)
    return response.status_code, response.headers.get("x-fastapi-cache"), response.json()


# -- sessions opened = endpoint runs ----------------------------------------------------------


@pytest.mark.parametrize("flavour", ["async", "sync", "annotated"])
def test_sessions_opened_equal_misses_exactly(
    make_store: MakeStore, route_class: type[APIRoute], flavour: str
) -> None:
    store = make_store(ignore_arg_types=[Session])
    pool = ANNOTATED_POOL if flavour == "annotated" else Pool()
    pool.opened.clear()
    pool.closed.clear()
    app = app_for(store, route_class)
    seen: list[Session] = []
    dependency = pool.get_db_sync if flavour == "sync" else pool.get_db

    if flavour == "annotated":

        @app.get("/item/{id}")
        @cache(expire=60, store=store)
        async def item(id: int, db: Db) -> dict[str, Any]:
            assert not db.closed
            seen.append(db)
            return {"id": id}

    else:

        @app.get("/item/{id}")
        @cache(expire=60, store=store)
        async def item(id: int, db: Session = Depends(dependency)) -> dict[str, Any]:  # type: ignore[no-redef]
            assert not db.closed
            seen.append(db)
            return {"id": id}

    with client_for(app, store) as client:
        results = [get(client, f"/item/{i % 4}") for i in range(20)]
        stats = store.stats()
    assert [r[1] for r in results[:4]] == ["Miss"] * 4
    assert {r[1] for r in results[4:]} == {"Hit"}
    assert [r[2] for r in results] == [{"id": i % 4} for i in range(20)]
    assert stats["misses"] == 4 and stats["hits"] == 16
    assert len(pool.opened) == stats["misses"] == len(seen)
    assert pool.closed == pool.opened  # every one closed, in order
    assert seen == pool.opened  # the endpoint got the session its run opened
    if flavour == "sync":
        assert threading.get_ident() not in pool.threads  # in the threadpool, as FastAPI


def test_the_key_is_the_one_without_the_session(make_store: MakeStore) -> None:
    store = make_store(ignore_arg_types=[Session])
    pool = Pool()
    app = FastAPI()

    @app.get("/item/{id}")
    @cache(expire=60, store=store)
    async def item(id: int, db: Session = Depends(pool.get_db)) -> dict[str, Any]:
        return {"id": id}

    with client_for(app, store) as client:
        client.get("/item/7")
        key = store.key_for(item, "http://testserver", id=7)
    assert key in stored_keys(store)
    assert key.endswith('item(id=7,@origin="http://testserver")')


def test_a_store_that_keys_the_type_solves_it_before_the_key(make_store: MakeStore) -> None:
    """Without `ignore_arg_types`, the session is keyed as before: its `str()` is a memory
    address, so the route is served uncached (with a warning), one session a request."""
    store = make_store()
    pool = Pool()
    app = FastAPI()

    @app.get("/item/{id}")
    @cache(expire=60, store=store)
    async def item(id: int, db: Session = Depends(pool.get_db)) -> dict[str, Any]:
        return {"id": id}

    with client_for(app, store) as client:
        results = [get(client, "/item/1") for _ in range(3)]
    assert [r[1] for r in results] == [None, None, None]  # bypassed
    assert len(pool.opened) == 3 and pool.closed == pool.opened


# -- FastAPI's behaviour on a miss --------------------------------------------------------------


def test_dependency_overrides_apply_on_a_miss_and_nothing_runs_on_a_hit(
    make_store: MakeStore, route_class: type[APIRoute]
) -> None:
    store = make_store(ignore_arg_types=[Session])
    pool, fake = Pool(), Pool()
    app = app_for(store, route_class)
    seen: list[Session] = []

    @app.get("/item/{id}")
    @cache(expire=60, store=store)
    async def item(id: int, db: Session = Depends(pool.get_db)) -> dict[str, Any]:
        seen.append(db)
        return {"id": id}

    app.dependency_overrides[pool.get_db] = fake.get_db
    with client_for(app, store) as client:
        assert get(client, "/item/1")[1] == "Miss"
        assert get(client, "/item/1")[1] == "Hit"
    assert pool.opened == [] and len(fake.opened) == 1 and seen == fake.opened
    assert fake.closed == fake.opened


def test_a_failing_deferred_dependency_fails_the_miss_as_fastapi_does(
    make_store: MakeStore,
) -> None:
    store = make_store(ignore_arg_types=[Session])
    state = {"down": True}

    async def get_db() -> AsyncIterator[Session]:
        if state["down"]:
            raise HTTPException(status_code=503, detail="database down")
        yield Session(Pool())

    app = FastAPI()

    @app.get("/item/{id}")
    @cache(expire=60, store=store)
    async def item(id: int, db: Session = Depends(get_db)) -> dict[str, Any]:
        return {"id": id}

    with client_for(app, store) as client:
        response = client.get("/item/1")
        assert (response.status_code, response.json()) == (503, {"detail": "database down"})
        state["down"] = False
        assert get(client, "/item/1")[:2] == (200, "Miss")
        state["down"] = True
        assert get(client, "/item/1")[:2] == (200, "Hit")  # the database is not needed


def test_the_endpoints_exception_reaches_the_yield_dependency(make_store: MakeStore) -> None:
    store = make_store(ignore_arg_types=[Session])
    pool = Pool()
    app = FastAPI()

    @app.get("/item/{id}")
    @cache(expire=60, store=store)
    async def item(id: int, db: Session = Depends(pool.get_db)) -> dict[str, Any]:
        raise ValueError("boom")

    with client_for(app, store) as client, pytest.raises(ValueError, match="boom"):
        client.get("/item/1")
    assert pool.cleanup_saw == [ValueError]
    assert pool.closed == pool.opened and len(pool.opened) == 1


def test_a_dependency_reading_the_request_runs_on_every_request(make_store: MakeStore) -> None:
    """A dependency that reads a query parameter validates it: it is never deferred, so an
    invalid request is a 422 on a hit too."""
    store = make_store(ignore_arg_types=[Session])
    pool = Pool()

    async def get_db(tenant: int = Query(...)) -> AsyncIterator[Session]:
        async for session in pool.get_db():
            yield session

    app = FastAPI()

    @app.get("/item/{id}")
    @cache(expire=60, store=store)
    async def item(id: int, db: Session = Depends(get_db)) -> dict[str, Any]:
        return {"id": id}

    with client_for(app, store) as client:
        assert get(client, "/item/1?tenant=1")[:2] == (200, "Miss")
        assert get(client, "/item/1?tenant=1")[:2] == (200, "Hit")
        assert client.get("/item/1?tenant=x").status_code == 422
    assert len(pool.opened) == 2


# -- guards -------------------------------------------------------------------------------------


def check_key(x_key: str | None = Header(default=None)) -> None:
    if x_key != "secret":
        raise HTTPException(status_code=403, detail="forbidden")


api_key = APIKeyHeader(name="X-Api-Key", auto_error=False)


def check_api_key(key: str | None = Security(api_key)) -> str:
    if key != "k":
        raise HTTPException(status_code=401, detail="no api key")
    return key


@pytest.mark.parametrize("level", ["app", "router", "include", "route", "security"])
def test_a_guard_at_every_level_refuses_on_a_hit(
    make_store: MakeStore, route_class: type[APIRoute], level: str
) -> None:
    store = make_store(ignore_arg_types=[Session])
    pool = Pool()
    guard_runs: list[str] = []

    def guard(x_key: str | None = Header(default=None)) -> None:
        guard_runs.append(level)
        check_key(x_key)

    app = app_for(store, route_class, dependencies=[Depends(guard)] if level == "app" else [])
    router = APIRouter(
        route_class=route_class, dependencies=[Depends(guard)] if level == "router" else []
    )
    allowed: dict[str, str] = {"X-Key": "secret"}

    if level == "security":
        allowed = {"X-Api-Key": "k"}

        @router.get("/item/{id}")
        @cache(expire=60, store=store, shared=True)
        async def item(
            id: int, key: str = Security(check_api_key), db: Session = Depends(pool.get_db)
        ) -> dict[str, Any]:
            return {"id": id}

    else:

        @router.get("/item/{id}", dependencies=[Depends(guard)] if level == "route" else [])
        @cache(expire=60, store=store)
        async def item(id: int, db: Session = Depends(pool.get_db)) -> dict[str, Any]:  # type: ignore[no-redef]
            return {"id": id}

    app.include_router(router, dependencies=[Depends(guard)] if level == "include" else [])
    refused = 401 if level == "security" else 403
    with client_for(app, store) as client:
        assert client.get("/item/1").status_code == refused
        assert get(client, "/item/1", **allowed)[:2] == (200, "Miss")
        for _ in range(3):
            assert get(client, "/item/1", **allowed)[:2] == (200, "Hit")
            assert client.get("/item/1").status_code == refused
            assert (
                client.get("/item/1", headers={k: "wrong" for k in allowed}).status_code == refused
            )
    assert len(pool.opened) == 1
    if level != "security":
        assert len(guard_runs) == 1 + 1 + 3 * 3  # every request, hits included


def test_a_guard_that_needs_the_session_shares_it_and_it_is_never_skipped(
    make_store: MakeStore, route_class: type[APIRoute]
) -> None:
    store = make_store(ignore_arg_types=[Session])
    pool = Pool()
    guard_sessions: list[Session] = []
    endpoint_sessions: list[Session] = []

    def current_user(
        x_user: str | None = Header(default=None), db: Session = Depends(pool.get_db)
    ) -> str:
        guard_sessions.append(db)
        if x_user is None:
            raise HTTPException(status_code=401)
        return x_user

    app = app_for(store, route_class)

    @app.get("/me")
    @cache(expire=60, store=store, per_user=current_user)
    async def me(db: Session = Depends(pool.get_db)) -> dict[str, Any]:
        endpoint_sessions.append(db)
        return {"ok": True}

    with client_for(app, store) as client:
        assert client.get("/me").status_code == 401
        assert get(client, "/me", **{"X-User": "a"})[:2] == (200, "Miss")
        assert get(client, "/me", **{"X-User": "a"})[:2] == (200, "Hit")
    # FastAPI's one session per request, shared by the guard and the endpoint.
    assert len(pool.opened) == 3 and pool.closed == pool.opened
    assert endpoint_sessions == [guard_sessions[1]]


def test_a_route_guard_that_needs_the_session_is_noticed(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A route's own dependency is unknown when `@cache` runs: the first miss warns that the
    endpoint gets a session of its own; `always_run` shares it again."""
    store = make_store(ignore_arg_types=[Session])
    pool = Pool()

    def guard(db: Session = Depends(pool.get_db)) -> None:
        pass

    app = FastAPI(dependencies=[Depends(guard)])

    @app.get("/item/{id}")
    @cache(expire=60, store=store)
    async def item(id: int, db: Session = Depends(pool.get_db)) -> dict[str, Any]:
        return {"id": id}

    with caplog.at_level(logging.WARNING, logger="oxcache"), client_for(app, store) as client:
        assert get(client, "/item/1")[1] == "Miss"
        assert get(client, "/item/1")[1] == "Hit"
    assert len(pool.opened) == 3  # the guard's two, the endpoint's own on the miss
    assert "also use" in caplog.text and "always_run" in caplog.text

    shared = Pool()
    marked = always_run(shared.get_db)

    def guard2(db: Session = Depends(marked)) -> None:
        pass

    app2 = FastAPI(dependencies=[Depends(guard2)])

    @app2.get("/item/{id}")
    @cache(expire=60, store=store, name="item2")
    async def item2(id: int, db: Session = Depends(marked)) -> dict[str, Any]:
        return {"id": id}

    with client_for(app2, store) as client:
        assert get(client, "/item/1")[1] == "Miss"
        assert get(client, "/item/1")[1] == "Hit"
    assert len(shared.opened) == 2  # one a request, shared as FastAPI shares it


def test_always_run_keeps_a_dependency_with_side_effects_on_hits(make_store: MakeStore) -> None:
    store = make_store(ignore_arg_types=[Session])
    pool = Pool()
    audit = always_run(pool.get_db)
    app = FastAPI()

    @app.get("/item/{id}")
    @cache(expire=60, store=store)
    async def item(id: int, db: Session = Depends(audit)) -> dict[str, Any]:
        return {"id": id}

    with client_for(app, store) as client:
        assert [get(client, "/item/1")[1] for _ in range(3)] == ["Miss", "Hit", "Hit"]
    assert len(pool.opened) == 3 and pool.closed == pool.opened


# -- per user -----------------------------------------------------------------------------------


def user_from_token(authorization: str | None = Header(default=None)) -> str:
    if authorization is None or not authorization.startswith("Bearer user-"):
        raise HTTPException(status_code=401, detail="no token")
    return authorization.removeprefix("Bearer ")


def test_per_user_with_a_session_keys_each_user_and_opens_one_per_miss(
    make_store: MakeStore, route_class: type[APIRoute]
) -> None:
    store = make_store(ignore_arg_types=[Session])
    pool = Pool()
    app = app_for(store, route_class)
    runs: list[str] = []

    @app.get("/me")
    @cache(expire=60, store=store, per_user=user_from_token)
    async def me(
        user: str = Depends(user_from_token), db: Session = Depends(pool.get_db)
    ) -> dict[str, Any]:
        runs.append(user)
        return {"user": user}

    users = [f"user-{i}" for i in range(5)]
    with client_for(app, store) as client:
        for _round in range(3):
            for user in users:
                status, state, body = get(client, "/me", authorization=f"Bearer {user}")
                assert (status, body) == (200, {"user": user})
                assert state == ("Miss" if _round == 0 else "Hit")
            assert client.get("/me").status_code == 401
    assert runs == users and len(pool.opened) == len(users)
    assert pool.closed == pool.opened
    keys = [k for k in stored_keys(store) if "@user" in k and "(" in k]
    assert sorted(k.split("@user=")[1].split(",")[0] for k in keys) == [f'"{u}"' for u in users]


# -- other runs: refreshes, uncached methods ----------------------------------------------------


def test_a_background_refresh_opens_its_own_session_and_closes_it(make_store: MakeStore) -> None:
    store = make_store(ignore_arg_types=[Session])
    pool = Pool()
    app = FastAPI()
    version = {"n": 0}

    @app.get("/data")
    @cache(expire=1, store=store, stale_while_revalidate=60)
    async def data(db: Session = Depends(pool.get_db)) -> dict[str, Any]:
        assert not db.closed
        version["n"] += 1
        return {"n": version["n"]}

    with client_for(app, store) as client:
        assert get(client, "/data")[1:] == ("Miss", {"n": 1})
        time.sleep(1.1)  # stale: served at once, refreshed after the response
        assert get(client, "/data")[1:] == ("Hit", {"n": 1})
        assert get(client, "/data")[1:] == ("Hit", {"n": 2})
    assert version["n"] == 2 and len(pool.opened) == 2 and pool.closed == pool.opened


def test_an_uncached_method_solves_the_session_too(make_store: MakeStore) -> None:
    store = make_store(ignore_arg_types=[Session])
    pool = Pool()
    app = FastAPI()

    @app.post("/item/{id}")
    @cache(expire=60, store=store)
    async def item(id: int, db: Session = Depends(pool.get_db)) -> dict[str, Any]:
        assert isinstance(db, Session) and not db.closed
        return {"id": id}

    with client_for(app, store) as client:
        assert client.post("/item/1").json() == {"id": 1}
        assert client.post("/item/1").json() == {"id": 1}
    assert len(pool.opened) == 2 and pool.closed == pool.opened


def test_the_decorated_function_called_directly_is_the_function(make_store: MakeStore) -> None:
    store = make_store(ignore_arg_types=[Session])
    app = FastAPI()

    @app.get("/item/{id}")
    @cache(expire=60, store=store)
    async def item(id: int, db: Any = None) -> dict[str, Any]:
        return {"id": id, "db": db}

    assert anyio.run(lambda: item(3, db="x")) == {"id": 3, "db": "x"}


def test_the_request_is_still_a_request(make_store: MakeStore) -> None:
    """An endpoint that takes the Request and a session: both arrive, the key holds @query."""
    store = make_store(ignore_arg_types=[Session])
    pool = Pool()
    app = FastAPI()

    @app.get("/item")
    @cache(expire=60, store=store)
    async def item(request: Request, db: Session = Depends(pool.get_db)) -> dict[str, Any]:
        return {"q": request.query_params.get("q")}

    with client_for(app, store) as client:
        assert get(client, "/item?q=1")[1:] == ("Miss", {"q": "1"})
        assert get(client, "/item?q=2")[1:] == ("Miss", {"q": "2"})
        assert get(client, "/item?q=1")[1:] == ("Hit", {"q": "1"})
    assert len(pool.opened) == 2


# -- CachedRoute answers guarded and per-user hits early ----------------------------------------

#: The values FastAPI validated for `CountedInt` parameters (only in its own handler).
VALIDATED: list[int] = []


def counted(value: int) -> int:
    VALIDATED.append(value)
    return value


CountedInt = Annotated[int, AfterValidator(counted)]


def test_cached_route_answers_guarded_per_user_hits_before_fastapi_solves_parameters(
    make_store: MakeStore, route_class: type[APIRoute]
) -> None:
    """The guards and the user run on every request (once); the route's own parameters are
    validated by FastAPI only when the request is not answered early."""
    store = make_store(ignore_arg_types=[Session])
    pool = Pool()
    validated = VALIDATED
    validated.clear()
    users: list[str] = []

    def user(authorization: str | None = Header(default=None)) -> str:
        users.append(str(authorization))
        return user_from_token(authorization)

    app = app_for(store, route_class, dependencies=[Depends(check_key)])

    @app.get("/orders/{id}")
    @cache(expire=60, store=store, per_user=user)
    async def orders(
        id: CountedInt,
        page: int = 1,
        db: Session = Depends(pool.get_db),
    ) -> dict[str, Any]:
        return {"id": id, "page": page}

    a = {"authorization": "Bearer user-a", "X-Key": "secret"}
    b = {"authorization": "Bearer user-b", "X-Key": "secret"}
    with client_for(app, store) as client:
        for _round in range(3):
            assert get(client, "/orders/1?page=2", **a)[1:] == (
                "Miss" if _round == 0 else "Hit",
                {"id": 1, "page": 2},
            )
            assert get(client, "/orders/1?page=2", **b)[1] == ("Miss" if _round == 0 else "Hit")
            assert client.get("/orders/1?page=2", headers={"X-Key": "secret"}).status_code == 401
            assert (
                client.get(
                    "/orders/1?page=2", headers={"authorization": "Bearer user-a"}
                ).status_code
                == 403
            )
    assert len(pool.opened) == 2
    assert len(users) == 3 * 3  # once a request that passed check_key, hits included
    # FastAPI validates on every request that passed the guards (6), CachedRoute only on
    # each user's first (2), the plain route also on the first request it served before
    # answering early (3).
    assert len(validated) == {OwnHandlerRoute: 6, CachedRoute: 2, APIRoute: 3}[route_class]

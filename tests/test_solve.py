"""The lean solver (solve.py) against FastAPI's own: for each dependency shape it takes, the
same values, the same calls in the same order (with the same arguments, sync ones in the
threadpool), the same exceptions; where FastAPI would answer an error (a missing or invalid
parameter) or an override replaces a dependency, it declines and FastAPI's solver runs. End
to end, a `CachedRoute` app answers every request (hit or not) as the plain app does."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Annotated, Any

import pytest
from fastapi import (
    BackgroundTasks,
    Cookie,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
    Security,
)
from fastapi.dependencies.utils import solve_dependencies
from fastapi.routing import APIRoute
from fastapi.security import (
    APIKeyCookie,
    APIKeyHeader,
    HTTPAuthorizationCredentials,
    HTTPBearer,
    SecurityScopes,
)
from pydantic import AfterValidator

from oxcache import Cache, CachedRoute, cache
from oxcache.guards import Guards
from oxcache.solve import Invalid, LeanSolver
from tests.apps import client_for

#: What the dependencies of one run did: (name, arguments, on the event loop's thread).
Log = list[tuple[str, Any, bool]]

LOG: Log = []
LOOP_THREAD: list[int] = []


def note(name: str, args: Any) -> None:
    LOG.append((name, args, threading.get_ident() in LOOP_THREAD))


# -- dependency shapes --------------------------------------------------------------------------


async def token_user(authorization: str | None = Header(default=None)) -> str:
    note("token_user", authorization)
    if authorization is None or not authorization.startswith("Bearer "):
        raise HTTPException(status_code=401, detail="no token", headers={"WWW-Authenticate": "x"})
    return authorization[7:]


def sync_user(x_user: str | None = Header(default=None)) -> str:
    note("sync_user", x_user)
    if not x_user:
        raise HTTPException(status_code=403, detail="forbidden")
    return x_user


def required_header(x_token: str = Header()) -> str:
    note("required_header", x_token)
    return x_token


bearer = HTTPBearer()
bearer_optional = HTTPBearer(auto_error=False)


async def bearer_user(credentials: HTTPAuthorizationCredentials = Security(bearer)) -> str:
    note("bearer_user", credentials.credentials)
    return credentials.credentials


def optional_bearer(
    credentials: HTTPAuthorizationCredentials | None = Security(bearer_optional),
) -> str | None:
    note("optional_bearer", None if credentials is None else credentials.credentials)
    return None if credentials is None else credentials.credentials


api_key = APIKeyHeader(name="X-Api-Key")
api_cookie = APIKeyCookie(name="session")


def keyed(key: str = Security(api_key), session: str = Security(api_cookie)) -> str:
    note("keyed", (key, session))
    return f"{key}:{session}"


def paging(page: int = Query(default=1), size: int | None = None) -> tuple[int, int | None]:
    note("paging", (page, size))
    return page, size


def cookie_theme(theme: str | None = Cookie(default=None)) -> str | None:
    note("cookie_theme", theme)
    return theme


def shared_base(x_user: str | None = Header(default=None)) -> str:
    note("shared_base", x_user)
    return x_user or "anon"


async def uses_base_a(base: str = Depends(shared_base)) -> str:
    note("uses_base_a", base)
    return "a-" + base


def uses_base_b(
    base: str = Depends(shared_base), fresh: str = Depends(shared_base, use_cache=False)
) -> str:
    note("uses_base_b", (base, fresh))
    return "b-" + base + fresh


class Pager:
    def __init__(self, q: str | None = None, limit: int = 10) -> None:
        note("Pager", (q, limit))
        self.q, self.limit = q, limit

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pager) and (self.q, self.limit) == (other.q, other.limit)

    __hash__ = None  # type: ignore[assignment]


class Tenants:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def tenant(self, x_tenant: str | None = Header(default=None)) -> str:
        note("tenant", x_tenant)
        return self.prefix + (x_tenant or "-")


TENANTS = Tenants("t:")


def path_of(request: Request) -> str:
    note("path_of", request.url.path)
    return request.url.path


def tags(x_tag: list[str] | None = Header(default=None)) -> list[str] | None:
    note("tags", x_tag)
    return x_tag


def aliased(
    custom: str | None = Header(default=None, alias="X-Custom"),
    raw_name: str | None = Header(default=None, convert_underscores=False),
) -> tuple[str | None, str | None]:
    note("aliased", (custom, raw_name))
    return custom, raw_name


def item_owner(id: int, x_user: str | None = Header(default=None)) -> str:
    note("item_owner", (id, x_user))
    return f"{id}:{x_user}"


def ignored_validator(
    x_user: Annotated[str | None, AfterValidator(str.upper)] = Header(default=None),
) -> str | None:
    """FastAPI keeps a parameter's `Header(...)` default and drops the validator of its
    annotation: the lean solver must too."""
    note("ignored_validator", x_user)
    return x_user


def route_guard(x_key: str | None = Header(default=None)) -> None:
    note("route_guard", x_key)
    if x_key != "k":
        raise HTTPException(status_code=403, detail="no key")


#: name -> the endpoint's dependency parameters (name -> Depends/Security) and the route's
#: `dependencies=[...]`.
SHAPES: dict[str, tuple[dict[str, Any], list[Any]]] = {
    "token": ({"user": Depends(token_user)}, []),
    "sync": ({"user": Depends(sync_user)}, []),
    "required header": ({"token": Depends(required_header)}, []),
    "bearer": ({"user": Depends(bearer_user)}, []),
    "optional bearer": ({"user": Depends(optional_bearer)}, []),
    "api key and cookie": ({"key": Depends(keyed)}, []),
    "query": ({"paging": Depends(paging)}, []),
    "cookie": ({"theme": Depends(cookie_theme)}, []),
    "shared and use_cache": ({"a": Depends(uses_base_a), "b": Depends(uses_base_b)}, []),
    "class": ({"pager": Depends(Pager)}, []),
    "method": ({"tenant": Depends(TENANTS.tenant)}, []),
    "request": ({"path": Depends(path_of)}, []),
    "list header": ({"tags": Depends(tags)}, []),
    "aliases": ({"names": Depends(aliased)}, []),
    "path parameter": ({"owner": Depends(item_owner)}, []),
    "route guard": ({"user": Depends(token_user)}, [Depends(route_guard)]),
    "validator FastAPI drops": ({"user": Depends(ignored_validator)}, []),
}

#: (headers, query string) of the requests each shape is solved for.
REQUESTS: list[tuple[list[tuple[str, str]], str]] = [
    ([], ""),
    ([("authorization", "Bearer u1")], ""),
    ([("authorization", "Basic xyz")], ""),
    ([("authorization", "Bearer u1"), ("authorization", "Bearer u2")], ""),
    ([("x-user", "alice"), ("x-token", "t"), ("x-key", "k")], "page=2&size=3"),
    ([("x-user", ""), ("x-key", "no")], "page=x"),
    ([("X-Api-Key", "abc"), ("cookie", "session=s1; theme=dark")], "q=hello&limit=5"),
    ([("cookie", "theme=light")], "limit=zero"),
    ([("x-tag", "a"), ("x-tag", "b"), ("x-tenant", "acme")], "size="),
    ([("x-custom", "c"), ("raw_name", "r"), ("raw-name", "no")], "page=1&page=2"),
    ([("x-token", ""), ("x-user", "bob"), ("x-key", "k"), ("authorization", "Bearer ")], ""),
]


def endpoint_for(dependencies: dict[str, Any]) -> Callable[..., Any]:
    async def endpoint(**kwargs: Any) -> dict[str, Any]:
        return {"ok": True}

    import inspect

    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=dep)
            for name, dep in dependencies.items()
        ]
    )
    return endpoint


def route_for(shape: str) -> APIRoute:
    dependencies, guards = SHAPES[shape]
    return APIRoute("/item/{id}", endpoint_for(dependencies), dependencies=guards)


def request_for(headers: list[tuple[str, str]], query: str, stack: AsyncExitStack) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "server": ("testserver", 80),
        "root_path": "",
        "path": "/item/7",
        "raw_path": b"/item/7",
        "query_string": query.encode(),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "path_params": {"id": "7"},
        "fastapi_inner_astack": stack,
        "fastapi_function_astack": stack,
    }
    return Request(scope)


Outcome = tuple[str, Any, Log]


def outcome_of(exc: BaseException) -> Any:
    if isinstance(exc, HTTPException):
        return (type(exc), exc.status_code, exc.detail, exc.headers)
    return (type(exc), str(exc))


async def by_fastapi(guards: Guards, request: Request, overrides: Any = None) -> Outcome:
    LOG.clear()
    provider = type("Provider", (), {"dependency_overrides": overrides or {}})()
    try:
        solved = await solve_dependencies(
            request=request,
            dependant=guards.solving,
            dependency_overrides_provider=provider,
            dependency_cache={},
            async_exit_stack=request.scope["fastapi_inner_astack"],
            embed_body_fields=False,
        )
    except Exception as exc:
        return "raised", outcome_of(exc), list(LOG)
    if solved.errors:
        return "errors", None, list(LOG)
    return "values", solved.values, list(LOG)


async def by_lean(lean: LeanSolver, request: Request, overrides: Any = None) -> Outcome:
    LOG.clear()
    try:
        values = await lean.solve(request, overrides)
    except Invalid:
        return "invalid", None, list(LOG)
    except Exception as exc:
        return "raised", outcome_of(exc), list(LOG)
    return ("declined", None, list(LOG)) if values is None else ("values", values, list(LOG))


def run(coro: Any) -> Any:
    async def main() -> Any:
        LOOP_THREAD[:] = [threading.get_ident()]
        return await coro

    return asyncio.run(main())


@pytest.mark.parametrize("shape", list(SHAPES))
def test_lean_solver_gives_what_fastapis_solver_gives(shape: str) -> None:
    guards = Guards(route_for(shape), route_for(shape).dependant)
    lean = guards.lean
    assert lean is not None, f"{shape} should be solved lean"

    async def compare() -> list[str]:
        kinds = []
        for headers, query in REQUESTS:
            async with AsyncExitStack() as stack:
                fastapi = await by_fastapi(guards, request_for(headers, query, stack))
            async with AsyncExitStack() as stack:
                mine = await by_lean(lean, request_for(headers, query, stack))
            case = f"{shape}: {headers} ?{query}"
            if fastapi[0] == "errors":  # FastAPI's 422: said before anything ran
                assert mine == ("invalid", None, []), case
            else:
                assert mine == fastapi, case
            kinds.append(fastapi[0])
        return kinds

    kinds = run(compare())
    assert "values" in kinds  # every shape has requests it passes


def test_sync_dependencies_run_in_the_threadpool_async_ones_on_the_loop() -> None:
    guards = Guards(route_for("shared and use_cache"), route_for("shared and use_cache").dependant)
    assert guards.lean is not None

    async def solve() -> Outcome:
        async with AsyncExitStack() as stack:
            return await by_lean(guards.lean, request_for([("x-user", "u")], "", stack))  # type: ignore[arg-type]

    kind, values, log = run(solve())
    assert kind == "values" and values == {"a": "a-u", "b": "b-uu"}
    assert log == [
        ("shared_base", "u", False),  # sync: off the loop
        ("uses_base_a", "u", True),  # async: on it
        ("shared_base", "u", False),  # use_cache=False: called again
        ("uses_base_b", ("u", "u"), False),
    ]


def test_an_override_of_one_of_its_dependencies_declines() -> None:
    route = route_for("route guard")
    guards = Guards(route, route.dependant)
    lean = guards.lean
    assert lean is not None

    async def replaced() -> str:
        return "someone"

    async def solve(overrides: Any) -> Outcome:
        async with AsyncExitStack() as stack:
            request = request_for([("authorization", "Bearer u1"), ("x-key", "k")], "", stack)
            return await by_lean(lean, request, overrides)

    assert run(solve({token_user: replaced}))[0] == "declined"
    assert run(solve({route_guard: replaced}))[0] == "declined"
    assert run(solve({sync_user: replaced})) == (
        "values",
        {"user": "u1"},
        [("route_guard", "k", False), ("token_user", "Bearer u1", True)],
    )


async def yielding(x_user: str | None = Header(default=None)) -> AsyncIterator[str]:
    yield x_user or ""


def with_response(response: Response) -> None:
    response.headers["x-seen"] = "1"


def with_scopes(scopes: SecurityScopes) -> None:
    pass


def with_tasks(tasks: BackgroundTasks) -> None:
    pass


def validated(x_user: Annotated[str | None, Header(), AfterValidator(str.upper)] = None) -> None:
    pass


def constrained(x_user: str | None = Header(default=None, max_length=3)) -> None:
    pass


def two_args(a: str | None = Header(default=None), *, b: int) -> None:
    pass


class Patched:
    """An instance whose own `__call__` attribute is not its class's."""

    def __init__(self) -> None:
        self.__call__ = sync_user

    def __call__(self, x_user: str | None = Header(default=None)) -> str:
        return "class"


DECLINED: dict[str, Any] = {
    "instance attribute __call__": Depends(Patched()),
    "yield": Depends(yielding),
    "response": Depends(with_response),
    "security scopes": Security(with_scopes, scopes=["read"]),
    "background tasks": Depends(with_tasks),
    "validator": Depends(validated),
    "constraint": Depends(constrained),
    "partial": Depends(functools.partial(two_args, b=1)),
    "wrapped": Depends(functools.wraps(sync_user)(lambda **kw: sync_user(**kw))),
}


@pytest.mark.parametrize("shape", list(DECLINED))
def test_shapes_it_cannot_solve_exactly_are_left_to_fastapi(shape: str) -> None:
    route = APIRoute("/item/{id}", endpoint_for({"value": DECLINED[shape]}))
    assert LeanSolver.compile(Guards(route, route.dependant).solving) is None


def test_it_never_solves_the_routes_own_parameters() -> None:
    async def item(id: int, user: str = Depends(token_user)) -> None:
        pass

    route = APIRoute("/item/{id}", item)
    assert LeanSolver.compile(route.dependant) is None  # `id` is the route's own
    assert LeanSolver.compile(Guards(route, route.dependant).solving) is not None


# -- end to end: CachedRoute against the plain app ---------------------------------------------

PER_USER_REQUESTS: list[tuple[dict[str, str], str]] = [
    ({"authorization": "Bearer u1", "x-key": "k"}, ""),
    ({"authorization": "Bearer u2", "x-key": "k"}, "?page=2"),
    ({"authorization": "Bearer u1"}, ""),  # the route guard refuses
    ({"x-key": "k"}, ""),  # no token: 401 with its header
    ({"authorization": "Basic u1", "x-key": "k"}, ""),
    ({"authorization": "Bearer u1", "x-key": "k"}, "?page=x"),  # FastAPI's 422
    ({"authorization": "Bearer u1", "x-key": "k", "x-tenant": ""}, "?page=3"),
]


def per_user_app(route_class: type[APIRoute] | None, store: Cache) -> FastAPI:
    app = FastAPI(dependencies=[Depends(route_guard)])
    if route_class is not None:
        app.router.route_class = route_class

    async def me(
        user: str = Depends(token_user), tenant: str = Depends(TENANTS.tenant), page: int = 1
    ) -> dict[str, Any]:
        return {"user": user, "tenant": tenant, "page": page}

    endpoint = me if route_class is None else cache(expire=60, store=store, per_user=token_user)(me)
    app.get("/me")(endpoint)
    return app


def comparable(response: Any) -> tuple[int, Any, dict[str, str]]:
    skip = {"x-fastapi-cache", "cache-status", "cache-control", "etag", "age", "expires", "vary"}
    headers = {k: v for k, v in response.headers.items() if k not in skip}
    return response.status_code, response.json(), headers


@pytest.mark.parametrize("route_class", [APIRoute, CachedRoute])
def test_cached_route_answers_as_the_uncached_app_hit_or_not(route_class: type[APIRoute]) -> None:
    store = Cache()
    plain = client_for(per_user_app(None, store), store)
    with plain, client_for(per_user_app(route_class, store), store) as cached:
        for _round in range(3):
            for headers, query in PER_USER_REQUESTS:
                expected = comparable(plain.get("/me" + query, headers=headers))
                got = cached.get("/me" + query, headers=headers)
                assert comparable(got) == expected, (headers, query)
                if expected[0] == 200 and _round:
                    assert got.headers["x-fastapi-cache"] == "Hit"


#: A valid request of `per_user_app`'s `/me`: user u1.
TOKEN = {"authorization": "Bearer u1", "x-key": "k"}


async def someone_else() -> str:
    """An override of `token_user`."""
    return "u2"


@pytest.mark.parametrize("route_class", [APIRoute, CachedRoute])
def test_an_override_set_after_the_first_hit_applies_to_the_next_hit(
    route_class: type[APIRoute],
) -> None:
    store = Cache()
    app = per_user_app(route_class, store)
    with client_for(app, store) as client:
        first = {"user": "u1", "tenant": "t:-", "page": 1}
        assert client.get("/me", headers=TOKEN).json() == first
        assert client.get("/me", headers=TOKEN).headers["x-fastapi-cache"] == "Hit"
        app.dependency_overrides[token_user] = someone_else
        assert client.get("/me", headers=TOKEN).json() == {**first, "user": "u2"}
        assert client.get("/me", headers=TOKEN).headers["x-fastapi-cache"] == "Hit"
        no_token = client.get("/me", headers={"x-key": "k"})
        assert no_token.json() == {**first, "user": "u2"}  # no token needed
        app.dependency_overrides.clear()
        assert client.get("/me", headers=TOKEN).json() == first
        assert client.get("/me", headers={"x-key": "k"}).status_code == 401


@pytest.mark.parametrize("route_class", [APIRoute, CachedRoute])
def test_a_simple_guarded_hit_never_calls_fastapis_solver(
    monkeypatch: pytest.MonkeyPatch, route_class: type[APIRoute]
) -> None:
    """The early path's guards go through the plan, FastAPI's solver only where the plan
    declines: an override of one of its dependencies (FastAPI's handler then runs too)."""
    import oxcache.guards

    calls: list[int] = []

    async def counted(**kwargs: Any) -> Any:
        calls.append(1)
        return await solve_dependencies(**kwargs)

    monkeypatch.setattr(oxcache.guards, "solve_dependencies", counted)
    store = Cache()
    app = per_user_app(route_class, store)
    with client_for(app, store) as client:
        assert client.get("/me", headers=TOKEN).status_code == 200  # the miss
        hits = [client.get("/me", headers=TOKEN) for _ in range(3)]
        assert [r.headers["x-fastapi-cache"] for r in hits] == ["Hit"] * 3
        assert client.get("/me", headers={"x-key": "k"}).status_code == 401
        assert calls == []
        app.dependency_overrides[token_user] = someone_else
        assert client.get("/me", headers=TOKEN).json()["user"] == "u2"
        assert calls == [1]

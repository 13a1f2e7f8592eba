"""`CachedRoute`: hits answered before FastAPI solves the endpoint's parameters.

With the plain `APIRoute`, a hit still pays FastAPI's whole request handling before `@cache`
runs: the `Request`, solving and validating the path and query parameters, and the call into
the decorated function. For an endpoint whose key depends on nothing but its path, its query
string and its `vary` headers, that work gives the same key every time the same raw request
comes back. `CachedRoute` remembers, per route, which raw request (path, query string, the
`vary` headers' values) led to which key, learned when FastAPI's own path computed it, and on
the next such request reads the entry and answers straight away; anything it is not sure of
goes the usual way, which applies every rule of `@cache`.

A route whose own parameters are all in its raw path and query string qualifies: no header,
cookie or body parameters and no per-request defaults (`default_factory`). When it has
dependencies (the route's, its router's or the app's, `Security(...)`, the `per_user`
dependency, dependencies whose values the key holds), they run first, on every request
(`oxcache.guards`: FastAPI's solver, or the lean one of `oxcache.solve` for simple trees): a
request they refuse is refused, hit or not, and the user id and the key's dependency values
join the raw request's signature. On a miss,
FastAPI's handler takes their values instead of running them again. Dependencies `@cache`
defers (a database session) are not among them: they run only with the endpoint.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import fastapi.routing
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from oxcache.early import RouteMemo
from oxcache.endpoint import CachedEndpoint
from oxcache.guards import GUARDS_SCOPE_KEY, Guards
from oxcache.serve import answer_early

__all__ = ["CachedRoute", "can_answer_after_guards", "can_answer_early"]


def _in_use(route: APIRoute) -> Any:
    """What the route's handler is built from: FastAPI >= 0.16x builds one handler per
    inclusion of a router (with that inclusion's dependencies) and says which through a
    context variable; older versions copy the route, with its dependencies, on inclusion."""
    var = getattr(fastapi.routing, "_effective_route_context_var", None)
    if var is not None:
        context = var.get()
        if context is not None and getattr(context, "original_route", None) is route:
            return context
    return route


def _dependant_in_use(route: APIRoute) -> Any:
    """The dependant the route's handler is built with (see `_in_use`)."""
    return getattr(_in_use(route), "dependant", None)


def _plain_parameters(route: APIRoute, dependant: Any) -> bool:
    """Whether the route's own parameters are all in its raw path and query string: no
    header, cookie or body parameter, and no default made per request
    (`Query(default_factory=date.today)`)."""
    if (
        dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
        or dependant.security_scopes_param_name
        or getattr(route, "body_field", None) is not None
    ):
        return False
    return not any(
        getattr(getattr(field, "field_info", None), "default_factory", None) is not None
        for field in (*dependant.path_params, *dependant.query_params)
    )


def can_answer_early(route: APIRoute, endpoint: CachedEndpoint, dependant: Any) -> bool:
    """Whether a hit of `route` can be answered before FastAPI solves its parameters: its
    key then depends only on the raw path, query string and `vary` headers."""
    if dependant is None or endpoint.per_user is not None or endpoint.deps:
        return False
    try:
        return not dependant.dependencies and _plain_parameters(route, dependant)
    except AttributeError:  # a FastAPI whose dependant we do not know: take no chances
        return False


def can_answer_after_guards(route: APIRoute, endpoint: CachedEndpoint, dependant: Any) -> bool:
    """Whether a hit of `route`, which has dependencies (guards, `per_user`, dependencies
    its key holds), can be answered once they are solved: its own parameters are plain
    (see `can_answer_early`) and its dependencies can be solved apart (`Guards.possible`)."""
    if dependant is None:
        return False
    try:
        return _plain_parameters(route, dependant) and Guards.possible(dependant)
    except AttributeError:
        return False


class CachedRoute(APIRoute):
    """An `APIRoute` that answers hits of `@cache` endpoints before FastAPI solves their
    parameters (see the module docstring). Use it for a whole app or router:

        app = FastAPI()
        app.router.route_class = CachedRoute   # before the routes are added

        router = APIRouter(route_class=CachedRoute)

    Routes whose endpoint is not cached, or that have header, cookie or body parameters,
    behave exactly like `APIRoute`; the dependencies of the others run on every request.
    Responses, headers, 304s, logs and `stats()` are the same as without it; only the work
    before a hit is saved.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        endpoint = getattr(self.endpoint, "__oxcache__", None)
        if not isinstance(endpoint, CachedEndpoint):
            return handler
        dependant = _dependant_in_use(self)
        guards: Guards | None = None
        if not can_answer_early(self, endpoint, dependant):
            if not can_answer_after_guards(self, endpoint, dependant):
                return handler
            guards = Guards(_in_use(self), dependant)
        memo = RouteMemo(endpoint)
        # The memos of the handlers built and still in use (FastAPI builds one handler per
        # inclusion of a router); weak, so a rebuilt handler's old memo goes with it.
        memos: weakref.WeakSet[RouteMemo] | None = getattr(self, "oxcache_memos", None)
        if memos is None:
            memos = weakref.WeakSet()
            self.oxcache_memos = memos
        memos.add(memo)

        if guards is None:

            async def cached_route_handler(request: Request) -> Response:
                response = await answer_early(endpoint, request.scope, memo)
                if response is not None:
                    return response
                return await handler(request)

            return cached_route_handler

        solved_handler = self._handler_with(guards.holder, guards.handler_dependant())
        found = guards

        async def guarded_route_handler(request: Request) -> Response:
            async def solve(store: Any) -> tuple[str | None, tuple[Any, ...]] | None:
                values = await found.solve(request)
                return None if values is None else found.key_parts(endpoint, store, values)

            response = await answer_early(endpoint, request.scope, memo, solve)
            if response is not None:
                return response
            if GUARDS_SCOPE_KEY in request.scope:  # solved: FastAPI takes their values
                return await solved_handler(request)
            return await handler(request)

        return guarded_route_handler

    def _handler_with(
        self, holder: Any, dependant: Any
    ) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler of this route, built with `dependant` instead of its own."""
        original = holder.dependant
        holder.dependant = dependant
        try:
            return super().get_route_handler()
        finally:
            holder.dependant = original

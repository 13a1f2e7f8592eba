"""`CachedRoute`: hits answered before FastAPI solves the endpoint's parameters.

With the plain `APIRoute`, a hit still pays FastAPI's whole request handling before `@cache`
runs: the `Request`, solving and validating the path and query parameters, and the call into
the decorated function. For an endpoint whose key depends on nothing but its path, its query
string and its `vary` headers, that work gives the same key every time the same raw request
comes back. `CachedRoute` remembers, per route, which raw request (path, query string, the
`vary` headers' values) led to which key, learned when FastAPI's own path computed it, and on
the next such request reads the entry and answers straight away; anything it is not sure of
goes the usual way, which applies every rule of `@cache`.

It only does this for routes that have nothing else to run: no dependencies (the route's,
its router's or the app's, security included), no header, cookie or body parameters, no
per-request defaults (`default_factory`) and no `per_user`. A route with an authentication
dependency is never answered early, so a cached response is never sent to a request that
dependency would have refused.
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
from oxcache.serve import answer_early

__all__ = ["CachedRoute", "can_answer_early"]


def _dependant_in_use(route: APIRoute) -> Any:
    """The dependant the route's handler is built with. FastAPI >= 0.16x builds one handler
    per inclusion of a router (with that inclusion's dependencies) and says which through a
    context variable; older versions copy the route, with its dependencies, on inclusion."""
    var = getattr(fastapi.routing, "_effective_route_context_var", None)
    if var is not None:
        context = var.get()
        if context is not None and getattr(context, "original_route", None) is route:
            return getattr(context, "dependant", None)
    return getattr(route, "dependant", None)


def can_answer_early(route: APIRoute, endpoint: CachedEndpoint, dependant: Any) -> bool:
    """Whether a hit of `route` can be answered before FastAPI solves its parameters: its
    key then depends only on the raw path, query string and `vary` headers."""
    if dependant is None or endpoint.per_user is not None or endpoint.deps:
        return False
    try:
        if (
            dependant.dependencies
            or dependant.header_params
            or dependant.cookie_params
            or dependant.body_params
            or dependant.security_scopes_param_name
        ):
            return False
        # A default made per request (`Query(default_factory=date.today)`) is an input the
        # raw request does not show.
        return not any(
            getattr(getattr(field, "field_info", None), "default_factory", None) is not None
            for field in (*dependant.path_params, *dependant.query_params)
        )
    except AttributeError:  # a FastAPI whose dependant we do not know: take no chances
        return False


class CachedRoute(APIRoute):
    """An `APIRoute` that answers hits of `@cache` endpoints before FastAPI solves their
    parameters (see the module docstring). Use it for a whole app or router:

        app = FastAPI()
        app.router.route_class = CachedRoute   # before the routes are added

        router = APIRouter(route_class=CachedRoute)

    Routes whose endpoint is not cached, or that have dependencies, header, cookie or body
    parameters, behave exactly like `APIRoute`. Responses, headers, 304s, logs and
    `stats()` are the same as without it; only the work before a hit is saved.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        endpoint = getattr(self.endpoint, "__oxcache__", None)
        if not isinstance(endpoint, CachedEndpoint) or not can_answer_early(
            self, endpoint, _dependant_in_use(self)
        ):
            return handler
        memo = RouteMemo(endpoint)
        # The memos of the handlers built and still in use (FastAPI builds one handler per
        # inclusion of a router); weak, so a rebuilt handler's old memo goes with it.
        memos: weakref.WeakSet[RouteMemo] | None = getattr(self, "oxcache_memos", None)
        if memos is None:
            memos = weakref.WeakSet()
            self.oxcache_memos = memos
        memos.add(memo)

        async def cached_route_handler(request: Request) -> Response:
            response = await answer_early(endpoint, request.scope, memo)
            if response is not None:
                return response
            return await handler(request)

        return cached_route_handler

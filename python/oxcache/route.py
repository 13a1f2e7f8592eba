"""Hits answered before FastAPI solves the endpoint's parameters: `CachedRoute`, and
`adopt`, which gives a plain `APIRoute` the same early path at its first request.

Through FastAPI's handler, a hit still pays FastAPI's whole request handling before `@cache`
runs: the `Request`, solving and validating the path and query parameters, and the call into
the decorated function. For an endpoint whose key depends on nothing but its path, its query
string and its `vary` headers, that work gives the same key every time the same raw request
comes back. The early path remembers, per route, which raw request (path, query string, the
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

`adopt` wraps the ASGI app FastAPI built for the route (`early_app`), so a hit of a route
without guards, or whose guards the lean plan solves without handing the `Request` to
anything but FastAPI's security schemes, is answered before FastAPI's request handling
(the `Request`, its exit stacks, its exception wrapper); a guard's refusal then reaches the
app's exception handlers from the router, as it would from the route. `CachedRoute` builds
the early path into the route's handler, inside that request handling.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections.abc import Callable, Coroutine, MutableMapping
from typing import Any

import fastapi.routing
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from oxcache.early import RouteMemo
from oxcache.endpoint import CachedEndpoint
from oxcache.guards import GUARDS_SCOPE_KEY, Guards
from oxcache.responses import route_settings
from oxcache.serve import answer_early
from oxcache.solve import Invalid, LeanSolver
from oxcache.store import default_store

__all__ = [
    "CachedRoute",
    "adopt",
    "can_answer_after_guards",
    "can_answer_early",
    "early_app",
    "early_handler",
]


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


logger = logging.getLogger("oxcache")

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _plan(route: APIRoute, holder: Any) -> tuple[CachedEndpoint, Guards | None] | None:
    """`route`'s cached endpoint and the guards solved before an early answer (None: it
    has none), or None when its endpoint is not cached or it does not qualify (see the
    module docstring). `holder` is the route, or the inclusion of its router."""
    endpoint = getattr(route.endpoint, "__oxcache__", None)
    if not isinstance(endpoint, CachedEndpoint):
        return None
    if route.endpoint is not endpoint.wrapper:
        # `functools.wraps` copied `__oxcache__` onto a decorator above `@cache`: an early
        # answer would skip what it does (an auth check, say).
        logger.warning(
            "%s: a decorator above @cache wraps it, so its hits are not answered before "
            "FastAPI solves the parameters (put @cache just below the route decorator's "
            "other decorators, or make them dependencies)",
            endpoint.name,
        )
        return None
    dependant = getattr(holder, "dependant", None)
    if can_answer_early(route, endpoint, dependant):
        return endpoint, None
    if can_answer_after_guards(route, endpoint, dependant):
        return endpoint, Guards(holder, dependant)
    return None


def _memo(route: APIRoute, endpoint: CachedEndpoint) -> RouteMemo:
    memo = RouteMemo(endpoint)
    # The memos of the handlers built and still in use (FastAPI builds one handler per
    # inclusion of a router); weak, so a rebuilt handler's old memo goes with it.
    memos: weakref.WeakSet[RouteMemo] | None = getattr(route, "oxcache_memos", None)
    if memos is None:
        memos = weakref.WeakSet()
        route.oxcache_memos = memos  # type: ignore[attr-defined]
    memos.add(memo)
    return memo


def _handler(
    endpoint: CachedEndpoint,
    memo: RouteMemo,
    guards: Guards | None,
    handler: Handler,
    solved_handler: Handler | None,
) -> Handler:
    """The handler answering hits early in front of FastAPI's `handler`; with guards,
    `solved_handler` is FastAPI's handler taking their solved values."""
    if guards is None or solved_handler is None:

        async def cached_route_handler(request: Request) -> Response:
            response = await answer_early(endpoint, request.scope, memo)
            if response is not None:
                return response
            return await handler(request)

        return cached_route_handler

    found, solved = guards, solved_handler

    async def guarded_route_handler(request: Request) -> Response:
        async def solve(store: Any) -> tuple[str | None, tuple[Any, ...]] | None:
            values = await found.solve(request)
            return None if values is None else found.key_parts(endpoint, store, values)

        response = await answer_early(endpoint, request.scope, memo, solve)
        if response is not None:
            return response
        if GUARDS_SCOPE_KEY in request.scope:  # solved: FastAPI takes their values
            return await solved(request)
        return await handler(request)

    return guarded_route_handler


def early_handler(
    route: APIRoute,
    holder: Any,
    handler: Handler,
    build: Callable[[Any, Any], Handler],
) -> Handler | None:
    """The handler answering `route`'s hits early in front of FastAPI's `handler` (built
    for `holder`: the route, or the inclusion of its router), or None when its endpoint is
    not cached or the route does not qualify (see the module docstring). `build(holder,
    dependant)` builds FastAPI's handler with another dependant (`Guards.handler_dependant`)."""
    plan = _plan(route, holder)
    if plan is None:
        return None
    endpoint, guards = plan
    solved = None if guards is None else build(guards.holder, guards.handler_dependant())
    return _handler(endpoint, _memo(route, endpoint), guards, handler, solved)


def _answering(endpoint: CachedEndpoint, memo: RouteMemo, app: ASGIApp) -> ASGIApp:
    """An ASGI app answering known hits of a route without guards before FastAPI's `app`
    (its request handling: the `Request`, the exit stacks, the exception wrapper) runs."""

    async def answering_app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await answer_early(endpoint, scope, memo)
        if response is None:
            await app(scope, receive, send)
        else:
            await response(scope, receive, send)

    return answering_app


def _answering_guarded(
    endpoint: CachedEndpoint,
    memo: RouteMemo,
    guards: Guards,
    lean: LeanSolver,
    apps: tuple[ASGIApp, ASGIApp, ASGIApp],
) -> ASGIApp:
    """The same for a route whose guards the lean plan solves without the `Request` ever
    reaching a dependency (and without yield dependencies, so without an exit stack). A
    guard's refusal propagates to the app's exception handlers, as from FastAPI's handler.
    `apps`: FastAPI's, the guarded handler's (`_handler`, for requests overriding a guard),
    and FastAPI's taking the solved values (a miss)."""
    plain, guarded, solved_app = apps
    holder = guards.holder

    async def answering_app(scope: Scope, receive: Receive, send: Send) -> None:
        provider = getattr(holder, "dependency_overrides_provider", None) or scope.get("app")
        overrides = getattr(provider, "dependency_overrides", None)
        if overrides and lean.overridden(overrides):
            await guarded(scope, receive, send)  # FastAPI's solver, with its exit stack
            return
        request = Request(scope, receive, send)

        async def solve(store: Any) -> tuple[str | None, tuple[Any, ...]] | None:
            values = await lean.solve(request)
            if values is None:  # pragma: no cover - overrides were checked above
                return None
            scope[GUARDS_SCOPE_KEY] = (values, None)
            return guards.key_parts(endpoint, store, values)

        try:
            response = await answer_early(endpoint, scope, memo, solve)
        except Invalid:  # nothing ran: FastAPI's handler answers its 422
            await plain(scope, receive, send)
            return
        if response is not None:
            await response(scope, receive, send)
        elif GUARDS_SCOPE_KEY in scope:  # solved: FastAPI takes their values
            await solved_app(scope, receive, send)
        else:
            await plain(scope, receive, send)

    return answering_app


def _asgi(handler: Handler, holder: Any) -> ASGIApp:
    """`handler` as FastAPI makes a route's ASGI app of it."""
    app = fastapi.routing.request_response(handler)
    limit = getattr(fastapi.routing, "wrap_app_with_body_limit", None)
    if limit is not None:
        app = limit(app, getattr(holder, "max_body_size", None))
    return app


def early_app(
    route: APIRoute, holder: Any, app: ASGIApp, build: Callable[[Any, Any], Handler]
) -> ASGIApp | None:
    """The ASGI app answering `route`'s hits early in front of `app`, what FastAPI built for
    `holder` (the route, or the inclusion of its router), or None when its endpoint is not
    cached or the route does not qualify. `build(holder, dependant)` builds FastAPI's
    handler with `dependant`. A hit is answered before FastAPI's request handling when the
    route has no guards or the lean plan solves them without the `Request`; otherwise in
    a handler FastAPI's way (`_handler`)."""
    plan = _plan(route, holder)
    if plan is None:
        return None
    endpoint, guards = plan
    memo = _memo(route, endpoint)
    if guards is None:
        return _answering(endpoint, memo, app)
    solved = build(holder, guards.handler_dependant())
    guarded = _asgi(
        _handler(endpoint, memo, guards, build(holder, holder.dependant), solved), holder
    )
    lean = guards.lean
    if lean is None or lean.takes_request:
        return guarded
    return _answering_guarded(endpoint, memo, guards, lean, (app, guarded, _asgi(solved, holder)))


class CachedRoute(APIRoute):
    """An `APIRoute` that answers hits of `@cache` endpoints before FastAPI solves their
    parameters (see the module docstring), from the first request on and whatever the
    store's `answer_early` (a plain `APIRoute` does so from its second request on, see
    `adopt`). Use it for a whole app or router:

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
        early = early_handler(self, _in_use(self), handler, self._handler_with)
        return handler if early is None else early

    def _handler_with(self, holder: Any, dependant: Any) -> Handler:
        """FastAPI's handler of this route, built with `dependant` instead of its own."""
        return _built_with(super().get_route_handler, holder, dependant)


def _built_with(build: Callable[[], Handler], holder: Any, dependant: Any) -> Handler:
    """`build()` (FastAPI's handler of a route) with `holder.dependant` set to `dependant`."""
    original = holder.dependant
    holder.dependant = dependant
    try:
        return build()
    finally:
        holder.dependant = original


def _fastapis_own(app: Any) -> bool:
    """Whether `app` is what FastAPI builds for a route, `request_response(handler)` (within
    its body-size limit), and not something that wraps it (a per-route ASGI guard)."""
    if type(app).__module__ == "starlette.middleware.body_limit":
        inner = getattr(app, "app", None)
        if type(inner).__module__ == "fastapi._body_limit":
            app = getattr(inner, "app", None)
    return (
        getattr(app, "__module__", None) == "fastapi.routing"
        and getattr(app, "__qualname__", None) == "request_response.<locals>.app"
    )


def adopt(endpoint: CachedEndpoint, scope: MutableMapping[str, Any]) -> None:
    """Answer the hits of the plain `APIRoute` that FastAPI just called a `@cache` endpoint
    through (`scope["route"]`) early from now on, as `CachedRoute` does: its handler
    (`app`, of the route or of its router's inclusion) is rebuilt once with
    `early_app` in front. Left as it is, each looked at once: a route whose class builds
    its own handler (`CachedRoute`, or any subclass overriding `get_route_handler`), one
    whose `app` is not the one FastAPI built (wrapped by someone else), one whose endpoint
    is a decorator above `@cache`, and one that does not qualify. Not at all when
    `endpoint`'s store says `answer_early=False`, or `endpoint` is not the route's."""
    route = scope.get("route")
    if not isinstance(route, APIRoute) or getattr(route.endpoint, "__oxcache__", 0) is not endpoint:
        return  # not this endpoint's route (a @cache function called by another endpoint)
    holder = route_settings(scope)  # the route, or its router's inclusion
    if getattr(holder, "oxcache_adopted", False):
        return
    if not (endpoint.store or default_store()).answer_early:
        return
    holder.oxcache_adopted = True
    if type(route).get_route_handler is not APIRoute.get_route_handler or not _fastapis_own(
        holder.app
    ):
        return  # a handler or an app someone else built or wrapped: left as it is
    var: Any = getattr(fastapi.routing, "_effective_route_context_var", None)
    token = None if var is None or holder is route else var.set(holder)
    try:
        build = functools.partial(APIRoute.get_route_handler, route)
        app = early_app(route, holder, holder.app, functools.partial(_built_with, build))
    except Exception:  # a FastAPI this does not know: the route stays as FastAPI built it
        logger.warning(
            "%s: its route is left to FastAPI's handler (hits are not answered early)",
            endpoint.name,
            exc_info=True,
        )
        return
    finally:
        if token is not None:
            var.reset(token)
    if app is not None:
        holder.app = app

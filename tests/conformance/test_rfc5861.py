"""RFC 5861: stale-while-revalidate (section 3) and stale-if-error (section 4), as
`@cache` options and as the endpoint's own Cache-Control directives. Each test names the
section it checks; each runs on memory and Redis, with APIRoute and CachedRoute.

Entries here live 100 ms; the tests sleep past that to find them stale (sleeps only order
events: no test asserts how long anything took)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from oxcache import Cache, cache
from tests.conformance.conftest import MakeApp

SHORT = timedelta(milliseconds=100)


def stale_app(
    make_app: MakeApp, store: Cache, control: str | None = None, **options: Any
) -> tuple[FastAPI, dict[str, Any]]:
    """An endpoint that answers `{"run": n}`, or fails as `state["fail"]` says."""
    app = make_app()
    state: dict[str, Any] = {"runs": 0, "fail": None}

    @app.get("/s")
    @cache(store=store, **{"expire": SHORT, **options})
    async def s(response: Response) -> Any:
        state["runs"] += 1
        if state["fail"] == "raise":
            raise RuntimeError("database down")
        if state["fail"] == "503":
            return JSONResponse({"error": "busy"}, status_code=503)
        if state["fail"] == "404":
            raise HTTPException(404)
        if control is not None:
            response.headers["Cache-Control"] = control
        return {"run": state["runs"]}

    return app, state


def test_3_a_stale_entry_is_served_at_once_and_refreshed_in_the_background(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 3: within the window the stale response is served (with an Age beyond its
    max-age, RFC 9111 5.1) while one revalidation runs; the next request gets its result."""
    app, state = stale_app(make_app, store, stale_while_revalidate=60)
    with TestClient(app) as client:
        client.get("/s")
        time.sleep(0.15)
        stale = client.get("/s")  # the refresh runs after this response is sent
        fresh = client.get("/s")
    assert stale.json() == {"run": 1} and stale.headers["x-fastapi-cache"] == "Hit"
    assert "-" in stale.headers["cache-status"]  # a negative ttl: stale (RFC 9211)
    assert fresh.json() == {"run": 2} and state["runs"] == 2
    assert "stale-while-revalidate=60" in stale.headers["cache-control"]


def test_3_past_the_window_the_entry_is_not_served(store: Cache, make_app: MakeApp) -> None:
    """Section 3: "If delta-seconds passes ... it SHOULD NOT continue to be served stale"."""
    app, _ = stale_app(make_app, store, stale_while_revalidate=timedelta(milliseconds=100))
    with TestClient(app) as client:
        client.get("/s")
        time.sleep(0.3)
        response = client.get("/s")
    assert response.json() == {"run": 2} and response.headers["x-fastapi-cache"] == "Miss"


def test_3_the_endpoints_own_stale_while_revalidate_opens_the_window(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 3, as the response's own directive: `stale-while-revalidate=60` in the
    endpoint's Cache-Control lets the cache serve it stale without any option."""
    app, _ = stale_app(make_app, store, control="max-age=600, stale-while-revalidate=60")
    with TestClient(app) as client:
        client.get("/s")
        time.sleep(0.15)
        stale = client.get("/s")
    assert stale.json() == {"run": 1} and stale.headers["x-fastapi-cache"] == "Hit"


def test_3_the_endpoints_own_must_revalidate_closes_the_window(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 3 with RFC 9111 4.2.4: `must-revalidate` forbids the stale copy the option
    would allow."""
    app, _ = stale_app(
        make_app, store, control="max-age=600, must-revalidate", stale_while_revalidate=60
    )
    with TestClient(app) as client:
        client.get("/s")
        time.sleep(0.15)
        response = client.get("/s")
    assert response.json() == {"run": 2}


def test_4_a_stale_entry_is_served_when_the_endpoint_fails(store: Cache, make_app: MakeApp) -> None:
    """Section 4: "an error is any situation which would result in a 500, 502, 503 or 504"
    - a raised exception and a 5xx answer both get the stale response."""
    app, state = stale_app(make_app, store, stale_if_error=60)
    with TestClient(app) as client:
        client.get("/s")
        time.sleep(0.15)
        for failure in ("raise", "503"):
            state["fail"] = failure
            response = client.get("/s")
            assert response.status_code == 200 and response.json() == {"run": 1}
            assert "stale-if-error" in response.headers["cache-status"]
    assert "stale-if-error=60" in response.headers["cache-control"]


def test_4_an_answer_that_is_not_an_error_is_passed_through(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 4: only errors (5xx) qualify; a 404 is the endpoint's answer."""
    app, state = stale_app(make_app, store, stale_if_error=60)
    with TestClient(app) as client:
        client.get("/s")
        time.sleep(0.15)
        state["fail"] = "404"
        response = client.get("/s")
    assert response.status_code == 404


def test_4_without_a_window_the_error_reaches_the_client(store: Cache, make_app: MakeApp) -> None:
    """Section 4: stale-if-error is an explicit permission; without it the 503 is sent."""
    app, state = stale_app(make_app, store)
    with TestClient(app) as client:
        client.get("/s")
        time.sleep(0.15)
        state["fail"] = "503"
        response = client.get("/s")
    assert response.status_code == 503


def test_4_the_endpoints_own_stale_if_error_opens_the_window(
    store: Cache, make_app: MakeApp
) -> None:
    """Section 4, as the response's own directive `stale-if-error=60`."""
    app, state = stale_app(make_app, store, control="max-age=600, stale-if-error=60")
    with TestClient(app) as client:
        client.get("/s")
        time.sleep(0.15)
        state["fail"] = "503"
        response = client.get("/s")
    assert response.status_code == 200 and response.json() == {"run": 1}

"""responses.py: a miss stores, and a hit replays, the exact response FastAPI would send for
the endpoint's return value: response_model filtering (a secret field never reaches the
store), response_class, the route's status code, headers and status set on an injected
`Response`, and any value FastAPI can serialize, byte for byte. On memory, Redis and Redis
Cluster (parametrized through make_store)."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
import warnings
from decimal import Decimal
from typing import Any, Callable, Optional

import pytest
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel

from oxcache import Cache, cache
from tests.apps import Item, MakeStore, Point, client_for
from tests.conftest import sync_client

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from fastapi.responses import ORJSONResponse

# -- bodies identical to the undecorated route -------------------------------------------------


class Public(BaseModel):
    id: int
    name: str
    nickname: Optional[str] = None


def _twin_routes(store: Cache) -> FastAPI:
    """Each endpoint registered twice: at /plain/... undecorated, at /cached/... with @cache."""
    app = FastAPI()
    specs: list[tuple[str, dict[str, Any], Callable[..., Any]]] = []

    def add(path: str, func: Callable[..., Any], **route: Any) -> None:
        specs.append((path, route, func))

    add(
        "/model-filter",
        lambda: {"id": 1, "name": "a", "password_hash": "s3cr3t"},
        response_model=Public,
    )
    add(
        "/exclude-none",
        lambda: Public(id=1, name="a"),
        response_model=Public,
        response_model_exclude_none=True,
    )
    add(
        "/exclude-unset",
        lambda: Public(id=1, name="a"),
        response_model=Public,
        response_model_exclude_unset=True,
    )
    add(
        "/list-models",
        lambda: [Public(id=i, name=str(i)) for i in range(3)],
        response_model=list[Public],
    )
    add("/plain-text", lambda: "héllo", response_class=PlainTextResponse)
    add("/html", lambda: "<b>hi</b>", response_class=HTMLResponse)
    add("/status", lambda: {"created": True}, status_code=201)
    add("/jsonresponse", lambda: JSONResponse({"z": 1, "a": [1, 2]}))
    add("/unicode", lambda: {"name": "Zoë ☃", "n": 1.5, "big": 10**20})
    add("/scalar-none", lambda: None)
    add("/scalar-int", lambda: 42)
    add("/response-obj", lambda: Response(b"\x00\x01raw", media_type="application/octet-stream"))

    import datetime as dt
    import uuid

    add(
        "/types",
        lambda: {
            "dt": dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc),
            "d": dt.date(2024, 1, 2),
            "u": uuid.UUID(int=7),
        },
    )

    for path, route, func in specs:
        app.get("/plain" + path, **route)(func)
        app.get("/cached" + path, **route)(cache(store=store)(func))
    return app


@pytest.mark.parametrize(
    "path",
    [
        "/model-filter",
        "/exclude-none",
        "/exclude-unset",
        "/list-models",
        "/plain-text",
        "/html",
        "/status",
        "/jsonresponse",
        "/unicode",
        "/scalar-none",
        "/scalar-int",
        "/response-obj",
        "/types",
    ],
)
def test_miss_and_hit_bodies_equal_the_undecorated_route(make_store: MakeStore, path: str) -> None:
    store = make_store()
    app = _twin_routes(store)
    with client_for(app, store) as client:
        plain = client.get("/plain" + path)
        miss = client.get("/cached" + path)
        hit = client.get("/cached" + path)
    assert miss.headers["x-fastapi-cache"] == "Miss"
    assert hit.headers["x-fastapi-cache"] == "Hit"
    for response in (miss, hit):
        assert response.status_code == plain.status_code
        assert response.content == plain.content
        assert response.headers["content-type"] == plain.headers["content-type"]
        assert response.headers["content-length"] == plain.headers["content-length"]
    assert b"s3cr3t" not in miss.content + hit.content


def test_response_model_secret_never_stored(make_store: MakeStore, backend_url: str | None) -> None:
    store = make_store()
    app = _twin_routes(store)
    with client_for(app, store) as client:
        client.get("/cached/model-filter")
        assert b"s3cr3t" not in client.get("/cached/model-filter").content
    if backend_url:
        raw = sync_client(backend_url)
        keys = raw.scan_iter(match=f"{store.prefix}:*")
        values = [raw.get(k) or b"" for k in keys if raw.type(k) == b"string"]  # not indexes
        raw.close()
        assert values and not any(b"s3cr3t" in v for v in values)


def test_router_included_endpoint(make_store: MakeStore) -> None:
    store = make_store()
    router = APIRouter(prefix="/api")

    @router.get("/r", response_model=Public)
    @cache(store=store)
    async def r() -> Any:
        return {"id": 1, "name": "x", "password_hash": "s3cr3t"}

    app = FastAPI()
    app.include_router(router)
    with client_for(app, store) as client:
        miss, hit = client.get("/api/r"), client.get("/api/r")
    assert miss.json() == hit.json() == {"id": 1, "name": "x", "nickname": None}
    assert hit.headers["x-fastapi-cache"] == "Hit"


# -- return values, response classes and the Response parameter --------------------------------


class Color(enum.Enum):
    RED = "red"


RETURNS: dict[str, Callable[[], Any]] = {
    "model": lambda: Item(id=1, name="a"),
    "list of models": lambda: [Item(id=1, name="a"), Item(id=2, name="b")],
    "dataclass": lambda: Point(1, 2.5),
    "uuid": lambda: uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "enum": lambda: Color.RED,
    "datetime": lambda: dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    "date": lambda: dt.date(2024, 1, 2),
    "decimal": lambda: Decimal("1.10"),
    "JSONResponse": lambda: JSONResponse({"a": 1}, headers={"x-extra": "kept"}),
    "PlainTextResponse": lambda: PlainTextResponse("hello"),
    "HTMLResponse": lambda: HTMLResponse("<b>hi</b>"),
    "ORJSONResponse": lambda: ORJSONResponse({"o": [1, 2]}),
    "None": lambda: None,
}


@pytest.mark.parametrize("kind", list(RETURNS))
def test_any_return_type_fastapi_serializes_is_cached_as_fastapi_sends_it(
    make_store: MakeStore, kind: str
) -> None:
    store = make_store()
    app = FastAPI()
    make = RETURNS[kind]
    runs: list[int] = []

    @app.get("/plain")
    async def plain() -> Any:
        return make()

    @app.get("/cached")
    @cache(expire=60, store=store)
    async def cached_endpoint() -> Any:
        runs.append(1)
        return make()

    with client_for(app, store) as client, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = client.get("/plain")
        miss, hit = client.get("/cached"), client.get("/cached")
    assert hit.headers["x-fastapi-cache"] == "Hit" and len(runs) == 1
    assert miss.content == hit.content == expected.content
    assert miss.headers["content-type"] == hit.headers["content-type"]
    assert hit.headers["content-type"] == expected.headers["content-type"]
    if kind == "JSONResponse":
        assert hit.headers["x-extra"] == "kept"


@pytest.mark.parametrize(
    "response_class, body, media_type",
    [
        (PlainTextResponse, "plain text, not JSON", "text/plain; charset=utf-8"),
        (HTMLResponse, "<h1>héllo</h1>", "text/html; charset=utf-8"),
    ],
)
def test_plain_text_and_html_are_replayed_byte_for_byte(
    make_store: MakeStore, response_class: Any, body: str, media_type: str
) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/page")
    @cache(expire=60, store=store)
    async def page() -> Any:
        return response_class(body)

    with client_for(app, store) as client:
        miss, hit = client.get("/page"), client.get("/page")
    assert hit.headers["x-fastapi-cache"] == "Hit"
    assert miss.content == hit.content == body.encode()
    assert miss.headers["content-type"] == hit.headers["content-type"] == media_type


def test_orjson_response_is_not_encoded_twice(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/fast")
    @cache(expire=60, store=store)
    async def fast() -> Any:
        return ORJSONResponse({"a": [1, 2, 3], "b": "ü"})

    with client_for(app, store) as client:
        miss, hit = client.get("/fast"), client.get("/fast")
    assert miss.content == hit.content == '{"a":[1,2,3],"b":"ü"}'.encode()
    assert hit.json() == {"a": [1, 2, 3], "b": "ü"}


def test_status_and_headers_set_on_the_response_parameter_are_replayed(
    make_store: MakeStore,
) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/custom")
    @cache(store=store)
    async def custom(response: Response) -> dict[str, int]:
        response.status_code = 203
        response.headers["X-Custom"] = "yes"
        return {"n": 1}

    with client_for(app, store) as client:
        miss, hit = client.get("/custom"), client.get("/custom")
    for response in (miss, hit):
        assert response.status_code == 203
        assert response.headers["x-custom"] == "yes"
    assert hit.headers["x-fastapi-cache"] == "Hit"

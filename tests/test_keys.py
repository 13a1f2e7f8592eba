"""keys.py: the key layout. The seed's `prefix:module.function(name=value,...)`, which
arguments are left out (Request, BackgroundTasks, ignore_arg_types through Optional,
Annotated, subclasses and string annotations) and which refuse to be keyed (a memory
address), `@vary` parts, secrets kept out of keys and logs, and the names route factories'
endpoints get (registry.py). On memory, Redis and Redis Cluster (parametrized through
make_store)."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Optional

import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, Request
from pydantic import SecretStr

from oxcache import Cache, cache
from tests.apps import MakeStore, client_for, stored_keys

# -- what goes into a key, and what never does -------------------------------------------------


class Session:
    """Stands in for a DB session (sqlalchemy.orm.Session): its str() holds a memory address,
    so it is left out of keys through ignore_arg_types."""


def get_session() -> Session:
    return Session()


class SubSession(Session):
    pass


def test_seed_key_format_and_ignore_arg_types(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(prefix="myapi-cache", ignore_arg_types=[Session], per_host=False)
    app = FastAPI()

    @app.get("/get_user")
    @cache(expire=3600, store=store)
    def get_user(id: int, db: Session = Depends(get_session)) -> dict[str, int]:
        return {"id": id}

    caplog.set_level(logging.INFO, logger="oxcache")
    with client_for(app, store) as client:
        client.get("/get_user", params={"id": 1})
        assert client.get("/get_user", params={"id": 1}).headers["x-fastapi-cache"] == "Hit"
    key = f"myapi-cache:{__name__}.get_user(id=1)"
    assert store.key_for(get_user, id=1) == key
    assert f"KEY_ADDED_TO_CACHE: key={key}" in caplog.text
    assert f"KEY_FOUND_IN_CACHE: key={key}" in caplog.text


@pytest.mark.parametrize(
    "annotation",
    [Session, Optional[Session], Annotated[Session, Depends(get_session)], SubSession],
)
def test_ignore_arg_types_through_optional_annotated_and_subclasses(
    make_store: MakeStore, annotation: Any
) -> None:
    store = make_store(ignore_arg_types=[Session])
    app = FastAPI()

    if typing_is_annotated(annotation):

        def endpoint(id: int, db: Session) -> dict[str, int]:
            return {"id": id}
    else:

        def endpoint(id: int, db: Session = Depends(get_session)) -> dict[str, int]:
            return {"id": id}

    endpoint.__annotations__["db"] = annotation  # this module's annotations are strings
    cached = cache(store=store)(endpoint)
    app.get("/u")(cached)
    with client_for(app, store) as client:
        client.get("/u", params={"id": 5})
        assert client.get("/u", params={"id": 5}).headers["x-fastapi-cache"] == "Hit"
    assert store.key_for(cached, id=5, db=None).endswith(".endpoint(id=5)")


def typing_is_annotated(annotation: Any) -> bool:
    return getattr(annotation, "__metadata__", None) is not None


def test_unannotated_ignored_dependency_is_left_out_by_its_value(make_store: MakeStore) -> None:
    store = make_store(ignore_arg_types=[Session])
    app = FastAPI()

    @app.get("/v")
    @cache(store=store)
    def v(id: int, db=Depends(get_session)) -> dict[str, int]:  # type: ignore[no-untyped-def]
        return {"id": id}

    with client_for(app, store) as client:
        client.get("/v", params={"id": 1})
        assert client.get("/v", params={"id": 1}).headers["x-fastapi-cache"] == "Hit"


def test_dependency_with_memory_address_is_served_uncached_with_a_clear_warning(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()  # Session is NOT in ignore_arg_types
    app = FastAPI()
    calls = []

    @app.get("/leaky")
    @cache(store=store)
    def leaky(id: int, db: Session = Depends(get_session)) -> dict[str, int]:
        calls.append(id)
        return {"id": id}

    with client_for(app, store) as client:
        first, second = (
            client.get("/leaky", params={"id": 1}),
            client.get("/leaky", params={"id": 1}),
        )
    assert first.status_code == second.status_code == 200
    assert "x-fastapi-cache" not in second.headers
    assert calls == [1, 1]
    assert "'db'" in caplog.text and "ignore_arg_types" in caplog.text


def test_ignore_arg_types_and_configuration_never_grow_per_request(make_store: MakeStore) -> None:
    """#57, #65: the seed appended to ignore_arg_types on every request."""
    store = make_store(ignore_arg_types=[Session])
    app = FastAPI()

    @app.get("/s")
    @cache(expire=60, store=store)
    async def s(request: Request, db: Session = Depends(get_session)) -> dict[str, int]:
        return {"ok": 1}

    before = store.ignore_arg_types
    with client_for(app, store) as client:
        for _ in range(50):
            assert client.get("/s").status_code == 200
    assert store.ignore_arg_types == before == (Session,)
    assert len(s.__oxcache__.keys._names) == 1  # type: ignore[attr-defined]
    assert store.key_for(s) == f"{store.prefix}:tests.test_keys.s()"


def test_background_tasks_and_request_params_stay_out_of_the_key(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    ran = []

    @app.get("/bg")
    @cache(store=store)
    async def bg(tasks: BackgroundTasks, req: Request, id: int = 1) -> dict[str, int]:
        tasks.add_task(ran.append, id)
        return {"id": id}

    with client_for(app, store) as client:
        client.get("/bg")
        assert client.get("/bg").headers["x-fastapi-cache"] == "Hit"
        renamed = client.get("/bg", headers={"Cache-Control": "no-cache"})
    assert "x-fastapi-cache" not in renamed.headers  # request found by type, not by name
    assert ran == [1, 1]
    assert store.key_for(bg, id=1).endswith(".bg(id=1)")


def test_string_annotations_from_future_import(make_store: MakeStore) -> None:
    import sys
    import textwrap
    import types

    source = textwrap.dedent(
        """
        from __future__ import annotations
        from fastapi import Request, Response
        from oxcache import cache

        def build(store):
            @cache(store=store)
            async def fut(id: int, request: Request, response: Response) -> dict:
                return {"id": id}
            return fut
        """
    )
    module = types.ModuleType("future_endpoints")
    sys.modules["future_endpoints"] = module
    exec(compile(source, "future_endpoints.py", "exec"), module.__dict__)
    store = make_store()
    app = FastAPI()
    fut = module.build(store)
    app.get("/fut")(fut)
    with client_for(app, store) as client:
        client.get("/fut", params={"id": 3})
        assert client.get("/fut", params={"id": 3}).headers["x-fastapi-cache"] == "Hit"
        assert (
            "x-fastapi-cache"
            not in client.get(
                "/fut", params={"id": 3}, headers={"Cache-Control": "no-store"}
            ).headers
        )
    assert store.key_for(fut, id=3).endswith("future_endpoints.fut(id=3)")


class GameDate:
    def __init__(self, game_date: str) -> None:
        self.value = game_date

    def __str__(self) -> str:
        return self.value


def test_custom_dependency_with_str_is_keyed_by_it(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    calls = []

    @app.get("/scoreboard")
    @cache(store=store)
    def scoreboard(game_date: GameDate = Depends()) -> dict[str, str]:
        calls.append(game_date.value)
        return {"date": game_date.value}

    with client_for(app, store) as client:
        for day in ("20190509", "20190510", "20190509", "20190510"):
            assert client.get("/scoreboard", params={"game_date": day}).json() == {"date": day}
    assert calls == ["20190509", "20190510"]


def test_injective_keys_never_serve_another_arguments_data(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/q")
    @cache(store=store)
    async def q(a: str, b: Optional[str] = None) -> dict[str, Any]:
        return {"a": a, "b": b}

    with client_for(app, store) as client:
        one = client.get("/q", params={"a": "1,b=2", "b": "3"}).json()
        two = client.get("/q", params={"a": "1", "b": "2,b=3"}).json()
        none = client.get("/q", params={"a": "x"}).json()
        literal = client.get("/q", params={"a": "x", "b": "None"}).json()
    assert one == {"a": "1,b=2", "b": "3"}
    assert two == {"a": "1", "b": "2,b=3"}
    assert none == {"a": "x", "b": None}
    assert literal == {"a": "x", "b": "None"}


# -- vary headers and secrets ------------------------------------------------------------------


def test_vary_headers_split_entries_and_are_announced(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()
    runs: list[str | None] = []

    @app.get("/greeting")
    @cache(expire=60, vary=["Accept-Language"], store=store)
    async def greeting(request: Request) -> dict[str, str | None]:
        lang = request.headers.get("accept-language")
        runs.append(lang)
        return {"lang": lang}

    with client_for(app, store) as client:
        en = client.get("/greeting", headers={"Accept-Language": "en"})
        en2 = client.get("/greeting", headers={"Accept-Language": "  en "})
        fr = client.get("/greeting", headers={"Accept-Language": "fr"})
        none = client.get("/greeting")
        empty = client.get("/greeting", headers={"Accept-Language": ""})
        cond = client.get(
            "/greeting", headers={"Accept-Language": "fr", "If-None-Match": fr.headers["etag"]}
        )
        cross = client.get(
            "/greeting", headers={"Accept-Language": "en", "If-None-Match": fr.headers["etag"]}
        )
    assert en.json() == {"lang": "en"} and fr.json() == {"lang": "fr"}
    assert en2.headers["x-fastapi-cache"] == "Hit"
    assert none.json() == {"lang": None} and empty.json() == {"lang": ""}
    assert runs == ["en", "fr", None, ""]
    for response in (en, en2, fr, none, cond):
        assert response.headers["vary"] == "Accept-Language"
    assert cond.status_code == 304
    assert cross.status_code == 200 and cross.json() == {"lang": "en"}


def test_secret_vary_headers_are_hashed_in_keys(make_store: MakeStore) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/t")
    @cache(expire=60, vary=["Authorization"], store=store)
    async def t(request: Request) -> dict[str, str]:
        return {"auth": request.headers["authorization"][-3:]}

    with client_for(app, store) as client:
        one = client.get("/t", headers={"Authorization": "Bearer secret-token-111"})
        two = client.get("/t", headers={"Authorization": "Bearer secret-token-222"})
        again = client.get("/t", headers={"Authorization": "Bearer secret-token-111"})
    assert one.json() == {"auth": "111"} and two.json() == {"auth": "222"}
    assert again.headers["x-fastapi-cache"] == "Hit" and again.json() == {"auth": "111"}
    keys = stored_keys(store)
    assert keys and not any("secret" in k for k in keys)


def test_secrets_never_reach_keys_or_logs(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/report")
    @cache(expire=60, store=store)
    async def report(access_token: str, api_key: SecretStr, page: int = 1) -> dict[str, int]:
        return {"page": page, "len": len(access_token) + len(api_key.get_secret_value())}

    with caplog.at_level(logging.INFO, "oxcache"), client_for(app, store) as client:
        params = {"access_token": "tok-SECRET-1", "api_key": "key-SECRET-2", "page": 2}
        client.get("/report", params=params)
        second = client.get("/report", params=params)
        other = client.get("/report", params={**params, "access_token": "tok-SECRET-3"})
    assert second.headers["x-fastapi-cache"] == "Hit" and other.headers["x-fastapi-cache"] == "Miss"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "KEY_ADDED_TO_CACHE" in text and "page=2" in text  # keys stay readable
    assert "SECRET" not in text
    key = store.key_for(
        report, access_token="tok-SECRET-1", api_key=SecretStr("key-SECRET-2"), page=2
    )
    assert "SECRET" not in key and 'access_token=Secret("#' in key


# -- route factories: one function, several endpoints ------------------------------------------


def make_list_endpoint(kind: str, store: Cache, **options: Any) -> Any:
    """A route factory: every endpoint it builds is `list_items` in this module."""

    @cache(expire=60, store=store, **options)
    async def list_items(page: int = 1) -> dict[str, Any]:
        return {"kind": kind, "page": page}

    return list_items


def test_route_factory_endpoints_never_share_a_key(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store()
    app = FastAPI()
    with caplog.at_level(logging.WARNING, "oxcache"):
        users = make_list_endpoint("users", store)
        orders = make_list_endpoint("orders", store)
    app.get("/users")(users)
    app.get("/orders")(orders)
    with client_for(app, store) as client:
        for _ in range(2):  # miss, then hit
            assert client.get("/users").json() == {"kind": "users", "page": 1}
            assert client.get("/orders").json() == {"kind": "orders", "page": 1}
        assert client.get("/orders").headers["x-fastapi-cache"] == "Hit"
    assert store.key_for(users) != store.key_for(orders)
    assert store.key_for(users) == f"{store.prefix}:tests.test_keys.list_items(page=1)"
    assert store.key_for(orders) == f"{store.prefix}:tests.test_keys.list_items#2(page=1)"
    assert any("name=" in r.getMessage() for r in caplog.records)


def test_route_factory_names_can_be_pinned(make_store: MakeStore) -> None:
    store = make_store()
    a = make_list_endpoint("a", store, name="list_a")
    b = make_list_endpoint("b", store, name="list_b")
    assert store.key_for(a, page=2) == f"{store.prefix}:tests.test_keys.list_a(page=2)"
    assert store.key_for(b, page=2) == f"{store.prefix}:tests.test_keys.list_b(page=2)"


def test_values_left_out_by_class_are_decided_once_per_class_and_the_same_as_isinstance() -> None:
    """`KeySpace.leaves_out` remembers, per class, what `isinstance` against the left-out
    types says (Request is a Mapping: an ABC check); the keys are those `isinstance` gives,
    past the memo's limit too."""
    import inspect

    from starlette.requests import Request as StarletteRequest

    from oxcache.keys import ALWAYS_IGNORED, EndpointKeys, KeySpace

    class Session:
        pass

    class SubSession(Session):
        pass

    def endpoint(a: Any, b: Any) -> None: ...

    params = list(inspect.signature(endpoint).parameters.values())
    keys = EndpointKeys("m", "endpoint", params, {}, ())
    space = KeySpace("p", (Session,))
    request = StarletteRequest({"type": "http", "method": "GET", "headers": []})
    values: list[Any] = [1, "x", request, Session(), SubSession(), BackgroundTasks(), None]
    classes = [type(f"C{i}", (), {"__str__": lambda self: "c"}) for i in range(1100)]
    values += [c() for c in classes]
    for value in values:
        expected = isinstance(value, (*ALWAYS_IGNORED, Session))
        assert space.leaves_out(value) is expected
        key = keys.key(space, {"a": value, "b": 2})
        assert ("a=" not in key) is expected
    assert len(space.left_out) <= 1024

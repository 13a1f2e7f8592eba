"""options.py: `@cache`'s arguments, checked once, at decoration. expire as seconds or a
timedelta, and a ConfigError that says what is wrong for anything else: a bad expire, vary,
tags, per_user or early_recompute, or options that contradict each other."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from oxcache import ConfigError, cache
from tests.apps import MakeStore, client_for, current_user_id


@pytest.mark.parametrize("expire", [45, timedelta(seconds=45)])
def test_expire_int_or_timedelta(make_store: MakeStore, expire: Any) -> None:
    store = make_store()
    app = FastAPI()

    @app.get("/e")
    @cache(expire=expire, store=store)
    async def e() -> int:
        return 1

    with client_for(app, store) as client:
        assert client.get("/e").headers["cache-control"] == "max-age=45"


@pytest.mark.parametrize("bad", [-1, timedelta(seconds=-5), "60", 1.5, True])
def test_invalid_expire_is_refused_at_decoration(bad: Any) -> None:
    with pytest.raises(ConfigError):
        cache(expire=bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"vary": "accept-language"}, "list of strings"),
        ({"vary": ["bad header"]}, "not a header name"),
        ({"tags": ["item:{nope}"]}, "not one of its parameters"),
        ({"per_user": current_user_id, "shared": True}, "contradict"),
        ({"per_user": "user"}, "dependency"),
    ],
)
def test_configuration_errors_are_clear(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):

        @cache(expire=60, **kwargs)
        async def endpoint(id: int) -> None: ...


def test_early_recompute_must_be_a_non_negative_number() -> None:
    with pytest.raises(ConfigError):
        cache(expire=60, early_recompute=-1)(lambda: None)

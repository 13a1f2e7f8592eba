"""The migration guides' worked examples, run as their users would: against a real Redis
and on the in-memory store, each in a fresh process (keys name the example's module)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent

# Drives one example app with TestClient and prints every response as JSON. With "redis",
# the app's own startup runs (its lifespan or startup handler); with "memory", REDIS_URL is
# empty (or, for the fastapi-redis-cache example, the startup that points at Redis is not
# run, so the endpoints use the process-wide in-memory store, as in unit tests).
DRIVER = """
import json, sys
sys.path.insert(0, ".")
from fastapi.testclient import TestClient
module, backend, requests = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
app = __import__(module, fromlist=["app"]).app
client = TestClient(app)
entered = backend == "redis" or module.endswith("cache2")
if entered:
    client.__enter__()
out, etags = [], {}
for method, path, params, headers, tag in requests:
    headers = {k: etags.get(v, v) for k, v in headers.items()}
    r = client.request(method, path, params=params, headers=headers)
    etags[tag] = r.headers.get("etag", "")
    out.append({"status": r.status_code, "headers": dict(r.headers), "body": r.text})
print(json.dumps(out))
if entered:  # ends the lifespan; with anyio 3 its portal thread would keep the process alive
    client.__exit__(None, None, None)
"""


def drive(module: str, backend: str, redis_url: str, requests: list[Any]) -> list[Any]:
    env = {**os.environ, "REDIS_URL": redis_url if backend == "redis" else ""}
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, module, backend, json.dumps(requests)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    responses: list[Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return responses


def get(path: str, params: dict[str, Any] | None = None, headers: Any = None, tag: str = "") -> Any:
    return ["GET", path, params or {}, headers or {}, tag]


@pytest.fixture
def clean_redis(redis_client: redis.Redis) -> Any:
    """Deletes the examples' prefixes before and after (they are fixed, as in the guides)."""

    def wipe() -> None:
        for prefix in ("myapi-cache:examples.migrate", "fastapi-cache:"):
            for key in redis_client.scan_iter(match=prefix + "*"):
                redis_client.unlink(key)

    wipe()
    yield redis_client
    wipe()


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_fastapi_redis_cache_example_changes_only_the_import(
    backend: str, redis_url: str, clean_redis: redis.Redis
) -> None:
    miss, hit, not_modified, search, search_hit, plain, dynamic = drive(
        "examples.migrate_from_fastapi_redis_cache",
        backend,
        redis_url,
        [
            get("/get_user", {"id": 1}),
            get("/get_user", {"id": 1}, tag="user"),
            get("/get_user", {"id": 1}, {"If-None-Match": "user"}),
            get("/search", {"name": "bob"}),
            get("/search", {"name": "bob"}),
            get("/immutable_data"),
            get("/dynamic_data"),
        ],
    )
    # Without the startup handler's init(), the fallback store has the default header name.
    mark = "x-myapi-cache" if backend == "redis" else "x-fastapi-cache"
    assert miss["headers"][mark] == "Miss" and hit["headers"][mark] == "Hit"
    # ETag: a quoted XXH3-128 of the body, weak: the same in every process and machine.
    assert re.fullmatch(r'W/"[0-9a-f]{32}"', hit["headers"]["etag"])
    assert miss["headers"]["etag"] == hit["headers"]["etag"]
    assert not_modified["status"] == 304 and not_modified["body"] == ""
    # JSON encoding: the bytes FastAPI sends (compact, ISO dates), identical on miss and hit.
    assert miss["body"] == hit["body"] == '{"id":1,"name":"Ada"}'
    assert search["body"] == search_hit["body"] == '{"name":"bob","limit":10,"day":"2024-01-02"}'
    assert search_hit["headers"][mark] == "Hit"
    assert hit["headers"]["cache-control"] == "max-age=3600" and "age" in hit["headers"]
    assert plain["headers"][mark] in ("Miss", "Hit")
    assert dynamic["headers"]["cache-control"] == "max-age=30"

    module = "myapi-cache:examples.migrate_from_fastapi_redis_cache"
    keys = {k.decode() for k in clean_redis.scan_iter(match=module + "*")}
    if backend == "redis":
        # Keys as fastapi-redis-cache wrote them, except that strings are quoted.
        assert f"{module}.get_user(id=1)" in keys
        assert f'{module}.search(name="bob",limit=10)' in keys
    else:
        assert keys == set()


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_fastapi_cache2_example_maps_namespace_and_key_builders(
    backend: str, redis_url: str, clean_redis: redis.Redis
) -> None:
    alice, bob = {"x-user": "alice"}, {"x-user": "bob"}
    responses = drive(
        "examples.migrate_from_fastapi_cache2",
        backend,
        redis_url,
        [
            get("/items/1"),
            get("/items/1", tag="one"),
            get("/items/1", headers={"If-None-Match": "one"}),
            get("/items"),
            get("/items"),  # the session dependency is new each time: still a hit
            get("/me", headers=alice),
            get("/me", headers=bob),
            get("/me", headers=alice),
            get("/greeting", headers={"accept-language": "fr"}),
            get("/greeting", headers={"accept-language": "en"}),
            get("/greeting", headers={"accept-language": "fr"}),
            ["POST", "/items/1", {"name": "mallet"}, {}, ""],
            get("/items/1"),
            get("/items"),
            get("/items/2"),
        ],
    )
    (
        item,
        item_hit,
        item_304,
        items,
        items_hit,
        me_a,
        me_b,
        me_a_hit,
        fr,
        en,
        fr_hit,
        renamed,
        item_after,
        items_after,
        other_item,
    ) = responses
    cached = [r["headers"].get("x-fastapi-cache") for r in responses]
    assert cached[:3] == ["Miss", "Hit", "Hit"] and item_304["status"] == 304
    assert item["body"] == item_hit["body"] == '{"id":1,"name":"hammer"}'
    assert items_hit["headers"]["x-fastapi-cache"] == "Hit" and items["body"] == items_hit["body"]
    assert (
        me_a["body"] == me_a_hit["body"] == '{"user":"alice"}' and me_b["body"] == '{"user":"bob"}'
    )
    assert cached[5:8] == ["Miss", "Miss", "Hit"]
    assert me_a_hit["headers"]["cache-control"] == "private, max-age=300"
    assert (fr["body"], en["body"], fr_hit["body"]) == (
        '{"greeting":"Bonjour"}',
        '{"greeting":"Hello"}',
        '{"greeting":"Bonjour"}',
    )
    assert (
        cached[8:11] == ["Miss", "Miss", "Hit"] and fr_hit["headers"]["vary"] == "accept-language"
    )
    assert renamed["status"] == 200 and renamed["headers"].get("x-fastapi-cache") is None
    assert item_after["headers"]["x-fastapi-cache"] == "Miss"
    assert item_after["body"] == '{"id":1,"name":"mallet"}'
    assert items_after["headers"]["x-fastapi-cache"] == "Miss" and "mallet" in items_after["body"]
    assert other_item["headers"]["x-fastapi-cache"] == "Miss"

    keys = {k.decode() for k in clean_redis.scan_iter(match="fastapi-cache:*")}
    if backend == "redis":
        item = 'read_item(id=1,@origin="http://testserver")'  # host keying: new in oxcache
        assert "fastapi-cache:examples.migrate_from_fastapi_cache2." + item in keys
        assert "fastapi-cache:@tag:items" in keys
        assert not any("Session" in k for k in keys)
    else:
        assert keys == set()


def test_cached_function_of_the_cache2_example_returns_its_own_type(redis_url: str) -> None:
    script = """
import asyncio, sys
sys.path.insert(0, ".")
from examples.migrate_from_fastapi_cache2 import item_name, store

async def main():
    async with store:
        first, second = await item_name(2), await item_name(2)
        print(repr(first), repr(second), store.stats()["hits"])
        await store.invalidate_tag("items")

asyncio.run(main())
"""
    prefix = "fastapi-cache"
    client = redis.Redis.from_url(redis_url)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["'nail'", "'nail'", "1"]
    assert (
        list(client.scan_iter(match=f"{prefix}:examples.migrate_from_fastapi_cache2.item_name*"))
        == []
    )
    client.close()

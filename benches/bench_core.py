"""The Rust core against its plain-Python twin and the peers' equivalents."""

import enum
import hashlib
from typing import Any

import pytest
import xxhash
from fastapi_cache.key_builder import default_key_builder as fc2_key_builder
from fastapi_redis_cache.key_gen import get_cache_key as frc_get_cache_key

import oxcache._core as core
from tests import reference


class Color(enum.Enum):
    RED = "red"


def endpoint(id: int, name: str, color: Color, tags: list[str]) -> None:
    """A typical endpoint's arguments: an int, a str, an Enum and a list of 5 str."""


ARGS = {"id": 42, "name": "widget", "color": Color.RED, "tags": ["a", "b", "c", "d", "e"]}
PAIRS = list(ARGS.items())

KEY_BUILDERS = {
    "oxcache": lambda: core.cache_key("myapi", "api", "endpoint", PAIRS),
    "reference (pure Python)": lambda: reference.cache_key("myapi", "api", "endpoint", PAIRS),
    "fastapi-cache2 default_key_builder": lambda: fc2_key_builder(
        endpoint, "myapi", request=None, response=None, args=(), kwargs=ARGS
    ),
    "fastapi-redis-cache get_cache_key": lambda: frc_get_cache_key("myapi", [], endpoint, **ARGS),
}


def many(benchmark: Any, func: Any, *args: Any) -> Any:
    """Time `func(*args)` in rounds of 100 calls, the same for every implementation: left to
    itself pytest-benchmark times sub-microsecond calls one per round (its first, cold call
    is slow), so the timer's own ~0.6 us would be counted in every figure."""
    return benchmark.pedantic(func, args, rounds=200, iterations=100, warmup_rounds=2)


@pytest.mark.parametrize("builder", list(KEY_BUILDERS))
def test_cache_key(benchmark: Any, builder: str) -> None:
    benchmark.group = "core cache_key"
    benchmark.extra_info.update({"library": builder, "scenario": "cache_key"})
    assert isinstance(many(benchmark, KEY_BUILDERS[builder]), str)


SIZES = {"100 B": 100, "10 KiB": 10 * 1024, "1 MiB": 1024 * 1024}
BODIES = {label: (bytes(range(256)) * (n // 256 + 1))[:n] for label, n in SIZES.items()}
HASHES = {
    "oxcache etag (XXH3-128)": core.etag,
    "xxhash xxh3_128_hexdigest": xxhash.xxh3_128_hexdigest,
    "hashlib md5": lambda b: hashlib.md5(b).hexdigest(),
    "hashlib sha1": lambda b: hashlib.sha1(b).hexdigest(),
    "hash() (fastapi-redis-cache's ETag)": lambda b: hash(b.decode("latin-1")),
}


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("hasher", list(HASHES))
def test_etag(benchmark: Any, hasher: str, size: str) -> None:
    body = BODIES[size]
    func = HASHES[hasher]
    benchmark.group = f"core etag {size}"
    benchmark.extra_info.update({"library": hasher, "scenario": "etag", "bytes": len(body)})
    benchmark(func, body)


INM = 'W/"0123456789abcdef0123456789abcdef", "ea6c96e826f2497c51a5d11b2e4a434e"'
TAG = '"ea6c96e826f2497c51a5d11b2e4a434e"'
HEADERS = [(b"content-type", b"application/json"), (b"x-custom", b"yes")]
BODY = b'{"id":1,"name":"Ada","email":"ada@example.com"}'
ENTRY = core.encode_entry(200, HEADERS, BODY, 1, 2)
OPS = {
    "if_none_match": (lambda m: m.if_none_match(INM, TAG)),
    "parse_cache_control": (lambda m: m.parse_cache_control("no-cache, max-age=60")),
    "encode_entry": (lambda m: m.encode_entry(200, HEADERS, BODY, 1, 2)),
    "decode_entry": (lambda m: m.decode_entry(ENTRY)),
    "peek_entry": (lambda m: m.peek_entry(ENTRY)),
}


@pytest.mark.parametrize("impl", ["oxcache", "reference (pure Python)"])
@pytest.mark.parametrize("op", list(OPS))
def test_core_op(benchmark: Any, op: str, impl: str) -> None:
    module = core if impl == "oxcache" else reference
    benchmark.group = f"core {op}"
    benchmark.extra_info.update({"library": impl, "scenario": op})
    many(benchmark, OPS[op], module)

"""Compression of stored entries (`Cache(compress_over=...)`): the LZ4 codec against its
plain-Python twin, and compressed entries served as hits and 304s on Redis and in memory."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

import oxcache._core as core
from oxcache import Cache, cache
from oxcache.store import pack_entry, unpack_entry
from tests import reference

MakeStore = Callable[..., Cache]

# Compressible data: runs and repeats, as well as noise.
blobs = st.one_of(
    st.binary(max_size=3000),
    st.lists(st.sampled_from([b"abc", b"hello ", b"\x00" * 20, b'{"id": 1}']), max_size=400).map(
        b"".join
    ),
)


@settings(max_examples=300, deadline=None)
@given(blobs)
def test_lz4_blocks_read_the_same_in_rust_and_in_the_reference(data: bytes) -> None:
    packed = core.lz4_compress(data)
    assert reference.lz4_decompress(packed, len(data)) == data
    assert core.lz4_decompress(packed, len(data)) == data
    literal = reference.lz4_compress(data)
    assert core.lz4_decompress(literal, len(data)) == data
    assert reference.lz4_decompress(literal, len(data)) == data


@settings(max_examples=200, deadline=None)
@given(blobs, st.integers(min_value=0, max_value=64))
def test_a_wrong_size_or_a_cut_block_is_an_error_in_both(data: bytes, cut: int) -> None:
    packed = core.lz4_compress(data)
    for impl in (core, reference):
        with pytest.raises(ValueError):
            impl.lz4_decompress(packed, len(data) + 1)
        if cut and len(packed) > cut:
            with pytest.raises(ValueError):
                impl.lz4_decompress(packed[:-cut], len(data))


def test_pack_keeps_the_head_and_only_shrinks() -> None:
    body = json.dumps([{"id": i, "name": f"item {i}"} for i in range(500)]).encode()
    data = core.encode_entry(200, [(b"content-type", b"application/json")], body, 1, 2)
    packed = pack_entry(data)
    assert packed[:4] == b"OXZ\x01" and packed[4:48] == data[:44]
    assert len(packed) < len(data) // 3
    assert unpack_entry(packed) == data
    a, b = core.peek_entry(packed[4:]), core.peek_entry(data)
    assert (a.etag, a.body_len, a.expires_ms) == (b.etag, b.body_len, b.expires_ms)
    noise = core.encode_entry(200, [], os.urandom(600), 1, 2)
    assert pack_entry(noise) == noise  # incompressible: stored as is
    for bad in (packed[:-1], packed[:30], packed[:48] + b"\xff" * 8):
        with pytest.raises(core.EntryError):
            core.decode_entry(unpack_entry(bad))


def _app(store: Cache, calls: list[int]) -> FastAPI:
    app = FastAPI()

    @app.get("/big")
    @cache(expire=60, store=store)
    async def big() -> Any:
        calls.append(1)
        return [{"id": i, "name": f"item {i}", "ok": True} for i in range(2000)]

    @app.get("/small")
    @cache(expire=60, store=store)
    async def small() -> Any:
        calls.append(2)
        return {"ok": True}

    app.router.lifespan_context = store.lifespan
    return app


def test_compressed_entries_are_hits_and_304s(make_store: MakeStore) -> None:
    store = make_store(compress_over=1024)
    calls: list[int] = []
    with TestClient(_app(store, calls)) as client:
        first = client.get("/big")
        hit = client.get("/big")
        assert hit.headers["x-fastapi-cache"] == "Hit" and hit.content == first.content
        assert hit.headers["etag"] == first.headers["etag"]
        again = client.get("/big", headers={"if-none-match": first.headers["etag"]})
        assert again.status_code == 304
        assert client.get("/small").json() == {"ok": True}
        assert client.get("/small").headers["x-fastapi-cache"] == "Hit"
        assert calls == [1, 2]
        # The big entry is stored compressed, the small one (under the bound) as is.
        stored = client.portal.call(store.backend.get, store.key_for(_endpoint(client, "/big")))
        small = client.portal.call(store.backend.get, store.key_for(_endpoint(client, "/small")))
        assert stored is not None and stored[:4] == b"OXZ\x01"
        assert len(stored) < len(first.content) // 3
        assert small is not None and small[:3] == b"OXC"
    assert store.stats()["errors"] == 0


def test_a_store_without_compression_reads_compressed_entries(make_store: MakeStore) -> None:
    writer = make_store(compress_over=0)
    reader = Cache(backend=writer.backend, prefix=writer.prefix)
    calls: list[int] = []
    with TestClient(_app(writer, calls)) as client:
        body = client.get("/big").content
    with TestClient(_app(reader, calls)) as client:
        hit = client.get("/big")
        assert hit.headers["x-fastapi-cache"] == "Hit" and hit.content == body
    assert calls == [1]


def _endpoint(client: TestClient, path: str) -> Any:
    for route in client.app.routes:  # type: ignore[attr-defined]
        if getattr(route, "path", None) == path:
            return route.endpoint
    raise LookupError(path)


def _per_endpoint_app(store: Cache, calls: list[str]) -> FastAPI:
    app = FastAPI()
    rows = [{"id": i, "name": f"item {i}", "ok": True} for i in range(400)]

    def endpoint(path: str, compress: bool | int | None) -> None:
        @app.get(path)
        @cache(expire=60, store=store, compress=compress, name="e" + path.strip("/"))
        async def handler() -> Any:
            calls.append(path)
            return rows

    endpoint("/default", None)
    endpoint("/on", True)
    endpoint("/off", False)
    endpoint("/over-1m", 1 << 20)
    endpoint("/over-0", 0)
    app.router.lifespan_context = store.lifespan
    return app


@pytest.mark.parametrize("store_setting", [None, 0])
def test_compress_per_endpoint_overrides_the_store(
    make_store: MakeStore, store_setting: int | None
) -> None:
    store = make_store(compress_over=store_setting)
    calls: list[str] = []
    paths = ["/default", "/on", "/off", "/over-1m", "/over-0"]
    with TestClient(_per_endpoint_app(store, calls)) as client:
        first = {path: client.get(path) for path in paths}
        for path in paths:
            hit = client.get(path)
            assert hit.headers["x-fastapi-cache"] == "Hit"
            assert hit.content == first[path].content
            etag = first[path].headers["etag"]
            assert client.get(path, headers={"if-none-match": etag}).status_code == 304
        stored = {
            path: client.portal.call(store.backend.get, store.key_for(_endpoint(client, path)))
            for path in paths
        }
    assert calls == paths  # one run each: everything else was a hit
    compressed = {path for path, value in stored.items() if value and value[:4] == b"OXZ\x01"}
    expected = {"/on", "/over-0"} | ({"/default"} if store_setting == 0 else set())
    assert compressed == expected


@pytest.mark.parametrize("bad", [-1, 1.5, "yes"])
def test_compress_takes_a_bool_or_a_size(bad: Any) -> None:
    from oxcache import ConfigError

    with pytest.raises(ConfigError, match="compress"):
        cache(expire=60, compress=bad)

"""Compression of stored entries (`Cache(compress_over=...)`): the LZ4 codec and the stored
forms (`pack_entry`, `unpack_entry`, `decode_stored`, `peek_stored`) against their plain-Python
twins, and compressed entries served as hits and 304s on Redis and in memory."""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import pytest
import xxhash
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import example, given, settings
from hypothesis import strategies as st

import oxcache._core as core
from oxcache import Cache, cache
from oxcache._core import pack_entry, unpack_entry
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
    assert packed[:4] == b"OXZ\x01" and packed[4:72] == data[:68]
    assert len(packed) < len(data) // 3
    assert unpack_entry(packed) == data
    a, b = core.peek_entry(packed[4:]), core.peek_entry(data)
    assert (a.etag, a.body_len, a.expires_ms) == (b.etag, b.body_len, b.expires_ms)
    noise = core.encode_entry(200, [], os.urandom(600), 1, 2)
    assert pack_entry(noise) == noise  # incompressible: stored as is
    for bad in (packed[:-1], packed[:30], packed[:72] + b"\xff" * 8):
        with pytest.raises(core.EntryError):
            core.decode_entry(unpack_entry(bad))


# -- stored forms: Rust against the reference

headers = st.lists(
    st.one_of(
        st.sampled_from(reference.WELL_KNOWN),
        st.tuples(st.binary(min_size=1, max_size=12), st.binary(max_size=30)),
    ),
    max_size=3,
)


@st.composite
def entries(draw: st.DrawFn) -> bytes:
    return core.encode_entry(
        draw(st.integers(100, 999)),
        draw(headers),
        draw(blobs),
        draw(st.integers(0, 2**64 - 1)),
        draw(st.integers(0, 2**64 - 1)),
    )


def outcome(func: Callable[[bytes], Any], data: bytes) -> Any:
    """What a stored-form function gives, comparable across the Rust core and the reference."""
    try:
        got = func(data)
    except (core.EntryError, reference.EntryError):
        return "EntryError"
    if isinstance(got, bytes):
        return got
    fields = ["status", "etag", "created_ms", "expires_ms", "body_len", "headers", "body"]
    return tuple(
        list(x) if isinstance(x, list) else x for x in (getattr(got, f, None) for f in fields)
    )


@settings(max_examples=300, deadline=None)
@given(entries())
def test_pack_agrees_with_the_reference_and_unpacks_to_the_entry(data: bytes) -> None:
    packed = core.pack_entry(data)
    assert packed == reference.pack_entry(data, core.lz4_compress) == pack_entry(data)
    assert reference.pack_entry(data) == data  # the literals-only writer never shrinks
    if packed is not data:
        assert packed[:4] == b"OXZ\x01" and packed[4:72] == data[:68]
        assert len(packed) < len(data)
    for value in (data, packed):
        assert core.unpack_entry(value) == reference.unpack_entry(value) == data
        for func in ("decode_stored", "peek_stored"):
            rust, ref = getattr(core, func), getattr(reference, func)
            assert outcome(rust, value) == outcome(ref, value) != "EntryError"
        assert outcome(core.peek_stored, value[: core.STORED_HEAD_SIZE]) == outcome(
            core.peek_stored, value
        )
    assert outcome(core.decode_stored, packed) == outcome(core.decode_entry, data)


def test_pack_returns_the_same_object_when_it_keeps_the_entry() -> None:
    small = core.encode_entry(200, [], b"tiny", 1, 2)
    assert core.pack_entry(small) is small
    assert core.unpack_entry(small) is small


# One compressible entry and its compressed form, damaged in every way below.
PLAIN = core.encode_entry(
    200, [(b"content-type", b"application/json")], json.dumps(list(range(300))).encode(), 3, 4
)
PACKED = core.pack_entry(PLAIN)
assert PACKED[:4] == b"OXZ\x01"


FIVE_A = core.encode_entry(200, [], b"AAAAA", 1, 2)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([PACKED, PLAIN])))
    action = draw(st.sampled_from(["flip", "set", "truncate", "extend", "splice", "size"]))
    if action == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= 1 << draw(st.integers(0, 7))
    elif action == "set":
        data[draw(st.integers(0, len(data) - 1))] = draw(st.sampled_from([0, 0x0F, 0xF0, 0xFF]))
    elif action == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif action == "extend":
        data += draw(st.binary(min_size=1, max_size=8))
    elif action == "splice":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=4))
    else:  # the lengths in the head: what the block must decompress to
        data[42:48] = draw(st.binary(min_size=6, max_size=6))
    return bytes(data)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        damaged(),
        st.binary(max_size=80),
        st.binary(max_size=60).map(lambda b: b"OXZ\x01" + PLAIN[:68] + b),
        st.binary(max_size=60).map(lambda b: b"OXZ\x01" + b),
    )
)
@example(b"OXZ\x01" + core.encode_entry(200, [], b"", 1, 2))  # an empty block is not a block
@example(b"OXZ\x01" + FIVE_A[:68] + b"\x10A\x01\x00")  # a block that ends on a match
@example(b"OXZ\x01" + FIVE_A[:68] + b"\x10A\x01\x00\x00")  # the same, ended by literals
@example(PACKED[:72])
@example(b"OXZ")
def test_damaged_values_are_entry_errors_in_both(data: bytes) -> None:
    for func in ("unpack_entry", "decode_stored", "peek_stored"):
        rust, ref = getattr(core, func), getattr(reference, func)
        assert outcome(rust, data) == outcome(ref, data), func
    ref_pack = functools.partial(reference.pack_entry, compress=core.lz4_compress)
    assert outcome(core.pack_entry, data) == outcome(ref_pack, data)


def test_each_kind_of_damage_is_an_entry_error() -> None:
    huge = bytearray(PACKED[:73])
    huge[42:46] = (2**32 - 1).to_bytes(4, "big")  # more than 255 times a 1-byte block
    huge[64:72] = xxhash.xxh3_64_intdigest(bytes(huge[4:64])).to_bytes(8, "big")  # head check
    for impl in (core, reference):
        for bad in (PACKED[:-1], PACKED[:30], PACKED[:72] + b"\xff" * 8, bytes(huge)):
            with pytest.raises(impl.EntryError):
                impl.unpack_entry(bad)
            with pytest.raises(impl.EntryError):
                impl.decode_stored(bad)
        for bad in (PACKED[:71], PLAIN[:67], b"OXZ\x01" + b"OXZ\x01" + PLAIN):
            with pytest.raises(impl.EntryError):
                impl.peek_stored(bad)
        for bad in (PACKED, PLAIN[:-1], PLAIN + b"\x00", b""):
            with pytest.raises(impl.EntryError):
                impl.pack_entry(bad)


def test_the_codec_keeps_value_error_outside_the_entry_path() -> None:
    with pytest.raises(ValueError):
        core.lz4_decompress(b"", 0)
    assert not issubclass(core.EntryError, ValueError)
    with pytest.raises(core.EntryError):
        core.unpack_entry(b"OXZ\x01" + PLAIN[:68])


def test_large_entries_round_trip_with_the_interpreter_released() -> None:
    body = json.dumps([{"id": i, "name": f"item {i}"} for i in range(60_000)]).encode()
    assert len(body) > 1 << 20  # over the LZ4 threshold for releasing the interpreter
    data = core.encode_entry(200, [(b"content-type", b"application/json")], body, 1, 2)
    packed = core.pack_entry(data)
    assert len(packed) < len(data) // 3
    assert core.unpack_entry(packed) == data
    assert core.decode_stored(packed).body == body
    assert packed == pack_entry(data)


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
        stored = client.portal.call(
            store.backend.get, store.key_for(_endpoint(client, "/big"), "http://testserver")
        )
        small = client.portal.call(
            store.backend.get, store.key_for(_endpoint(client, "/small"), "http://testserver")
        )
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
            path: client.portal.call(
                store.backend.get, store.key_for(_endpoint(client, path), "http://testserver")
            )
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

"""Every stored byte of an entry is checked: whatever a decoder meets under one of our keys
(bit flips, truncations, an older envelope, another library's value), the Rust core and the
reference agree that it is either exactly what was encoded or an `EntryError`, and a request
never turns it into a 500 or an altered response: it is a miss, then a hit of fresh data."""

from __future__ import annotations

import json
import pickle
import struct
from types import ModuleType
from typing import Any

import pytest
import redis
import xxhash
from fastapi import FastAPI, Response
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import oxcache._core as core
from oxcache import Cache, cache
from tests import reference

IMPLS = [pytest.param(core, id="rust"), pytest.param(reference, id="reference")]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

headers = st.lists(
    st.one_of(
        st.sampled_from(reference.WELL_KNOWN),
        st.tuples(st.binary(min_size=1, max_size=16), st.binary(max_size=24)),
    ),
    max_size=3,
)
u64 = st.integers(0, 2**64 - 1)


@st.composite
def fields(draw: st.DrawFn) -> tuple[Any, ...]:
    body = draw(st.one_of(st.binary(max_size=200), st.just(json.dumps(list(range(80))).encode())))
    return (draw(st.integers(100, 999)), draw(headers), body, draw(u64), draw(u64), draw(u64))


def v1_entry(status: int, body: bytes) -> bytes:
    """An entry as oxcache wrote it before ENTRY_VERSION 2: a 44-byte head, no check."""
    head = struct.pack(
        ">3sBHQQ16sIH", b"OXC", 1, status, 1, 2, xxhash.xxh3_128_digest(body), len(body), 0
    )
    return head + body


@st.composite
def damage(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` hurt the ways storage and other writers can hurt it."""
    out = bytearray(data)
    action = draw(st.sampled_from(["flips", "set", "truncate", "extend", "splice", "cut"]))
    if action == "flips":  # one to three bit flips anywhere
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= 1 << draw(st.integers(0, 7))
    elif action == "set":
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    elif action == "truncate":
        del out[draw(st.integers(0, len(out) - 1)) :]
    elif action == "extend":
        out += draw(st.binary(min_size=1, max_size=8))
    elif action == "splice":
        i = draw(st.integers(0, len(out)))
        out[i:i] = draw(st.binary(min_size=1, max_size=4))
    else:  # a piece cut out of the middle
        i = draw(st.integers(0, len(out) - 1))
        del out[i : i + draw(st.integers(1, 8))]
    return bytes(out)


FOREIGN = [
    b"",
    b"garbage",
    b'{"val": 1, "_spec_type": "x"}',  # fastapi-redis-cache
    pickle.dumps({"a": 1}),  # fastapi-cache2's pickle coder, cashews
    v1_entry(200, b'{"a":1}'),  # an older oxcache
    v1_entry(200, b""),
    b"OXZ\x01" + v1_entry(200, b"x" * 100),
    core.lease_value(b"\x00" * 16),  # a miss in progress (issue 17)
]


def outcome(impl: ModuleType, func: str, data: bytes) -> Any:
    try:
        got = getattr(impl, func)(data)
    except impl.EntryError:
        return "EntryError"
    names = ["status", "etag", "created_ms", "expires_ms", "generations", "body_len"]
    values = [getattr(got, n, None) for n in names]
    if func == "decode_stored":
        values += [list(got.headers), got.body]
    return tuple(values)


@FUZZ
@given(st.data(), fields())
def test_damaged_entries_are_entry_errors_or_exactly_what_was_encoded(
    data: st.DataObject, args: tuple[Any, ...]
) -> None:
    status, hdrs, body, created, expires, generations = args
    plain = core.encode_entry(status, hdrs, body, created, expires, generations)
    assert plain == reference.encode_entry(status, hdrs, body, created, expires, generations)
    stored = data.draw(st.sampled_from([plain, core.pack_entry(plain)]))
    value = data.draw(st.one_of(damage(stored), st.sampled_from(FOREIGN)))
    intact = (status, core.etag(body), created, expires, generations)
    for func in ("decode_stored", "peek_stored"):
        rust = outcome(core, func, value)
        assert rust == outcome(reference, func, value), func
        if rust != "EntryError":
            # Only the head is read by peek: a damaged body may still peek, never decode.
            assert rust[:5] == intact, func
            if func == "decode_stored":
                assert rust[6:] == (hdrs, body)


@pytest.mark.parametrize("impl", IMPLS)
def test_every_single_bit_flip_of_an_entry_is_an_entry_error(impl: ModuleType) -> None:
    plain = core.encode_entry(
        203, [(b"content-type", b"application/json"), (b"x-a", b"b")], b'{"a":1}', 5, 9, 7
    )
    for i in range(len(plain)):
        for bit in range(8):
            bad = bytearray(plain)
            bad[i] ^= 1 << bit
            with pytest.raises(impl.EntryError):
                impl.decode_stored(bytes(bad))
            if i < core.ENTRY_HEAD_SIZE:
                with pytest.raises(impl.EntryError):
                    impl.peek_stored(bytes(bad))


@pytest.mark.parametrize("impl", IMPLS)
def test_a_bit_flip_of_a_compressed_entry_is_an_error_or_changes_nothing(
    impl: ModuleType,
) -> None:
    """An LZ4 block can hold the same bytes in several ways (a run of one byte copied from
    any offset in it): a flip there decompresses to the very entry that was stored."""
    body = json.dumps([{"id": i % 7} for i in range(40)]).encode()
    plain = core.encode_entry(200, [(b"content-type", b"application/json")], body, 1, 2, 3)
    packed = core.pack_entry(plain)
    assert packed[:4] == b"OXZ\x01"
    same = 0
    for i in range(len(packed)):
        for bit in range(8):
            bad = bytearray(packed)
            bad[i] ^= 1 << bit
            try:
                got = impl.decode_stored(bytes(bad))
            except impl.EntryError:
                continue
            same += 1
            assert (got.status, list(got.headers), got.body) == (
                200,
                [(b"content-type", b"application/json")],
                body,
            )
            assert i >= core.STORED_HEAD_SIZE
    assert same < len(packed)  # almost every flip is caught


@pytest.mark.parametrize("impl", IMPLS)
def test_a_head_written_on_purpose_outside_the_format_is_refused(impl: ModuleType) -> None:
    plain = bytearray(core.encode_entry(200, [], b"x", 1, 2))
    plain[4:6] = (32968).to_bytes(2, "big")
    plain[60:68] = xxhash.xxh3_64_intdigest(bytes(plain[:60])).to_bytes(8, "big")
    with pytest.raises(impl.EntryError):
        impl.peek_stored(bytes(plain))
    with pytest.raises(impl.EntryError):
        impl.decode_stored(bytes(plain))


@pytest.mark.parametrize("impl", IMPLS)
def test_entries_of_the_previous_version_are_entry_errors(impl: ModuleType) -> None:
    for value in FOREIGN:
        with pytest.raises(impl.EntryError):
            impl.decode_stored(value)


def test_the_stamp_round_trips_in_both_implementations() -> None:
    for impl in (core, reference):
        data = impl.encode_entry(200, [], b"x", 1, 2, 2**64 - 1)
        assert impl.decode_entry(data).generations == 2**64 - 1
        assert impl.peek_entry(data).generations == 2**64 - 1
        assert impl.decode_entry(impl.encode_entry(200, [], b"x", 1, 2)).generations == 0
        with pytest.raises(ValueError):
            impl.encode_entry(200, [], b"x", 1, 2, 2**64)


# -- through the app: a damaged value is a miss, never a 500 or an altered response --------


def counting_app(store: Cache) -> tuple[FastAPI, list[int]]:
    app = FastAPI()
    runs: list[int] = []

    @app.get("/item/{id}")
    @cache(expire=60, store=store)
    async def item(id: int, response: Response) -> dict[str, int]:
        runs.append(id)
        response.headers["x-kept"] = "yes"
        return {"id": id, "run": len(runs)}

    return app, runs


def check_answers(client: TestClient, key: str, runs: list[int], value: bytes) -> None:
    """After `value` replaced the entry of /item/1: a hit of the original, or a miss."""
    original = {"id": 1, "run": 1}
    before = len(runs)
    for condition in (None, '"nope"'):
        sent = {} if condition is None else {"if-none-match": condition}
        response = client.get("/item/1", headers=sent)
        assert response.status_code == 200, (value, response.status_code)
        assert response.headers["x-kept"] == "yes"
        body = response.json()
        if response.headers["x-fastapi-cache"] == "Hit":
            assert body == original or body["run"] > before
        else:
            assert body["run"] == len(runs) > before


def fuzz_through(store: Cache, put: Any, get: Any, examples: int) -> None:
    app, runs = counting_app(store)
    key = store.key_for(app.routes[-1].endpoint, "http://testserver", id=1)  # type: ignore[attr-defined]
    with TestClient(app) as client:
        assert client.get("/item/1").json() == {"id": 1, "run": 1}
        original = get(client, key)
        assert original is not None

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(st.one_of(damage(original), st.sampled_from(FOREIGN[1:])))
        @example(original[:4] + b"\x80\xc8" + original[6:])  # status 32968 (flips in byte 4)
        @example(original[:6] + b"\xff" * 8 + original[14:])  # a created_ms past year 9999
        @example(original[:14] + b"\x7f" + original[15:])  # expires_ms
        @example(original[:70] + b"\x01" + original[71:])  # the header block
        def damaged(value: bytes) -> None:
            put(client, key, value)
            try:
                check_answers(client, key, runs, value)
            finally:
                put(client, key, original)
                del runs[1:]

        damaged()


def test_damaged_values_in_memory_never_give_a_500_or_altered_data() -> None:
    store = Cache()
    fuzz_through(
        store,
        lambda client, key, value: client.portal.call(store.backend.set, key, value, 60_000),
        lambda client, key: client.portal.call(store.backend.get, key),
        examples=300,
    )


def test_damaged_values_in_redis_never_give_a_500_or_altered_data(redis_url: str) -> None:
    store = Cache(redis_url, prefix="fuzz-entries", timeout=2.0)
    raw = redis.Redis.from_url(redis_url)
    try:
        fuzz_through(
            store,
            lambda client, key, value: raw.set(key, value, px=60_000),
            lambda client, key: raw.get(key),
            examples=120,
        )
    finally:
        for key in raw.scan_iter(match="fuzz-entries:*"):
            raw.unlink(key)
        raw.close()


@FUZZ
@given(st.lists(st.binary(max_size=24), max_size=5))
def test_generation_stamps_agree_with_the_reference(tokens: list[bytes]) -> None:
    stamp = core.generation_stamp(tokens)
    assert stamp == reference.generation_stamp(tokens)
    assert (stamp == 0) == (not tokens)
    if len(tokens) > 1 and tokens[0] != tokens[1]:
        swapped = [tokens[1], tokens[0], *tokens[2:]]
        assert core.generation_stamp(swapped) != stamp


def test_generation_stamps_refuse_what_is_not_bytes() -> None:
    for impl in (core, reference):
        with pytest.raises(TypeError):
            impl.generation_stamp(["text"])


def test_lease_values_agree_with_the_reference_and_are_never_entries() -> None:
    for token in (b"", b"\x00" * 16, bytes(range(16))):
        value = core.lease_value(token)
        assert value == reference.lease_value(token) == b"OXL\x01" + token
        assert core.is_lease(value) and reference.is_lease(value)
        for impl in (core, reference):
            with pytest.raises(impl.EntryError):
                impl.decode_stored(value)
    plain = core.encode_entry(200, [], b"x", 1, 2)
    assert not core.is_lease(plain) and not core.is_lease(b"OXL")

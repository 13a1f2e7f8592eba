"""The Rust core against its plain-Python twin (tests/reference.py): examples and properties."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import os
import subprocess
import sys
import uuid
from types import ModuleType
from typing import Any, Callable

import pytest
import xxhash
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import oxcache._core as core
from tests import reference

IMPLS = [pytest.param(core, id="rust"), pytest.param(reference, id="reference")]
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Color(enum.Enum):
    RED = 1


class Mode(str, enum.Enum):
    FAST = "fast"


class Level(enum.IntEnum):
    HIGH = 3


class Item(BaseModel):
    id: int
    tags: list[str] = []


class GameDate:
    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class Keyed:
    def __cache_key__(self) -> object:
        return ("k", 1)


class Opaque:
    pass


class BadStr:
    def __str__(self) -> str:
        raise RuntimeError("boom")


# -- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_seed_key_is_unchanged(impl: ModuleType) -> None:
    assert impl.cache_key("myapi-cache", "api", "get_user", [("id", 1)]) == (
        "myapi-cache:api.get_user(id=1)"
    )
    assert impl.cache_key(None, "api", "f", []) == "api.f()"
    assert impl.cache_key("", "api", "f", []) == "api.f()"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "None"),
        (True, "True"),
        ('a"b\\c\n', '"a\\"b\\\\c\\u000a"'),
        (-12, "-12"),
        (10**30, "1" + "0" * 30),
        (1.0, "1.0"),
        (1e20, "1e+20"),
        (float("nan"), "nan"),
        (Color.RED, "Color.RED"),
        (Mode.FAST, "Mode.FAST"),
        (Level.HIGH, "Level.HIGH"),
        (b"\x00\xff", 'b"00ff"'),
        (bytearray(b"\x01"), 'b"01"'),
        (uuid.UUID(int=1), 'UUID("00000000-0000-0000-0000-000000000001")'),
        (
            dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc),
            'datetime("2024-01-02T03:04:05.000006+00:00")',
        ),
        (dt.date(2024, 1, 2), 'date("2024-01-02")'),
        (dt.time(3, 4, 5), 'time("03:04:05")'),
        (decimal.Decimal("1.10"), 'Decimal("1.10")'),
        ([1, "a"], '[1,"a"]'),
        ((1,), "(1,)"),
        ((), "()"),
        ({3, 1, 2}, "{1,2,3}"),
        (frozenset(), "set()"),
        ({"b": 1, "a": [None]}, '{"a":[None],"b":1}'),
        ({}, "{}"),
        (Item(id=1, tags=["x"]), 'Item{"id":1,"tags":["x"]}'),
        (GameDate("2019-05-09"), 'GameDate("2019-05-09")'),
        (Keyed(), 'Keyed(("k",1))'),
    ],
)
def test_canonical_values(impl: ModuleType, value: Any, expected: str) -> None:
    assert impl.cache_key(None, "m", "f", [("x", value)]) == f"m.f(x={expected})"


@pytest.mark.parametrize("impl", IMPLS)
def test_different_arguments_never_share_a_key(impl: ModuleType) -> None:
    calls = [
        [("a", "1,b=2")],
        [("a", 1), ("b", 2)],
        [("a", "1"), ("b", "2,b=3")],
        [("a", "1,b=2"), ("b", "3")],
        [("y", None)],
        [("y", "None")],
        [("x", 1)],
        [("x", 1.0)],
        [("x", "1")],
        [("x", True)],
        [("x", b"1")],
        [("x", [1])],
        [("x", (1,))],
        [("x", {1})],
        [("x", {1: 1})],
    ]
    keys = [impl.cache_key("p", "m", "f", call) for call in calls]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("impl", IMPLS)
def test_long_values_are_hashed_at_the_threshold(impl: ModuleType) -> None:
    for length, hashed in [(254, False), (255, True), (300, True)]:
        key = impl.cache_key(None, "m", "f", [("s", "x" * length)])  # quotes add 2 bytes
        canonical = '"' + "x" * length + '"'
        if hashed:
            assert key == "m.f(s=#" + xxhash.xxh3_128_hexdigest(canonical.encode()) + ")"
        else:
            assert key == f"m.f(s={canonical})"


@pytest.mark.parametrize("impl", IMPLS)
def test_memory_address_is_refused_naming_the_argument(impl: ModuleType) -> None:
    with pytest.raises(impl.KeyBuildError, match="'db'"):
        impl.cache_key("p", "m", "f", [("id", 1), ("db", Opaque())])
    with pytest.raises(impl.KeyBuildError, match="'deep'"):
        impl.cache_key("p", "m", "f", [("deep", [1, [Opaque()]])])


@pytest.mark.parametrize("impl", IMPLS)
def test_raising_str_cycles_and_deep_nesting_raise_key_errors(impl: ModuleType) -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    for value in (BadStr(), cycle, deep):
        with pytest.raises(impl.KeyBuildError):
            impl.cache_key(None, "m", "f", [("x", value)])


def test_key_build_error_message_says_how_to_fix() -> None:
    with pytest.raises(core.KeyBuildError) as info:
        core.cache_key("p", "m", "f", [("db", Opaque())])
    message = str(info.value)
    assert "Opaque" in message and "ignore_arg_types" in message and "__cache_key__" in message


SET_KEY = (
    "import oxcache._core as c; "
    "print(c.cache_key('p', 'm', 'f', [('s', {'a', 'b', 'c', 'd'}), ('e', c.etag(b'x'))]))"
)


def test_set_order_and_etag_are_the_same_across_hash_seeds() -> None:
    outputs = {
        subprocess.run(
            [sys.executable, "-c", SET_KEY],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("0", "1", "2", "3")
    }
    assert len(outputs) == 1


# -- secret digests -----------------------------------------------------------------------------


def decorator_rule(value: Any) -> str:
    """How the decorator hashed a secret argument before `secret_digest` (keys must not move)."""
    return "#" + core.etag(core.cache_key(None, "", "", [("", value)]).encode("utf-8"))[1:-1]


@pytest.mark.parametrize("impl", IMPLS)
def test_secret_digest_is_the_hash_of_the_one_argument_key(impl: ModuleType) -> None:
    for value in ("hunter2", 42, b"\x00key", None, ["a", "b"], "x" * 300, {"k": (1,)}, Color.RED):
        digest = impl.secret_digest(value)
        assert digest == decorator_rule(value)
        assert len(digest) == 33 and digest[0] == "#"
        assert digest == "#" + xxhash.xxh3_128_hexdigest(
            impl.cache_key(None, "", "", [("", value)]).encode()
        )
    assert impl.secret_digest("a") != impl.secret_digest(b"a") != impl.secret_digest(["a"])
    for raw in (b"", b"Bearer abc.def", b"session=1; theme=dark", bytes(range(256))):
        assert impl.secret_digest_bytes(raw) == "#" + core.etag(raw)[1:-1]


@pytest.mark.parametrize("impl", IMPLS)
def test_secret_digest_refuses_what_cache_key_refuses(impl: ModuleType) -> None:
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    for value in (Opaque(), BadStr(), deep):
        with pytest.raises(impl.KeyBuildError):
            impl.secret_digest(value)
        with pytest.raises(impl.KeyBuildError):
            impl.cache_key(None, "", "", [("", value)])


def test_keys_hash_secret_arguments_with_secret_digest() -> None:
    """`keys.secret` is the Rust digest of the value (a pydantic secret by what it holds)."""
    from pydantic import SecretBytes, SecretStr

    from oxcache.keys import secret

    for value in ("pw", 7, ["x"], "y" * 400, b"raw"):
        assert secret(value).digest == core.secret_digest(value)
    assert secret(SecretStr("pw")).digest == core.secret_digest("pw")
    assert secret(SecretBytes(b"pw")).digest == core.secret_digest(b"pw")
    assert secret(None) is None


# -- property: Rust == reference ----------------------------------------------------------------


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.text(alphabet=st.characters(blacklist_categories=())),
    st.binary(max_size=20),
    st.uuids(),
    st.dates(),
    st.datetimes(
        timezones=st.sampled_from([None, dt.timezone.utc, dt.timezone(dt.timedelta(hours=-5))])
    ),
    st.times(),
    st.decimals(allow_nan=False),
    st.sampled_from([Color.RED, Mode.FAST, Level.HIGH]),
)
hashables = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10), st.uuids())
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.frozensets(hashables, max_size=4),
        st.sets(hashables, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), children, max_size=4),
    ),
    max_leaves=12,
)
arg_lists = st.lists(
    st.tuples(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), values), max_size=4
)


def outcome(func: Callable[..., Any], *args: Any) -> Any:
    try:
        return ("ok", func(*args))
    except Exception as exc:
        return ("error", type(exc).__name__)


@PROPS
@given(prefix=st.one_of(st.none(), st.text(max_size=10)), args=arg_lists)
def test_cache_key_agrees_with_reference(prefix: str | None, args: list[tuple[str, Any]]) -> None:
    rust = outcome(core.cache_key, prefix, "mod", "fn", args)
    ref = outcome(reference.cache_key, prefix, "mod", "fn", args)
    assert rust == ref


@PROPS
@given(values)
def test_secret_digest_agrees_with_reference(value: Any) -> None:
    rust = outcome(core.secret_digest, value)
    assert rust == outcome(reference.secret_digest, value)
    assert rust == outcome(decorator_rule, value)


@PROPS
@given(st.binary(max_size=2048))
def test_secret_digest_bytes_agrees_with_reference(raw: bytes) -> None:
    assert core.secret_digest_bytes(raw) == reference.secret_digest_bytes(raw)


@PROPS
@given(st.binary(max_size=2048))
def test_etag_agrees_with_reference(body: bytes) -> None:
    assert core.etag(body) == reference.etag(body)


def test_etag_matches_published_xxh3_128_on_large_bodies() -> None:
    body = bytes(range(256)) * 4096 + b"tail"  # over the interpreter-release threshold
    assert core.etag(body) == '"' + xxhash.xxh3_128_hexdigest(body) + '"'
    assert core.etag(b"") == '"99aa06d3014798d86001c324468d497f"'


tag_text = st.text(alphabet=st.sampled_from('ab"W/ ,\t*\x01\x7fé,'), max_size=30)
members = st.one_of(
    st.just("*"),
    st.from_regex(r'(W/)?"[a-z0-9,]{0,6}"', fullmatch=True),
    st.text(max_size=6),
)
near_valid = st.lists(members, max_size=5).map(lambda ms: ", ".join(ms))
our_tags = st.one_of(st.from_regex(r'(W/)?"[a-z0-9,]{0,6}"', fullmatch=True), st.text(max_size=8))


@PROPS
@given(header=st.one_of(st.text(), tag_text, near_valid), tag=our_tags)
@example(header='"a,b", "c"', tag='"c"')
@example(header="\ud800", tag='"x"')
def test_if_none_match_never_raises_and_agrees(header: str, tag: str) -> None:
    assert core.if_none_match(header, tag) is reference.if_none_match(header, tag)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('"abc"', True),
        ('W/"abc"', True),
        ("*", True),
        (' "x" ,\t"abc" ', True),
        ('garbage, "abc"', True),
        ('"a,b", "abc"', True),
        ("", False),
        ('"abcd"', False),
        ("abc", False),
        ('w/"abc"', False),
        ('"abc"x', False),
        ("*x", False),
    ],
)
def test_if_none_match_rfc_9110_cases(impl: ModuleType, header: str, expected: bool) -> None:
    assert impl.if_none_match(header, 'W/"abc"') is expected
    assert impl.if_none_match(header, '"abc"') is expected


def cc_fields(cc: Any) -> tuple[Any, ...]:
    return (cc.no_cache, cc.no_store, cc.max_age, cc.max_stale, cc.min_fresh, cc.only_if_cached)


directive = st.one_of(
    st.sampled_from(["no-cache", "NO-STORE", "only-if-cached", "max-stale", "private", "x"]),
    st.from_regex(
        r"(max-age|min-fresh|max-stale|MAX-AGE)\s?=\s?\"?[0-9a-z]{0,12}\"?", fullmatch=True
    ),
    st.text(max_size=8),
)
cc_headers = st.lists(directive, max_size=5).map(lambda ds: ",".join(ds))


@PROPS
@given(st.one_of(st.text(), cc_headers))
@example('x="a,no-store", only-if-cached')
@example("max-age=99999999999999999999")
def test_parse_cache_control_never_raises_and_agrees(header: str) -> None:
    assert cc_fields(core.parse_cache_control(header)) == cc_fields(
        reference.parse_cache_control(header)
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_cache_control_semantics(impl: ModuleType) -> None:
    cc = impl.parse_cache_control(
        'No-Cache, MAX-AGE="60", max-age=30, min-fresh=5, min-fresh=9, max-stale'
    )
    assert cc_fields(cc) == (True, False, 30, 2147483648, 9, False)
    assert impl.parse_cache_control("max-age=99999999999999").max_age == 2147483648
    assert cc_fields(impl.parse_cache_control(",,=,max-age=abc,max-age=-1")) == (
        False,
        False,
        None,
        None,
        None,
        False,
    )


# -- entries -----------------------------------------------------------------------------------

header_pairs = st.lists(
    st.one_of(
        st.sampled_from(reference.WELL_KNOWN),
        st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)),
    ),
    max_size=5,
)
times = st.integers(min_value=0, max_value=2**64 - 1)


@PROPS
@given(
    status=st.integers(min_value=100, max_value=999),
    headers=header_pairs,
    body=st.binary(max_size=300),
    created=times,
    expires=times,
)
def test_entry_round_trip_and_agreement(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, created: int, expires: int
) -> None:
    data = core.encode_entry(status, headers, body, created, expires)
    assert data == reference.encode_entry(status, headers, body, created, expires)
    entry = core.decode_entry(data)
    assert (entry.status, entry.headers, entry.body, entry.created_ms, entry.expires_ms) == (
        status,
        headers,
        body,
        created,
        expires,
    )
    assert entry.etag == core.etag(body)
    head = core.peek_entry(data[: core.ENTRY_HEAD_SIZE])
    assert (head.status, head.etag, head.created_ms, head.expires_ms, head.body_len) == (
        status,
        entry.etag,
        created,
        expires,
        len(body),
    )


def entry_outcome(impl: ModuleType, data: bytes) -> Any:
    try:
        e = impl.decode_entry(data)
    except impl.EntryError:
        return "EntryError"
    return (e.status, list(e.headers), e.body, e.etag, e.created_ms, e.expires_ms)


def head_outcome(impl: ModuleType, data: bytes) -> Any:
    try:
        h = impl.peek_entry(data)
    except impl.EntryError:
        return "EntryError"
    return (h.status, h.etag, h.created_ms, h.expires_ms, h.body_len)


VALID = core.encode_entry(
    200, [(b"content-type", b"application/json"), (b"x", b"y")], b'{"a":1}', 5, 9
)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    action = draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if action == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= 1 << draw(st.integers(0, 7))
    elif action == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif action == "extend":
        data += draw(st.binary(min_size=1, max_size=8))
    else:
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@PROPS
@given(
    st.one_of(
        st.binary(max_size=120), damaged(), st.binary(max_size=90).map(lambda b: b"OXC\x02" + b)
    )
)
def test_decode_and_peek_never_crash_and_agree(data: bytes) -> None:
    assert entry_outcome(core, data) == entry_outcome(reference, data)
    assert head_outcome(core, data) == head_outcome(reference, data)


@pytest.mark.parametrize("impl", IMPLS)
def test_each_kind_of_damage_is_an_entry_error(impl: ModuleType) -> None:
    data = VALID
    body_flip = bytearray(data)
    body_flip[-1] ^= 1
    other_version = bytearray(data)
    other_version[3] = 1
    bad_code = bytearray(data)
    bad_code[68:70] = b"\x00\x09"
    for bad in (
        data[:67],
        b"XYZ" + data[3:],
        bytes(other_version),
        data[:-1],
        data + b"\x00",
        bytes(bad_code),
        bytes(body_flip),
        b"",
        b'{"val": 1, "_spec_type": "x"}',  # a fastapi-redis-cache value
    ):
        with pytest.raises(impl.EntryError):
            impl.decode_entry(bad)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "args",
    [
        (99, [], b"", 0, 0),
        (1000, [], b"", 0, 0),
        (200, [(b"", b"v")], b"", 0, 0),
        (200, [(b"n" * 256, b"v")], b"", 0, 0),
        (200, [(b"n", b"v" * 65536)], b"", 0, 0),
        (200, [(b"n", b"v" * 60000), (b"m", b"v" * 6000)], b"", 0, 0),
        (200, [], b"", -1, 0),
        (200, [], b"", 0, 2**64),
    ],
)
def test_encode_refuses_what_the_format_cannot_hold(
    impl: ModuleType, args: tuple[Any, ...]
) -> None:
    with pytest.raises(ValueError):
        impl.encode_entry(*args)

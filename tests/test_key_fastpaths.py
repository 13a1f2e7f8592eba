"""The shortcuts inside `_core.cache_key` (issue 7) never change a key.

The Rust side remembers facts per type (in a memo and a per-thread front of it), reads
`type.__name__` through `type.__getattribute__` directly when the metatype allows, writes ints
by hand and builds keys in a per-thread buffer. Each test here targets one of those and checks
the key against `tests/reference.py` or a literal.
"""

from __future__ import annotations

import enum
import random
import struct
import threading
from typing import Any

import pytest

import oxcache._core as core
from tests import reference


def both(args: list[tuple[str, Any]]) -> str:
    """The key from Rust, asserted equal to the reference's."""
    rust = core.cache_key("p", "m", "f", args)
    assert rust == reference.cache_key("p", "m", "f", args)
    return rust


def test_renaming_a_class_after_its_first_key_renames_it_in_later_keys() -> None:
    class Shade(enum.Enum):
        DARK = 1

    class Plain:
        def __str__(self) -> str:
            return "p"

    assert both([("s", Shade.DARK), ("o", Plain())]) == 'p:m.f(s=Shade.DARK,o=Plain("p"))'
    Shade.__name__ = "Tone"
    Plain.__name__ = "Simple"
    assert both([("s", Shade.DARK), ("o", Plain())]) == 'p:m.f(s=Tone.DARK,o=Simple("p"))'


def test_a_metaclass_getattribute_still_names_the_type() -> None:
    class Liar(type):
        def __getattribute__(cls, name: str) -> Any:
            if name == "__name__":
                return "Told"
            return super().__getattribute__(name)

    class Odd(metaclass=Liar):
        def __str__(self) -> str:
            return "x"

    assert both([("o", Odd())]) == 'p:m.f(o=Told("x"))'


def test_a_metaclass_getattr_does_not_change_the_name() -> None:
    # EnumType has a `__getattr__` too (CPython 3.11): it is only asked for missing names.
    class Fallback(type):
        def __getattr__(cls, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            return "fallback"

    class Quiet(metaclass=Fallback):
        def __str__(self) -> str:
            return "q"

    assert Quiet.anything == "fallback"
    assert both([("q", Quiet())]) == 'p:m.f(q=Quiet("q"))'
    Quiet.__name__ = "Hushed"
    assert both([("q", Quiet())]) == 'p:m.f(q=Hushed("q"))'


def test_a_metaclass_getattr_that_answers_cache_key_makes_rule_6_apply() -> None:
    class Anything(type):
        def __getattr__(cls, name: str) -> Any:
            return "fallback"

    class Loose(metaclass=Anything):
        pass

    # hasattr(type(v), "__cache_key__") is true, as in Python; the instance has none.
    assert hasattr(Loose, "__cache_key__")
    with pytest.raises(core.KeyBuildError):
        core.cache_key("p", "m", "f", [("v", Loose())])


class Big(int):
    pass


@pytest.mark.parametrize(
    "n",
    [0, 1, -1, 9, 10, -10, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, -(10**40)],
)
def test_ints_at_the_64_bit_edges(n: int) -> None:
    assert both([("n", n), ("b", Big(n))]) == f"p:m.f(n={n},b={n})"


def test_enum_member_whose_name_is_not_an_exact_str() -> None:
    class Label(str):
        def __str__(self) -> str:
            return "shown"

    class Flagged(enum.Enum):
        ON = 1

    Flagged.ON._name_ = Label("ON")
    assert both([("f", Flagged.ON)]) == "p:m.f(f=Flagged.shown)"


def test_many_types_interleaved_keep_their_own_rules() -> None:
    # More types than the per-thread front has slots, alternating with and without
    # `__cache_key__`, each keyed several times in an order that reuses slots.
    kinds = []
    for i in range(40):
        if i % 2:
            kind = type(f"K{i}", (), {"__cache_key__": lambda self, i=i: i})
        else:
            kind = type(f"S{i}", (), {"__str__": lambda self, i=i: f"s{i}"})
        kinds.append(kind)
    for _ in range(3):
        for i, kind in enumerate(kinds):
            expected = f"K{i}({i})" if i % 2 else f'S{i}("s{i}")'
            assert both([("v", kind())]) == f"p:m.f(v={expected})"


def test_types_beyond_the_memo_limit_are_still_keyed_right() -> None:
    # The memo stops growing at 4096 types; later types are looked at each time.
    kinds = [
        type(f"T{i}", (), {"__cache_key__": lambda self: 1} if i % 3 == 0 else {"__str__": str})
        for i in range(4200)
    ]
    for i, kind in enumerate(kinds):
        key = core.cache_key(None, "m", "f", [("v", kind())])
        if i % 3 == 0:
            assert key == f"m.f(v=T{i}(1))"
        else:
            assert key.startswith(f"m.f(v=T{i}(")
    late = kinds[-1]
    assert core.cache_key(None, "m", "f", [("v", late())]).startswith("m.f(v=T4199(")


class KeyedList(list[int]):
    def __cache_key__(self) -> str:
        return "kl"


class PlainList(list[int]):
    pass


class PlainBytes(bytes):
    pass


class PlainDict(dict[str, int]):
    pass


def test_builtin_subclasses_take_the_subclass_rules() -> None:
    args = [
        ("a", KeyedList([1])),
        ("b", PlainList([1, 2])),
        ("c", PlainBytes(b"\x01")),
        ("d", PlainDict(z=1, a=2)),
        ("e", frozenset({2, 1})),
    ]
    assert both(args) == 'p:m.f(a=KeyedList("kl"),b=[1,2],c=b"01",d={"a":2,"z":1},e={1,2})'


class Nested:
    """`__cache_key__` builds a key itself: the inner call must not share the outer buffer."""

    def __cache_key__(self) -> str:
        return core.cache_key("inner", "m", "g", [("x", [1, 2, 3])])


def test_a_key_built_inside_cache_key_does_not_disturb_the_outer_key() -> None:
    key = core.cache_key("p", "m", "f", [("a", 1), ("n", Nested()), ("b", "z")])
    assert key == 'p:m.f(a=1,n=Nested("inner:m.g(x=[1,2,3])"),b="z")'


class Opaque:
    pass


def test_a_failed_key_leaves_nothing_behind_for_the_next() -> None:
    with pytest.raises(core.KeyBuildError):
        core.cache_key("p", "m", "f", [("a", "x" * 5000), ("o", Opaque())])
    assert core.cache_key(None, "m", "f", [("a", 1)]) == "m.f(a=1)"


def test_keys_built_on_several_threads_at_once_are_each_right() -> None:
    class Hue(enum.Enum):
        RED = "r"

    errors: list[str] = []
    start = threading.Barrier(4, timeout=30)

    def build(t: int) -> None:
        start.wait()
        for i in range(2000):
            args = [("t", t), ("i", i), ("h", Hue.RED), ("l", [str(i)] * (i % 7))]
            want = reference.cache_key("p", "m", "f", args)
            got = core.cache_key("p", "m", "f", args)
            if got != want:
                errors.append(f"{got} != {want}")
                return

    threads = [threading.Thread(target=build, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []


class Ratio(float):
    def __repr__(self) -> str:
        return "not this"


FLOAT_EDGES = [
    0.0, -0.0, 1.0, -1.5, 0.1, 0.3, 1e-4, 1e-5, 0.00012, 1e15, 1e16, 9999999999999998.0,
    1234567890123456.0, 12345678901234567.0, 1e22, 1e23, 1.5e300, 5e-324, -5e-324,
    2.2250738585072014e-308, 1.7976931348623157e308, float("inf"), float("-inf"), float("nan"),
    # Exact ties between two shortest strings: CPython takes the even one.
    -1113178120592002.2, -233891771783429.62, 111659285584252.12, 2053637337633904.2,
]  # fmt: skip


def random_floats(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    bits = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(n)]
    spread = [10.0 ** rng.randint(-30, 30) * rng.choice([1, 1.5, 3.25]) for _ in range(n)]
    halves = [rng.randint(-(10**16), 10**16) / 4 for _ in range(n)]
    return bits + spread + halves


def test_floats_are_written_as_float_repr() -> None:
    values = FLOAT_EDGES + random_floats(20_000, seed=7)
    for x in values:
        key = core.cache_key(None, "m", "f", [("x", x), ("r", Ratio(x))])
        text = float.__repr__(x)
        assert key == f"m.f(x={text},r={text})", x


class _IterList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        return iter([9])


class _IterTuple(tuple):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        return iter([9, 9])


class _ItemsDict(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        return [("z", 1)]


class _NamedEnum(enum.Enum):
    A = 1

    @property
    def nickname(self) -> str:
        return "custom"

    name = nickname  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (_IterList([1]), "m.f(a=[1])"),
        (_IterTuple((1,)), "m.f(a=(1,))"),
        (_ItemsDict(a=1), 'm.f(a={"a":1})'),
        (_NamedEnum.A, "m.f(a=_NamedEnum.A)"),
    ],
)
def test_subclasses_are_read_as_their_base_stores_them(value: Any, key: str) -> None:
    # docs/formats.md: an overridden __iter__/items, or an Enum's `name` property, is not
    # asked; the Rust core and the reference agree on it.
    assert core.cache_key(None, "m", "f", [("a", value)]) == key
    assert reference.cache_key(None, "m", "f", [("a", value)]) == key

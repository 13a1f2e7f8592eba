"""Time `oxcache._core.cache_key` per argument kind: `python benches/key_timeit.py [--repeat N]`.

No pytest-benchmark: plain `timeit` on the bound call, the best of several repeats (the
least disturbed by other processes), in ns per call. The rows split the fixed per-call cost
(`empty`: no arguments) from the cost of one argument of each kind, so a change to the Rust
core can be checked kind by kind. `bench (4 args)` is the call of
`benches/bench_core.py::test_cache_key`; fastapi-cache2's `default_key_builder` on the same
arguments is timed last for the ratio issue 7 asks about.
"""

from __future__ import annotations

import argparse
import enum
import timeit
from collections.abc import Callable
from typing import Any

import oxcache._core as core


class Color(enum.Enum):
    RED = "red"


class Keyed:
    def __cache_key__(self) -> str:
        return "k"


def endpoint(id: int, name: str, color: Color, tags: list[str]) -> None:
    """The bench's endpoint (see bench_core.py)."""


ARGS: dict[str, Any] = {"id": 42, "name": "widget", "color": Color.RED, "tags": list("abcde")}

CASES: dict[str, list[tuple[str, Any]]] = {
    "empty": [],
    "int": [("id", 42)],
    "big int (2**70)": [("id", 2**70)],
    "str": [("name", "widget")],
    "Enum member": [("color", Color.RED)],
    "list of 5 str": [("tags", list("abcde"))],
    "tuple of 3 int": [("t", (1, 2, 3))],
    "dict of 2": [("d", {"a": 1, "b": "x"})],
    "None": [("x", None)],
    "float": [("x", 1.5)],
    "__cache_key__": [("k", Keyed())],
    "4 ints": [("a", 1), ("b", 2), ("c", 3), ("d", 4)],
    "bench (4 args)": list(ARGS.items()),
}


def best_ns(func: Callable[[], object], number: int, repeat: int) -> float:
    """The fastest of `repeat` runs of `number` calls, in ns per call."""
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=200_000)
    opts = parser.parse_args()
    key = core.cache_key
    base = best_ns(lambda: None, opts.number, opts.repeat)
    print(f"{'lambda: None (loop overhead)':32} {base:8.0f} ns")
    for label, pairs in CASES.items():
        ns = best_ns(lambda p=pairs: key("myapi", "api", "endpoint", p), opts.number, opts.repeat)
        print(f"{label:32} {ns:8.0f} ns")
    ours = best_ns(
        lambda: key("myapi", "api", "endpoint", CASES["bench (4 args)"]), opts.number, opts.repeat
    )
    try:
        from fastapi_cache.key_builder import default_key_builder
    except ImportError:
        print("fastapi-cache2 not installed (benches/requirements.txt): no ratio")
        return
    theirs = best_ns(
        lambda: default_key_builder(
            endpoint, "myapi", request=None, response=None, args=(), kwargs=ARGS
        ),
        opts.number // 4,
        opts.repeat,
    )
    print(f"{'fastapi-cache2 (4 args)':32} {theirs:8.0f} ns")
    print(f"ratio fastapi-cache2 / oxcache: {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()

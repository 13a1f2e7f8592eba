"""Golden vectors: keys, ETags, header parsing and entries that must never change silently.

A failure here means a format change: bump KEY_FORMAT_VERSION or ENTRY_VERSION, note it in
CHANGELOG.md, and regenerate with `python tests/gen_golden.py --force` in the same commit.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import oxcache._core as core
from tests import reference

GOLDEN = Path(__file__).parent / "golden"
IMPLS = [pytest.param(core, id="rust"), pytest.param(reference, id="reference")]


class Suit(enum.Enum):
    HEARTS = "h"


def decode_value(tagged: Any) -> Any:
    """Rebuild a Python value from its JSON description `{"t": type, "v": value}`."""
    t, v = tagged["t"], tagged.get("v")
    simple = {
        "none": lambda: None,
        "bool": lambda: bool(v),
        "int": lambda: int(v),
        "float": lambda: float(v),
        "str": lambda: v,
        "bytes": lambda: bytes.fromhex(v),
        "uuid": lambda: uuid.UUID(v),
        "date": lambda: dt.date.fromisoformat(v),
        "datetime": lambda: dt.datetime.fromisoformat(v),
        "time": lambda: dt.time.fromisoformat(v),
        "decimal": lambda: decimal.Decimal(v),
        "enum": lambda: Suit[v],
        "list": lambda: [decode_value(x) for x in v],
        "tuple": lambda: tuple(decode_value(x) for x in v),
        "set": lambda: {decode_value(x) for x in v},
        "dict": lambda: {decode_value(k): decode_value(x) for k, x in v},
    }
    return simple[t]()


def load(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((GOLDEN / name).read_text())
    return cases


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_keys(impl: ModuleType) -> None:
    for case in load("keys.json"):
        args = [(name, decode_value(value)) for name, value in case["args"]]
        assert impl.cache_key(case["prefix"], case["module"], case["name"], args) == case["key"]


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_etags(impl: ModuleType) -> None:
    for case in load("etags.json"):
        body = bytes.fromhex(case["body_hex"]) * case.get("repeat", 1)
        assert impl.etag(body) == case["etag"]


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_if_none_match(impl: ModuleType) -> None:
    for case in load("if_none_match.json"):
        assert impl.if_none_match(case["header"], case["etag"]) is case["match"], case


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_cache_control(impl: ModuleType) -> None:
    for case in load("cache_control.json"):
        cc = impl.parse_cache_control(case["header"])
        got = [cc.no_cache, cc.no_store, cc.max_age, cc.max_stale, cc.min_fresh, cc.only_if_cached]
        assert got == case["fields"], case


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_response_cache_control(impl: ModuleType) -> None:
    names = ("no_store", "no_cache", "private", "public", "must_revalidate", "proxy_revalidate")
    names += ("max_age", "s_maxage", "stale_while_revalidate", "stale_if_error")
    for case in load("response_cache_control.json"):
        cc = impl.parse_response_cache_control(case["header"])
        assert [getattr(cc, name) for name in names] == case["fields"], case


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_entries(impl: ModuleType) -> None:
    for case in load("entries.json"):
        headers = [(bytes.fromhex(n), bytes.fromhex(v)) for n, v in case["headers"]]
        body = bytes.fromhex(case["body_hex"])
        data = impl.encode_entry(
            case["status"],
            headers,
            body,
            case["created_ms"],
            case["expires_ms"],
            case["generations"],
        )
        assert data.hex() == case["entry_hex"]
        entry = impl.decode_entry(bytes.fromhex(case["entry_hex"]))
        assert (entry.status, list(entry.headers), entry.body, entry.generations) == (
            case["status"],
            headers,
            body,
            case["generations"],
        )


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_secret_digests(impl: ModuleType) -> None:
    for case in load("secrets.json"):
        if "raw_hex" in case:
            assert impl.secret_digest_bytes(bytes.fromhex(case["raw_hex"])) == case["digest"]
        else:
            assert impl.secret_digest(decode_value(case["value"])) == case["digest"]


@pytest.mark.parametrize("impl", IMPLS)
def test_golden_stored_entries(impl: ModuleType) -> None:
    for case in load("stored.json"):
        plain, stored = bytes.fromhex(case["entry_hex"]), bytes.fromhex(case["stored_hex"])
        assert impl.unpack_entry(stored) == plain
        entry, decoded = impl.decode_entry(plain), impl.decode_stored(stored)
        assert (decoded.status, list(decoded.headers), decoded.body, decoded.etag) == (
            entry.status,
            list(entry.headers),
            entry.body,
            entry.etag,
        )
        head = impl.peek_stored(stored[: core.STORED_HEAD_SIZE])
        assert (head.etag, head.body_len, head.expires_ms) == (
            entry.etag,
            len(entry.body),
            entry.expires_ms,
        )


def test_golden_stored_entries_are_what_the_rust_core_writes() -> None:
    """Pins the writer too. If only this fails after an lz4_flex upgrade, the compressed bytes
    changed but every stored value still reads (the test above): not a format change, so
    regenerate stored.json without bumping ENTRY_VERSION."""
    for case in load("stored.json"):
        plain = bytes.fromhex(case["entry_hex"])
        assert core.pack_entry(plain).hex() == case["stored_hex"]
        assert reference.pack_entry(plain, core.lz4_compress).hex() == case["stored_hex"]


def test_format_versions() -> None:
    assert (core.KEY_FORMAT_VERSION, core.ENTRY_VERSION, core.ENTRY_HEAD_SIZE) == (2, 2, 68)
    assert core.KEY_HASH_THRESHOLD == 256
    assert core.STORED_HEAD_SIZE == 72

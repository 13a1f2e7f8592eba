"""Plain-Python twins of every function in `oxcache._core`, written from `docs/formats.md`.

This module is the readable specification: literal code that follows the spec step by step,
never tuned for speed. Hypothesis checks that the Rust core and these twins agree byte for
byte (tests/test_core.py, tests/test_compression.py), and the golden files pin both
(tests/golden/).
The only outside dependency is the `xxhash` package's XXH3-128, a published standard hash.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import struct
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import xxhash

KEY_FORMAT_VERSION = 2
KEY_HASH_THRESHOLD = 256
ENTRY_VERSION = 2
ENTRY_HEAD_SIZE = 68
DELTA_MAX = 2_147_483_648
MAX_DEPTH = 32

try:
    from pydantic import BaseModel
except ImportError:  # pragma: no cover
    BaseModel = None  # type: ignore[assignment,misc]


class KeyBuildError(Exception):
    """Twin of `oxcache._core.KeyBuildError`."""


class EntryError(Exception):
    """Twin of `oxcache._core.EntryError`."""


# -- keys ------------------------------------------------------------------------------------


def quoted(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def has_memory_address(text: str) -> bool:
    start = 0
    while True:
        i = text.find(" at 0x", start)
        if i < 0:
            return False
        digits = 0
        for char in text[i + 6 : i + 10]:
            if char in "0123456789abcdefABCDEF":
                digits += 1
            else:
                break
        if digits == 4:
            return True
        start = i + 1


def canonical(value: Any, arg: str, depth: int = 0) -> str:
    if depth > MAX_DEPTH:
        raise KeyBuildError(f"argument {arg!r} is nested too deep")
    kind = type(value)
    # Rules 1-5: exact builtins.
    if value is None:
        return "None"
    if kind is bool:
        return "True" if value else "False"
    if kind is str:
        return quoted(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        return float.__repr__(value)
    name = kind.__name__
    # Rule 6: the type defines __cache_key__.
    if hasattr(kind, "__cache_key__"):
        try:
            key = value.__cache_key__()
        except Exception as exc:
            raise KeyBuildError(f"argument {arg!r}: __cache_key__() raised") from exc
        return f"{name}({canonical(key, arg, depth + 1)})"
    # Rule 7: enum members.
    if isinstance(value, enum.Enum):
        member = value.__dict__.get("_name_")  # the member's own name, whatever `.name` says
        return f"{name}.{member if member is not None else value.name}"
    # Rule 8: subclasses of the scalar builtins.
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str):
        return quoted(str.__str__(value))
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    # Rule 9: bytes.
    if isinstance(value, (bytes, bytearray)):
        return 'b"' + bytes(value).hex() + '"'
    # Rules 10-14: tagged strings.
    if isinstance(value, uuid.UUID):
        return f"UUID({quoted(str(value))})"
    if isinstance(value, dt.datetime):
        return f"datetime({quoted(value.isoformat())})"
    if isinstance(value, dt.date):
        return f"date({quoted(value.isoformat())})"
    if isinstance(value, dt.time):
        return f"time({quoted(value.isoformat())})"
    if isinstance(value, decimal.Decimal):
        return f"Decimal({quoted(str(value))})"
    # Rules 15-18: containers.
    # A subclass is read as its base type stores it: its own `__iter__`/`items` are not asked.
    if isinstance(value, list):
        return "[" + ",".join(canonical(v, arg, depth + 1) for v in list.__iter__(value)) + "]"
    if isinstance(value, tuple):
        items = [canonical(v, arg, depth + 1) for v in tuple.__iter__(value)]
        return "(" + ",".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, (set, frozenset)):
        items = sorted(canonical(v, arg, depth + 1) for v in value)
        if not items:
            return "set()"
        items.sort(key=lambda s: s.encode("utf-8", "surrogatepass"))
        return "{" + ",".join(items) + "}"
    if isinstance(value, dict):
        return canonical_dict(value, arg, depth)
    # Rule 19: pydantic models.
    if BaseModel is not None and isinstance(value, BaseModel):
        try:
            dumped = value.model_dump(mode="python")
        except Exception as exc:
            raise KeyBuildError(f"argument {arg!r}: model_dump() raised") from exc
        return name + canonical_dict(dumped, arg, depth)
    # Rule 20: str(), refused when it holds a memory address.
    try:
        text = str(value)
    except Exception as exc:
        raise KeyBuildError(f"argument {arg!r}: str() raised") from exc
    if has_memory_address(text):
        raise KeyBuildError(f"argument {arg!r} ({name}) has no stable cache key: {text}")
    return f"{name}({quoted(text)})"


def canonical_dict(value: dict[Any, Any], arg: str, depth: int) -> str:
    pairs = [
        (canonical(k, arg, depth + 1), canonical(v, arg, depth + 1)) for k, v in dict.items(value)
    ]
    pairs.sort(key=lambda kv: (kv[0].encode("utf-8"), kv[1].encode("utf-8")))
    return "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"


def cache_key(
    prefix: Optional[str], module: str, name: str, args: Iterable[tuple[str, Any]]
) -> str:
    parts = []
    for arg, value in args:
        text = canonical(value, arg)
        encoded = text.encode("utf-8")
        if len(encoded) > KEY_HASH_THRESHOLD:
            text = "#" + xxhash.xxh3_128_hexdigest(encoded)
        parts.append(f"{arg}={text}")
    head = f"{prefix}:" if prefix else ""
    return f"{head}{module}.{name}({','.join(parts)})"


def secret_digest(value: Any) -> str:
    """A secret argument in a key: `#` + XXH3-128 hex of its one-argument key text."""
    return "#" + xxhash.xxh3_128_hexdigest(cache_key(None, "", "", [("", value)]).encode("utf-8"))


def secret_digest_bytes(raw: bytes) -> str:
    """A secret header value in a key: `#` + XXH3-128 hex of its raw bytes."""
    return "#" + xxhash.xxh3_128_hexdigest(raw)


# -- ETags and If-None-Match -------------------------------------------------------------------


def etag(body: bytes) -> str:
    return '"' + xxhash.xxh3_128_hexdigest(body) + '"'


def _is_etagc(char: str) -> bool:
    return ord(char) > 0x20 and char != "\x7f" and char != '"'


def if_none_match(header: str, tag: str) -> bool:
    ours = tag[2:] if tag.startswith("W/") else tag
    h = header
    n = len(h)
    i = 0

    def member_end(j: int) -> Optional[int]:
        while j < n and h[j] in " \t":
            j += 1
        return j if j == n or h[j] == "," else None

    while i < n:
        if h[i] in " \t,":
            i += 1
            continue
        start = i
        if h[i] == "*":
            if member_end(i + 1) is not None:
                return True
        else:
            j = i + 2 if h.startswith("W/", i) else i
            if j < n and h[j] == '"':
                k = j + 1
                while k < n and _is_etagc(h[k]):
                    k += 1
                if k < n and h[k] == '"':
                    end = member_end(k + 1)
                    if end is not None:
                        if h[j : k + 1] == ours:
                            return True
                        i = end
                        continue
        comma = h.find(",", start)
        i = n if comma < 0 else comma + 1
    return False


# -- Cache-Control -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestCacheControl:
    no_cache: bool = False
    no_store: bool = False
    max_age: Optional[int] = None
    max_stale: Optional[int] = None
    min_fresh: Optional[int] = None
    only_if_cached: bool = False


TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _split_members(header: str) -> list[str]:
    members, start, in_quote, i = [], 0, False, 0
    while i < len(header):
        char = header[i]
        if in_quote:
            if char == "\\":
                i += 1
            elif char == '"':
                in_quote = False
        elif char == '"':
            in_quote = True
        elif char == ",":
            members.append(header[start:i])
            start = i + 1
        i += 1
    members.append(header[start:])
    return members


def _unquote(value: str) -> Optional[str]:
    out, i = [], 1
    while i < len(value):
        char = value[i]
        if char == "\\":
            if i + 1 >= len(value):
                return None
            out.append(value[i + 1])
            i += 2
        elif char == '"':
            return "".join(out) if i == len(value) - 1 else None
        else:
            out.append(char)
            i += 1
    return None


def _delta(value: Optional[str]) -> Optional[int]:
    if not value or not all(c in "0123456789" for c in value):
        return None
    return min(int(value), DELTA_MAX)


def parse_cache_control(header: str) -> RequestCacheControl:
    found: dict[str, Any] = {}
    for member in _split_members(header):
        member = member.strip(" \t")
        if "=" in member:
            raw_name, raw_value = member.split("=", 1)
            name, value = raw_name.strip(" \t"), raw_value.strip(" \t")
            has_value = True
        else:
            name, value, has_value = member, "", False
        if not name or not all(c in TCHARS for c in name):
            continue
        name = name.lower()
        parsed: Optional[str] = (
            (_unquote(value) if value.startswith('"') else value) if has_value else None
        )
        if name in ("no-cache", "no-store", "only-if-cached"):
            found[name] = True
        elif name in ("max-age", "min-fresh", "max-stale"):
            number = DELTA_MAX if (name == "max-stale" and not has_value) else _delta(parsed)
            if number is None:
                continue
            if name in found:
                pick = max if name == "min-fresh" else min
                number = pick(found[name], number)
            found[name] = number
    return RequestCacheControl(
        no_cache=found.get("no-cache", False),
        no_store=found.get("no-store", False),
        max_age=found.get("max-age"),
        max_stale=found.get("max-stale"),
        min_fresh=found.get("min-fresh"),
        only_if_cached=found.get("only-if-cached", False),
    )


@dataclass(frozen=True)
class ResponseCacheControl:
    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    max_age: Optional[int] = None
    s_maxage: Optional[int] = None
    stale_while_revalidate: Optional[int] = None
    stale_if_error: Optional[int] = None


_RESPONSE_FLAGS = {
    "no-store": "no_store",
    "no-cache": "no_cache",
    "private": "private",
    "public": "public",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
}


def parse_response_cache_control(header: str) -> ResponseCacheControl:
    found: dict[str, Any] = {}
    for member in _split_members(header):
        member = member.strip(" \t")
        if "=" in member:
            raw_name, raw_value = member.split("=", 1)
            name, value = raw_name.strip(" \t"), raw_value.strip(" \t")
            has_value = True
        else:
            name, value, has_value = member, "", False
        if not name or not all(c in TCHARS for c in name):
            continue
        name = name.lower()
        parsed: Optional[str] = (
            (_unquote(value) if value.startswith('"') else value) if has_value else None
        )
        if name in _RESPONSE_FLAGS:
            found[_RESPONSE_FLAGS[name]] = True
            continue
        field = name.replace("-", "_")
        number = _delta(parsed)
        if name in ("max-age", "s-maxage"):
            number = 0 if number is None else number  # invalid: stale (RFC 9111 4.2.1)
        elif name not in ("stale-while-revalidate", "stale-if-error") or number is None:
            continue
        found[field] = number if field not in found else min(found[field], number)
    return ResponseCacheControl(**found)


# -- cache entries -----------------------------------------------------------------------------

WELL_KNOWN = [
    (b"content-type", b"application/json"),
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-type", b"text/html; charset=utf-8"),
]
# magic, version, status, created, expires, digest, body_len, headers_len, generations,
# headers digest, then the head check over all of that.
HEAD = struct.Struct(">3sBHQQ16sIHQQ")
CHECK = struct.Struct(">Q")
assert HEAD.size + CHECK.size == ENTRY_HEAD_SIZE


@dataclass(frozen=True)
class Entry:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: str
    created_ms: int
    expires_ms: int
    generations: int = 0


@dataclass(frozen=True)
class EntryHead:
    status: int
    etag: str
    created_ms: int
    expires_ms: int
    body_len: int
    generations: int = 0


def encode_entry(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    created_ms: int,
    expires_ms: int,
    generations: int | None = None,
) -> bytes:
    if not isinstance(status, int) or not 100 <= status <= 999:
        raise ValueError("status must be an int from 100 to 999")
    generations = 0 if generations is None else generations
    for value in (created_ms, expires_ms, generations):
        if not isinstance(value, int) or not 0 <= value < 2**64:
            raise ValueError("times and the stamp must be ints from 0 to 2**64-1")
    if len(body) >= 2**32:
        raise ValueError("the body must be under 4 GiB")
    block = bytearray()
    for name, value in headers:
        if (name, value) in WELL_KNOWN:
            block += bytes([0, WELL_KNOWN.index((name, value)) + 1])
            continue
        if not 1 <= len(name) <= 255:
            raise ValueError("a header name must be 1 to 255 bytes")
        if len(value) > 65535:
            raise ValueError("a header value must be at most 65535 bytes")
        block += bytes([len(name)]) + name + struct.pack(">H", len(value)) + value
    if len(block) > 65535:
        raise ValueError("the header block must be at most 65535 bytes")
    digest = xxhash.xxh3_128_digest(body)
    head = HEAD.pack(
        b"OXC",
        ENTRY_VERSION,
        status,
        created_ms,
        expires_ms,
        digest,
        len(body),
        len(block),
        generations,
        xxhash.xxh3_64_intdigest(bytes(block)),
    )
    return head + CHECK.pack(xxhash.xxh3_64_intdigest(head)) + bytes(block) + body


def peek_entry(data: bytes) -> EntryHead:
    if len(data) < ENTRY_HEAD_SIZE:
        raise EntryError("too short")
    fields = HEAD.unpack_from(data)
    magic, version, status, created, expires, digest, body_len, _, generations, _ = fields
    if magic != b"OXC":
        raise EntryError("wrong magic")
    if version != ENTRY_VERSION:
        raise EntryError(f"version {version}")
    (check,) = CHECK.unpack_from(data, HEAD.size)
    if xxhash.xxh3_64_intdigest(bytes(data[: HEAD.size])) != check:
        raise EntryError("the head does not match its check")
    if not 100 <= status <= 999:
        raise EntryError(f"status {status}")
    return EntryHead(status, '"' + digest.hex() + '"', created, expires, body_len, generations)


def decode_entry(data: bytes) -> Entry:
    head = peek_entry(data)
    headers_len = struct.unpack_from(">H", data, 42)[0]
    headers_digest = struct.unpack_from(">Q", data, 52)[0]
    block_end = ENTRY_HEAD_SIZE + headers_len
    if block_end + head.body_len != len(data):
        raise EntryError("length mismatch")
    block = data[ENTRY_HEAD_SIZE:block_end]
    if xxhash.xxh3_64_intdigest(bytes(block)) != headers_digest:
        raise EntryError("the header block does not match its digest")
    headers: list[tuple[bytes, bytes]] = []
    i = 0
    while i < len(block):
        n = block[i]
        if n == 0:
            if i + 1 >= len(block):
                raise EntryError("truncated header block")
            code = block[i + 1]
            if not 1 <= code <= len(WELL_KNOWN):
                raise EntryError(f"unknown code {code}")
            headers.append(WELL_KNOWN[code - 1])
            i += 2
            continue
        name = block[i + 1 : i + 1 + n]
        length = block[i + 1 + n : i + 3 + n]
        if len(name) != n or len(length) != 2:
            raise EntryError("truncated header block")
        v = struct.unpack(">H", length)[0]
        value = block[i + 3 + n : i + 3 + n + v]
        if len(value) != v:
            raise EntryError("truncated header block")
        headers.append((bytes(name), bytes(value)))
        i += 3 + n + v
    body = bytes(data[block_end:])
    if etag(body) != head.etag:
        raise EntryError("digest mismatch")
    return Entry(
        head.status, headers, body, head.etag, head.created_ms, head.expires_ms, head.generations
    )


# -- generations -------------------------------------------------------------------------------


def generation_stamp(tokens: Iterable[bytes]) -> int:
    """0 for no tokens; else the XXH3-64 of each token's u32 length and bytes, 0 read as 1."""
    parts = list(tokens)
    if not parts:
        return 0
    if not all(isinstance(t, bytes) for t in parts):
        raise TypeError("generation tokens must be bytes")
    stamp = xxhash.xxh3_64_intdigest(b"".join(struct.pack(">I", len(t)) + t for t in parts))
    return stamp or 1


LEASE_MAGIC = b"OXL\x01"


def lease_value(token: bytes) -> bytes:
    return LEASE_MAGIC + bytes(token)


def is_lease(data: bytes) -> bool:
    return data[:4] == LEASE_MAGIC


# -- LZ4 blocks (store compression) --------------------------------------------------------------


def lz4_compress(data: bytes) -> bytes:
    """A valid LZ4 block of `data`: one sequence of literals only (no matches). Not the bytes
    the Rust encoder writes, but any LZ4 reader must return `data` from it."""
    n = len(data)
    if n < 15:
        return bytes([n << 4]) + data
    rest = n - 15
    return b"\xf0" + b"\xff" * (rest // 255) + bytes([rest % 255]) + data


def lz4_decompress(data: bytes, size: int) -> bytes:
    """Read an LZ4 block (sequences of literals and back-references) that must give
    exactly `size` bytes; ValueError otherwise."""
    out = bytearray()
    i, n = 0, len(data)
    try:
        while True:  # a block is one or more sequences: b"" is none, and so not a block
            token = data[i]
            i += 1
            length = token >> 4
            if length == 15:
                while True:
                    extra = data[i]
                    i += 1
                    length += extra
                    if extra != 255:
                        break
            if i + length > n:
                raise ValueError("literals past the end")
            out += data[i : i + length]
            i += length
            if i == n:
                break  # the last sequence has literals only: a block never ends on a match
            offset = data[i] | data[i + 1] << 8
            i += 2
            if offset == 0 or offset > len(out):
                raise ValueError("bad offset")
            length = token & 15
            if length == 15:
                while True:
                    extra = data[i]
                    i += 1
                    length += extra
                    if extra != 255:
                        break
            start = len(out) - offset
            for k in range(length + 4):
                out.append(out[start + k])
            if len(out) > size:
                raise ValueError("longer than expected")
    except IndexError:
        raise ValueError("truncated LZ4 block") from None
    if len(out) != size:
        raise ValueError(f"LZ4 block gave {len(out)} bytes, expected {size}")
    return bytes(out)


# -- stored values: a plain entry or its compressed form ------------------------------------------

PACKED = b"OXZ\x01"
STORED_HEAD_SIZE = len(PACKED) + ENTRY_HEAD_SIZE


def pack_entry(data: bytes, compress: Callable[[bytes], bytes] = lz4_compress) -> bytes:
    """The compressed form of a plain entry, or `data` itself when it is not smaller.

    `compress` writes the LZ4 block. The format fixes how a block is read, not which of the
    many valid blocks a writer picks, so to compare bytes with the Rust core pass its
    `lz4_compress` (lz4_flex); the default literals-only writer never makes anything smaller.
    """
    head = peek_entry(data)
    headers_len = struct.unpack_from(">H", data, 42)[0]
    if len(data) != ENTRY_HEAD_SIZE + headers_len + head.body_len:
        raise EntryError("length mismatch")
    block = compress(data[ENTRY_HEAD_SIZE:])
    if len(block) + len(PACKED) >= len(data) - ENTRY_HEAD_SIZE:
        return data
    return PACKED + data[:ENTRY_HEAD_SIZE] + block


def unpack_entry(data: bytes) -> bytes:
    """The plain entry a compressed one holds; `data` itself when it is not compressed."""
    if data[: len(PACKED)] != PACKED:
        return data
    head = data[len(PACKED) : STORED_HEAD_SIZE]
    peek_entry(head)  # a short or foreign head
    body_len, headers_len = struct.unpack_from(">IH", head, 38)
    size = headers_len + body_len
    block = data[STORED_HEAD_SIZE:]
    if size > 255 * len(block) + 16:
        raise EntryError("the head claims more than the block can hold")
    try:
        return head + lz4_decompress(block, size)
    except ValueError as exc:
        raise EntryError(f"compressed entry: {exc}") from None


def decode_stored(data: bytes) -> Entry:
    return decode_entry(unpack_entry(data))


def peek_stored(data: bytes) -> EntryHead:
    return peek_entry(data[len(PACKED) :] if data[: len(PACKED)] == PACKED else data)

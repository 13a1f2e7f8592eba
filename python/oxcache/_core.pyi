"""The Rust core of oxcache: canonical cache keys, XXH3 ETags, HTTP header parsing and
cache entries. `cache_key` turns a call into an injective, type-tagged key; `etag` gives the
strong entity-tag of a body; `if_none_match` and `parse_cache_control` read the request
headers of RFC 9110 and RFC 9111, `parse_response_cache_control` a response's own
directives, and none of them raises; `encode_entry`, `decode_entry` and
`peek_entry` read and write the versioned binary envelope a cached response is stored in, and
`pack_entry`, `unpack_entry`, `decode_stored` and `peek_stored` its compressed form, and
`generation_stamp`, `lease_value` and `is_lease` what a miss builds its entry on;
`secret_digest` and `secret_digest_bytes` write secrets into keys as digests. Every stored
byte format is specified in `docs/formats.md` and written and read only here; users import
from `oxcache`.
"""

from collections.abc import Iterable, Sequence
from typing import final

__all__ = [
    "ENTRY_HEAD_SIZE",
    "ENTRY_VERSION",
    "KEY_FORMAT_VERSION",
    "KEY_HASH_THRESHOLD",
    "STORED_HEAD_SIZE",
    "Entry",
    "EntryError",
    "EntryHead",
    "KeyBuildError",
    "OxcacheError",
    "RequestCacheControl",
    "ResponseCacheControl",
    "cache_key",
    "decode_entry",
    "decode_stored",
    "encode_entry",
    "etag",
    "generation_stamp",
    "if_none_match",
    "is_lease",
    "lease_value",
    "lz4_compress",
    "lz4_decompress",
    "pack_entry",
    "parse_cache_control",
    "parse_response_cache_control",
    "peek_entry",
    "peek_stored",
    "secret_digest",
    "secret_digest_bytes",
    "unpack_entry",
]

KEY_FORMAT_VERSION: int
"""Version of the cache key format; bumped whenever any key would change."""
KEY_HASH_THRESHOLD: int
"""Canonical argument values longer than this many UTF-8 bytes are written as `#` + XXH3-128."""
ENTRY_VERSION: int
"""Version of the cache entry envelope (byte 3 of every entry)."""
ENTRY_HEAD_SIZE: int
"""Size of an entry's fixed head: status, times, digest and lengths (44 bytes)."""
STORED_HEAD_SIZE: int
"""How many bytes of a stored value `peek_stored` needs for either form (48: the compressed
form's 4-byte prefix and the head); a conditional request reads `GETRANGE key 0 47`."""

class OxcacheError(Exception):
    """Base class of every error oxcache raises."""

class KeyBuildError(OxcacheError):
    """An argument cannot be turned into a stable cache key."""

class EntryError(OxcacheError):
    """Bytes that are not a valid cache entry of this version."""

def cache_key(
    prefix: str | None, module: str, name: str, args: Iterable[tuple[str, object]]
) -> str:
    """Build the canonical cache key of a call: `[prefix:]module.name(arg=value,...)`.

    `args` holds `(name, value)` pairs in signature order. Values are written in canonical,
    type-tagged form (strings quoted, sets and dicts sorted), so different arguments never
    share a key; a value over `KEY_HASH_THRESHOLD` bytes is replaced by `#` and its XXH3-128.
    Raises `KeyBuildError` for a value whose `str()` holds a memory address, a value nested
    over 32 levels (or a cycle), or a failing `__cache_key__`, `model_dump` or `__str__`.
    """

def secret_digest(value: object) -> str:
    """A secret argument's stand-in in a key: `#` + the 32 lowercase hex digits of the
    XXH3-128 of the key `cache_key(None, "", "", [("", value)])` would build.

    Raises `KeyBuildError` where that `cache_key` would. `None` gets a digest like any other
    value (the decorator keeps a `None` secret as `None` before calling this), and a pydantic
    `SecretStr` is unwrapped by the caller.
    """

def secret_digest_bytes(raw: bytes) -> str:
    """A secret header value's stand-in in a key: `#` + the 32 lowercase hex digits of the
    XXH3-128 of its raw bytes (`"#" + etag(raw)[1:-1]`)."""

def etag(body: bytes) -> str:
    """The strong ETag of `body`: `"` + 32 lowercase hex digits of its XXH3-128 + `"`."""

def if_none_match(header: str, etag: str) -> bool:
    """Whether an `If-None-Match` value matches `etag` (RFC 9110 13.1.2, weak comparison).

    `*` matches; comma-separated entity-tags are compared ignoring `W/`; malformed
    members are skipped. Never raises.
    """

@final
class RequestCacheControl:
    """The request directives of a `Cache-Control` header (RFC 9111 section 5.2.1)."""

    def __new__(
        cls,
        *,
        no_cache: bool = False,
        no_store: bool = False,
        max_age: int | None = None,
        max_stale: int | None = None,
        min_fresh: int | None = None,
        only_if_cached: bool = False,
    ) -> RequestCacheControl: ...
    @property
    def no_cache(self) -> bool:
        """`no-cache`: the client wants no response served from a cache without validation."""
    @property
    def no_store(self) -> bool:
        """`no-store`: nothing of this request or its response may be stored."""
    @property
    def max_age(self) -> int | None:
        """`max-age=N`: the client accepts no response older than N seconds."""
    @property
    def max_stale(self) -> int | None:
        """`max-stale[=N]`: the client accepts a response stale by up to N seconds (2**31: any)."""
    @property
    def min_fresh(self) -> int | None:
        """`min-fresh=N`: the client wants a response fresh for at least N more seconds."""
    @property
    def only_if_cached(self) -> bool:
        """`only-if-cached`: the client wants only a stored response."""
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

def parse_cache_control(header: str) -> RequestCacheControl:
    """Parse the request directives of a `Cache-Control` header (RFC 9111 section 5.2.1).

    Case-insensitive names, quoted values, repeated directives (the most restrictive wins),
    delta-seconds clamped at 2147483648; unknown directives and garbage are ignored. Never
    raises.
    """

@final
class ResponseCacheControl:
    """The response directives of a `Cache-Control` header (RFC 9111 section 5.2.2, RFC 5861)."""

    def __new__(
        cls,
        *,
        no_store: bool = False,
        no_cache: bool = False,
        private: bool = False,
        public: bool = False,
        must_revalidate: bool = False,
        proxy_revalidate: bool = False,
        max_age: int | None = None,
        s_maxage: int | None = None,
        stale_while_revalidate: int | None = None,
        stale_if_error: int | None = None,
    ) -> ResponseCacheControl: ...
    @property
    def no_store(self) -> bool:
        """`no-store`: no cache may store the response."""
    @property
    def no_cache(self) -> bool:
        """`no-cache` (also `no-cache="field"`): not reused without validation."""
    @property
    def private(self) -> bool:
        """`private` (also `private="field"`): a shared cache must not store the response."""
    @property
    def public(self) -> bool:
        """`public`: any cache may store the response."""
    @property
    def must_revalidate(self) -> bool:
        """`must-revalidate`: never served stale."""
    @property
    def proxy_revalidate(self) -> bool:
        """`proxy-revalidate`: never served stale by a shared cache."""
    @property
    def max_age(self) -> int | None:
        """`max-age=N`; an invalid value counts as 0 (stale, RFC 9111 section 4.2.1)."""
    @property
    def s_maxage(self) -> int | None:
        """`s-maxage=N` (shared caches); an invalid value counts as 0."""
    @property
    def stale_while_revalidate(self) -> int | None:
        """`stale-while-revalidate=N` (RFC 5861 section 3); an invalid value is ignored."""
    @property
    def stale_if_error(self) -> int | None:
        """`stale-if-error=N` (RFC 5861 section 4); an invalid value is ignored."""
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

def parse_response_cache_control(header: str) -> ResponseCacheControl:
    """Parse the response directives of a `Cache-Control` header (RFC 9111 section 5.2.2 and
    the RFC 5861 extensions).

    Case-insensitive names, quoted values, qualified `no-cache`/`private` read as the plain
    directives, repeated numbers (the smallest wins), an invalid `max-age` or `s-maxage` read
    as 0; unknown directives and garbage are ignored. Never raises.
    """

@final
class Entry:
    """A decoded cache entry."""

    @property
    def status(self) -> int:
        """The response status code."""
    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The stored response headers, as `(name, value)` bytes pairs."""
    @property
    def body(self) -> bytes:
        """The response body."""
    @property
    def etag(self) -> str:
        """The body's strong ETag, as `etag(body)` gives it."""
    @property
    def created_ms(self) -> int:
        """When the entry was stored, in Unix milliseconds."""
    @property
    def expires_ms(self) -> int:
        """When the entry stops being fresh, in Unix milliseconds."""
    @property
    def generations(self) -> int:
        """The stamp of the generations it was built under (0 for none)."""

@final
class EntryHead:
    """The fixed-size head of a cache entry: what a conditional request needs, without the body."""

    @property
    def status(self) -> int:
        """The response status code."""
    @property
    def etag(self) -> str:
        """The body's strong ETag."""
    @property
    def created_ms(self) -> int:
        """When the entry was stored, in Unix milliseconds."""
    @property
    def expires_ms(self) -> int:
        """When the entry stops being fresh, in Unix milliseconds."""
    @property
    def body_len(self) -> int:
        """The length of the body in bytes."""
    @property
    def generations(self) -> int:
        """The stamp of the generations it was built under (0 for none)."""

def encode_entry(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    created_ms: int,
    expires_ms: int,
    generations: int | None = None,
) -> bytes:
    """Encode a cache entry: status, headers as `(name, value)` bytes pairs, body, the
    creation and expiry times in Unix milliseconds, and the stamp of the generations it is
    built under (0, the default, for none).

    Raises `ValueError` for a status outside 100..=999, a header name of 0 or over 255
    bytes, a header value or the header block over 65535 bytes, a body of 4 GiB or more, or
    times or a stamp outside 0..2**64; `TypeError` for arguments of the wrong type.
    """

def decode_entry(data: bytes) -> Entry:
    """Decode a cache entry; `EntryError` for anything but an intact entry of this version."""

def peek_entry(data: bytes) -> EntryHead:
    """Read only the head of an entry (`data` may be just its first `ENTRY_HEAD_SIZE` bytes).

    Raises `EntryError` for a short head, wrong magic bytes, another version, a head that
    does not match its check, or a status outside 100..=999; the header block and the body
    are not checked.
    """

def pack_entry(data: bytes) -> bytes:
    """The compressed form of an encoded entry (`b"OXZ\\x01"`, its head, the rest as one LZ4
    block), or `data` itself when that is not smaller.

    Raises `EntryError` unless `data` is a plain entry: a valid head of this version and the
    length that head gives.
    """

def unpack_entry(data: bytes) -> bytes:
    """The plain encoded entry a compressed one holds, or `data` itself when it does not start
    with `b"OXZ\\x01"`.

    Raises `EntryError` for a compressed form with a short or foreign head, a head claiming
    more than 255 times the block's size, or a block that does not decompress to exactly the
    size its head gives. The entry itself is not checked: `decode_entry` does that.
    """

def decode_stored(data: bytes) -> Entry:
    """Decode a value read from storage, plain or compressed (`decode_entry(unpack_entry(data))`
    in one step); `EntryError` for anything but an intact entry of this version."""

def peek_stored(data: bytes) -> EntryHead:
    """Read the head of a stored value of either form, from at least its first
    `STORED_HEAD_SIZE` bytes (or all of it).

    Raises `EntryError` for a short or damaged head (as `peek_entry`); nothing after
    the head is checked.
    """

def generation_stamp(tokens: Sequence[bytes]) -> int:
    """The stamp an entry built under the generation `tokens` (in the order of its indexes)
    records: 0 for none, else the XXH3-64 of each token's length (u32, big-endian) and bytes
    (1 where that is 0). `TypeError` for anything but bytes."""

def lease_value(token: bytes) -> bytes:
    """The value a miss puts under an empty key before it runs the endpoint: `b"OXL\\x01"`
    and `token`. Never an entry: a reader takes it for a miss."""

def is_lease(data: bytes) -> bool:
    """Whether a stored value is a lease (a miss in progress) rather than an entry."""

def lz4_compress(data: bytes) -> bytes:
    """`data` as one LZ4 block (no frame, no size prefix), as `Cache(compress_over=...)`
    stores large entries (docs/formats.md)."""

def lz4_decompress(data: bytes, size: int) -> bytes:
    """The `size` bytes the LZ4 block `data` decompresses to; `ValueError` if it is not a
    valid block of exactly that size (the entry functions raise `EntryError` instead)."""

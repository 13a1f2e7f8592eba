"""Canonical cache keys, XXH3 ETags, HTTP header parsing and cache entries for oxcache.

The byte-level core, written in Rust; its formats are specified in `docs/formats.md` and
mirrored by the plain-Python twins in `tests/reference.py`. Users import from `oxcache`.
"""

from collections.abc import Iterable
from typing import final

__all__ = [
    "ENTRY_HEAD_SIZE",
    "ENTRY_VERSION",
    "KEY_FORMAT_VERSION",
    "KEY_HASH_THRESHOLD",
    "Entry",
    "EntryError",
    "EntryHead",
    "KeyBuildError",
    "OxcacheError",
    "RequestCacheControl",
    "cache_key",
    "decode_entry",
    "encode_entry",
    "etag",
    "if_none_match",
    "parse_cache_control",
    "peek_entry",
]

KEY_FORMAT_VERSION: int
KEY_HASH_THRESHOLD: int
ENTRY_VERSION: int
ENTRY_HEAD_SIZE: int

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

    Values are written in canonical, type-tagged form (strings quoted, sets and dicts
    sorted), so different arguments never share a key; a value over `KEY_HASH_THRESHOLD`
    bytes is replaced by `#` and its XXH3-128. Raises `KeyBuildError` for a value whose
    `str()` holds a memory address, a value nested over 32 levels, or a failing
    `__cache_key__`/`__str__`.
    """

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

    @property
    def no_cache(self) -> bool:
        """`no-cache`: do not serve from a cache without validation."""
    @property
    def no_store(self) -> bool:
        """`no-store`: store nothing of this request or its response."""
    @property
    def max_age(self) -> int | None:
        """`max-age=N`: accept no response older than N seconds."""
    @property
    def max_stale(self) -> int | None:
        """`max-stale[=N]`: accept a response stale by up to N seconds (2**31: any)."""
    @property
    def min_fresh(self) -> int | None:
        """`min-fresh=N`: want a response fresh for at least N more seconds."""
    @property
    def only_if_cached(self) -> bool:
        """`only-if-cached`: want only a stored response."""

def parse_cache_control(header: str) -> RequestCacheControl:
    """Parse request `Cache-Control` directives; never raises.

    Case-insensitive names, quoted values, repeated directives (the most restrictive wins),
    delta-seconds clamped at 2147483648; unknown directives and garbage are ignored.
    """

@final
class Entry:
    """A decoded cache entry."""

    @property
    def status(self) -> int:
        """The response status code."""
    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The stored response headers."""
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

@final
class EntryHead:
    """The fixed-size head of an entry: what a conditional request needs, without the body."""

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

def encode_entry(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    created_ms: int,
    expires_ms: int,
) -> bytes:
    """Encode a cache entry; `ValueError` for values the format cannot hold."""

def decode_entry(data: bytes) -> Entry:
    """Decode a cache entry; `EntryError` for anything but an intact entry of this version."""

def peek_entry(data: bytes) -> EntryHead:
    """Read only the head of an entry (`data` may be just its first `ENTRY_HEAD_SIZE` bytes)."""

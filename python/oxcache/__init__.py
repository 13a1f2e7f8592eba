"""oxcache: response caching for FastAPI, with a Rust core.

Correct HTTP semantics (ETag, 304, Cache-Control, Age), keys that never collide, a
non-blocking Redis client or an in-memory store, and drop-in compatibility with
fastapi-redis-cache (change the import).
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from oxcache.backends import (
    Backend,
    ClusterBackend,
    MemoryBackend,
    RedisBackend,
    SentinelBackend,
)
from oxcache.compat import FastApiRedisCache
from oxcache.decorator import (
    cache,
    cache_one_day,
    cache_one_hour,
    cache_one_minute,
    cache_one_month,
    cache_one_week,
    cache_one_year,
)
from oxcache.deferred import always_run
from oxcache.errors import (
    CacheUnavailable,
    ConfigError,
    EntryError,
    KeyBuildError,
    OxcacheError,
)
from oxcache.functions import cached
from oxcache.invalidation import Invalidated
from oxcache.near import NearCache
from oxcache.observe import CacheEvent, Observer
from oxcache.route import CachedRoute
from oxcache.store import Cache, default_store

cache.function = cached  # type: ignore[attr-defined]

try:
    __version__: str = _version("fastapi-oxcache")
    """The installed version; set in one place, `Cargo.toml` (maturin copies it)."""
except _PackageNotFoundError:  # pragma: no cover - imported from a source tree, not installed
    __version__ = "0+unknown"

__all__ = [
    "Backend",
    "Cache",
    "CacheEvent",
    "CacheUnavailable",
    "CachedRoute",
    "ClusterBackend",
    "ConfigError",
    "EntryError",
    "FastApiRedisCache",
    "Invalidated",
    "KeyBuildError",
    "MemoryBackend",
    "NearCache",
    "Observer",
    "OxcacheError",
    "RedisBackend",
    "SentinelBackend",
    "__version__",
    "always_run",
    "cache",
    "cache_one_day",
    "cache_one_hour",
    "cache_one_minute",
    "cache_one_month",
    "cache_one_week",
    "cache_one_year",
    "cached",
    "default_store",
]
